"""Conv geometry, operation counts and measured synaptic operations.

Counts are per image. ``macs`` of a conv is per image *per timestep*: ``Cin * Cout * k * k * Hout * Wout / groups``.
Geometry comes from a shape-only forward on the ``meta`` device (no memory, no arithmetic), so it is cheap even for
the l scale at 640x640.
"""

from __future__ import annotations

import copy
import re
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..forms.deploy import deploy_torch
from ..forms.fuse import fuse
from ..models.yolo import SpikeYOLO
from ..nn.units import DeployUnit, FusedUnit, SpikeDrivenUnit, SpikeUnit

UNIT_TYPES = (SpikeUnit, FusedUnit, SpikeDrivenUnit, DeployUnit)
GEOMETRIES = ("fused", "train", "deploy")
STAGES = ("backbone", "neck", "head")


def layer_index(name: str) -> int | None:
    """The model layer a module path belongs to (``layers.12.sep.pw`` -> 12), or None."""
    m = re.match(r"(?:.*\.)?layers\.(\d+)(?:\.|$)", name)
    return int(m.group(1)) if m else None


def stage_of(name: str, roles: dict[str, int] | None) -> str:
    """``backbone`` (layers before ``roles["neck_start"]``), ``neck`` (up to the head) or ``head`` (the Detect
    layer) of a module path, by the model's own layer table (:func:`spikeyolo.models.yolo.layer_roles`; the
    shipped one: backbone 0-9, neck 10-25, head 26); ``other`` outside a layer table or without ``roles``."""
    i = layer_index(name)
    if i is None or roles is None:
        return "other"
    return "backbone" if i < roles["neck_start"] else "neck" if i < roles["head"] else "head"


@dataclass(frozen=True)
class ConvGeometry:
    """One conv at a given input size. ``unit`` is the path of the unit (the neuron -> conv pair) it belongs to;
    ``name`` the conv's own path in the form it was measured in. ``spiking``: the conv is fed by an I-LIF.
    ``stage``: backbone, neck or head in the model's own layer table (:func:`stage_of`)."""

    name: str
    unit: str
    cin: int
    cout: int
    k: int
    stride: int
    groups: int
    hin: int
    win: int
    hout: int
    wout: int
    spiking: bool
    stage: str

    @property
    def macs(self) -> int:
        """Multiply-accumulates per image per timestep, zero padding included (the dense count)."""
        return self.cin * self.cout * self.k * self.k * self.hout * self.wout // self.groups

    @property
    def layer(self) -> int | None:
        return layer_index(self.unit)

    def to_dict(self) -> dict:
        return {**asdict(self), "macs": self.macs, "layer": self.layer}


def iter_units(model: nn.Module):
    """``(path, unit)`` for every spiking conv unit (and the stem) in execution-independent registration order."""
    for name, m in model.named_modules():
        if isinstance(m, UNIT_TYPES):
            yield name, m


def _shape_model(model: nn.Module, geometry: str) -> nn.Module:
    """A meta-device copy of ``model`` in the requested geometry (fused: every unit one conv). A SpikeYOLO in any
    form is rebuilt from its config, so the train geometry is available for fused models too."""
    if isinstance(model, SpikeYOLO):
        with torch.device("meta"):  # rebuild the train form from plain config: no copy of real weights
            meta = SpikeYOLO(model.config)
    else:
        meta = copy.deepcopy(model).to("meta")
    if geometry in ("train", "deploy") and not _is_train_form(meta):
        raise ValueError(f"geometry={geometry!r} needs a train-form model (fused convs cannot be split again)")
    if geometry == "fused" and _is_train_form(meta):
        meta = fuse(meta)
    if geometry == "deploy":
        meta = deploy_torch(meta)
    return meta.train()  # train mode: the head returns raw maps, nothing to decode


def _is_train_form(model: nn.Module) -> bool:
    return any(isinstance(m, SpikeUnit) for m in model.modules())


def unit_geometry(model: nn.Module, imgsz: int | tuple[int, int] = 640, geometry: str = "fused",
                  in_channels: int | None = None) -> list[ConvGeometry]:
    """Every conv inside a unit, in execution order, with its shape for one ``imgsz`` input.

    ``geometry="fused"`` (default, the paper's energy model): one conv per unit, as after
    :func:`spikeyolo.fuse` (BN folded, RepConv / SepRepConv re-parameterized). ``geometry="train"``: every conv of
    the train-form chains (more, smaller convs; only the first conv of a chain actually receives the spikes).
    ``geometry="deploy"``: the convs of :func:`spikeyolo.deploy` (BN folded, each unit's chain kept where it needs
    fewer MACs than the fused conv).
    """
    if geometry not in GEOMETRIES:
        raise ValueError(f"geometry must be one of {GEOMETRIES}, got {geometry!r}")
    h, w = (imgsz, imgsz) if isinstance(imgsz, int) else tuple(imgsz)
    meta = _shape_model(model, geometry)
    roles = meta.roles if isinstance(meta, SpikeYOLO) else None
    in_channels = in_channels or (meta.in_channels if isinstance(meta, SpikeYOLO) else 3)
    owner: dict[nn.Module, tuple[str, str, bool]] = {}
    for uname, unit in iter_units(meta):
        for cname, conv in unit.named_modules():
            if isinstance(conv, nn.Conv2d):  # fused: the unit's one conv is named by its unit
                owner[conv] = (uname if geometry == "fused" else f"{uname}.{cname}", uname, unit.lif is not None)
    found: list[ConvGeometry] = []

    def record(conv, inputs, out):
        name, uname, spiking = owner[conv]
        x = inputs[0]
        found.append(ConvGeometry(name=name, unit=uname, cin=conv.in_channels, cout=conv.out_channels,
                                  k=conv.kernel_size[0], stride=conv.stride[0], groups=conv.groups, hin=x.shape[-2],
                                  win=x.shape[-1], hout=out.shape[-2], wout=out.shape[-1], spiking=spiking,
                                  stage=stage_of(uname, roles)))

    handles = [conv.register_forward_hook(record) for conv in owner]
    try:
        with torch.no_grad():
            meta(torch.empty(1, in_channels, h, w, device="meta"))
    finally:
        for handle in handles:
            handle.remove()
    return found


# -- measured synaptic operations -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class ConvSpec:
    """What the synaptic-operation count needs of a conv (zero padding assumed)."""

    cout: int
    k: tuple[int, int]
    stride: tuple[int, int]
    padding: tuple[int, int]
    dilation: tuple[int, int]
    groups: int

    @classmethod
    def of(cls, conv: nn.Conv2d) -> ConvSpec:
        if conv.padding_mode != "zeros" or isinstance(conv.padding, str):
            raise ValueError(f"synaptic-operation count supports explicit zero padding only, got {conv}")
        return cls(conv.out_channels, tuple(conv.kernel_size), tuple(conv.stride), tuple(conv.padding),
                   tuple(conv.dilation), conv.groups)


def fused_conv_spec(unit: nn.Module) -> ConvSpec:
    """The conv a unit computes once fused (for a train-form unit, fused on a meta copy: no arithmetic)."""
    if isinstance(unit, (FusedUnit, SpikeDrivenUnit)):
        return ConvSpec.of(unit.conv)
    if isinstance(unit, SpikeUnit):
        return ConvSpec.of(copy.deepcopy(unit).to("meta").fuse().conv)
    raise TypeError(f"not a unit: {type(unit).__name__}")


def synops_tensor(x: torch.Tensor, spec: ConvSpec) -> torch.Tensor:
    """Synaptic operations a conv performs on a non-negative input ``x [N, Cin, H, W]``, zero padding excluded,
    as a 0-dim float64 tensor (on ``x``'s device where float64 exists there, so no device sync is needed).

    Every input event of value v at position p adds v to ``Cout / groups`` output channels at every output position
    whose receptive field contains p. Summed over events this is
    ``(Cout / groups) * sum_over_output_positions(sum of the inputs of its group inside its receptive field)``,
    computed here as a box-sum (a ones kernel) of the per-group channel sum. For binary ``x`` it counts the
    accumulates actually performed; for integer spike counts ``S`` it equals the count over S's D binary slots.
    """
    N, C, H, W = x.shape
    g = spec.groups
    x = x.detach()
    if x.device.type == "mps":  # no float64 there
        x = x.cpu()
    xs = x.reshape(N, g, C // g, H, W).sum(2, dtype=torch.float32)  # exact: small integers, far below 2**24
    if spec.dilation == (1, 1) and all(p <= k // 2 for p, k in zip(spec.padding, spec.k)):
        box = F.avg_pool2d(xs, spec.k, spec.stride, spec.padding, count_include_pad=True, divisor_override=1)
    else:  # general case in float64, exact
        ones = torch.ones(g, 1, *spec.k, dtype=torch.float64, device=xs.device)
        box = F.conv2d(xs.double(), ones, None, spec.stride, spec.padding, spec.dilation, groups=g)
    return box.sum(dtype=torch.float64) * (spec.cout // g)


def synops(x: torch.Tensor, spec: ConvSpec) -> float:
    """:func:`synops_tensor` as a Python float."""
    return float(synops_tensor(x, spec))
