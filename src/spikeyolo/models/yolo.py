"""SpikeYOLO: the layer graph built from a YAML config (scales n/s/m/l) and the handling of the time axis."""

from __future__ import annotations

import copy
import math
from importlib import resources
from pathlib import Path

import torch
import torch.nn.functional as F
import yaml
from torch import nn

from ..nn.blocks import SPPF, Concat, Downsample, SNNBlock1, SNNBlock2, SpikeConv, Stem, Upsample
from ..nn.head import Detect
from ..nn.neuron import NeuronConfig
from ..nn.units import form_of

DEFAULT_CONFIG = "spikeyolo.yaml"
SCALES = ("n", "s", "m", "l")


class Input(nn.Module):
    """Layer 0: a static image batch ``[B, C, H, W]`` becomes ``[T, B, C, H, W]`` (repeated, without a copy);
    event frames ``[B, T, C, H, W]`` are moved to time-major."""

    def __init__(self, T: int, in_channels: int):
        super().__init__()
        self.T, self.in_channels = int(T), int(in_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() == 4:
            x = x.unsqueeze(0).expand(self.T, *x.shape)
        elif x.dim() == 5:
            x = x.transpose(0, 1)
        else:
            raise ValueError(f"input must be [B, C, H, W] or [B, T, C, H, W], got shape {tuple(x.shape)}")
        if x.shape[2] != self.in_channels:
            raise ValueError(f"the model expects {self.in_channels} input channels, got {x.shape[2]}")
        H, W = x.shape[-2:]
        if H % 32 or W % 32:
            raise ValueError(f"input height and width must be multiples of 32 (the largest stride), got {H}x{W}")
        return x


class StaticStem(Stem):
    """The stem, computed once when all T input steps are the same image (an expanded view).

    In training, BatchNorm's running variance gets the unbiased factor ``N / (N - 1)`` of the ``N = T*B*H*W``
    values the reference normalizes (it convolves the T copies), not that of the ``B*H*W`` computed here.
    """

    def forward(self, x):
        if x.shape[0] > 1 and x.stride(0) == 0:  # the T copies are one tensor: no need to convolve T times
            bn = self.bn
            if self.training and bn.track_running_stats and bn.momentum is not None:
                y = self._bn_over_copies(self.conv(x[0]), x.shape[0])[None]
            else:
                y = super().forward(x[:1])
            return y.expand(x.shape[0], *y.shape[1:])
        return super().forward(x)

    def _bn_over_copies(self, z: torch.Tensor, copies: int) -> torch.Tensor:
        """Training-mode BN of ``z [B, C, H, W]`` with running statistics updated as if over ``copies`` of it."""
        bn = self.bn
        y = F.batch_norm(z, None, None, bn.weight, bn.bias, True, 0.0, bn.eps)  # batch statistics only
        with torch.no_grad():
            var, mean = torch.var_mean(z, dim=(0, 2, 3), correction=0)
            n = z.numel() // z.shape[1] * copies
            m = bn.momentum
            bn.running_mean.mul_(1 - m).add_(mean, alpha=m)
            bn.running_var.mul_(1 - m).add_(var * (n / (n - 1)), alpha=m)
            bn.num_batches_tracked.add_(1)
        return y


BLOCKS = {"SNNBlock1": SNNBlock1, "SNNBlock2": SNNBlock2}


def load_spec(model: str | Path | dict = DEFAULT_CONFIG) -> dict:
    """The architecture description: a dict, a YAML path, or the name of a YAML shipped in ``configs/``."""
    if isinstance(model, dict):
        return copy.deepcopy(model)
    path = Path(model)
    if not path.exists():
        shipped = resources.files("spikeyolo") / "models" / "configs" / str(model)
        if not shipped.is_file():
            raise FileNotFoundError(f"model {model!r}: not a scale {SCALES}, a YAML file or a shipped config")
        return yaml.safe_load(shipped.read_text())
    return yaml.safe_load(path.read_text())


def layer_roles(spec: dict) -> dict[str, int]:
    """Where the parts of a layer table sit: ``stem`` (the only MAC layer), ``neck_start`` (the first layer after
    the backbone's last, SPPF) and ``head`` (Detect)."""
    kinds = [row[2] for row in spec["layers"]]
    return {"stem": kinds.index("Stem"), "neck_start": kinds.index("SPPF") + 1, "head": kinds.index("Detect")}


def make_divisible(x: float, divisor: int = 8) -> int:
    return int(math.ceil(x / divisor) * divisor)


class SpikeYOLO(nn.Module):
    """The SpikeYOLO detector (train form). Build it with :func:`spikeyolo.build_model`.

    ``forward(images [B, C, H, W] or frames [B, T, C, H, W])``: in train mode the per-level raw maps, in eval
    mode ``[B, 4 + nc, anchors]`` decoded predictions. ``config`` is plain data that rebuilds the model; keys
    the build does not read are kept as they are, e.g. ``events`` (window and representation of the event
    data the model was trained on, written by the trainer and read by ``spikeyolo.engine.recordings``).
    """

    def __init__(self, config: dict):
        super().__init__()
        self.config = copy.deepcopy(config)
        spec = config["spec"]
        depth, width, max_ch, p5_ratio = spec["scales"][config["scale"]]
        width = config.get("width") or width
        depth = config.get("depth") or depth
        symbols = {"nc": config["nc"], "p5_ratio": p5_ratio}
        neuron = NeuronConfig.from_config(config)

        layers, froms, channels, strides = [], [], [], []
        for i, (src, repeats, name, args) in enumerate(spec["layers"]):
            if not isinstance(src, int):
                src = [i - 1 if j == -1 else j for j in src]  # absolute indices, so the forward can look them up
            args = [symbols.get(a, a) if isinstance(a, str) else a for a in args]
            repeats = max(round(repeats * depth), 1) if repeats > 1 else repeats
            if isinstance(src, int):
                c1, s1 = (channels[src], strides[src]) if i > 0 else (config["in_channels"], 1)
            else:
                c1, s1 = [channels[j] for j in src], None
            if name == "Input":
                layer, c2, s2 = Input(config["T"], config["in_channels"]), c1, 1
            elif name in ("Stem", "Downsample"):
                c2 = int(args[0] * width)
                cls = StaticStem if name == "Stem" else Downsample
                layer, s2 = cls(c1, c2, *args[1:], neuron=neuron), s1 * args[2]
            elif name == "SpikeConv":
                c2 = min(int(args[0] * width), int(max_ch * width))
                layer, s2 = SpikeConv(c1, c2, *args[1:], neuron=neuron), s1 * (args[2] if len(args) > 2 else 1)
            elif name == "SPPF":
                c2 = make_divisible(min(args[0], max_ch) * width, 8)
                layer, s2 = SPPF(c1, c2, *args[1:], neuron=neuron), s1
            elif name in BLOCKS:
                blocks = [BLOCKS[name](c1, *args, neuron=neuron) for _ in range(repeats)]
                layer, c2, s2 = (blocks[0] if repeats == 1 else nn.Sequential(*blocks)), c1, s1
            elif name == "Upsample":
                layer, c2, s2 = Upsample(*args), c1, s1 // args[0]
            elif name == "Concat":
                layer, c2, s2 = Concat(), sum(c1), strides[src[0]]
            elif name == "Detect":
                layer = Detect(args[0], c1, [strides[j] for j in src], spec.get("reg_max", 16), neuron=neuron)
                c2, s2 = 0, 0
            else:
                raise ValueError(f"model config layer {i}: unknown module {name!r}")
            layers.append(layer)
            froms.append(src)
            channels.append(c2)
            strides.append(s2)

        self.layers = nn.ModuleList(layers)
        self.froms = froms
        self.layer_channels, self.layer_strides = channels, strides  # output of each layer, for summaries
        self.keep = {j for f in froms if f != -1 for j in ([f] if isinstance(f, int) else f)}  # outputs used later
        self.head.init_biases(config.get("imgsz", 640))

    # -- plain attributes the engine relies on -------------------------------------------------------------------
    @property
    def head(self) -> Detect:
        return self.layers[-1]

    @property
    def stride(self) -> torch.Tensor:
        return self.head.stride

    nc = property(lambda self: self.config["nc"])
    reg_max = property(lambda self: self.head.reg_max)
    names = property(lambda self: self.config["names"])
    T = property(lambda self: self.config["T"])
    D = property(lambda self: self.config["D"])
    neuron = property(lambda self: NeuronConfig.from_config(self.config))
    in_channels = property(lambda self: self.config["in_channels"])

    @property
    def roles(self) -> dict[str, int]:
        """Where this model's stem, neck and head sit in its own layer table (:func:`layer_roles`)."""
        return layer_roles(self.config["spec"])

    @property
    def form(self) -> str:
        """``train``, ``fused``, ``deploy`` or ``spike-driven``: what the conversions made of this network."""
        return form_of(self)

    def forward(self, x: torch.Tensor, return_maps: bool = False):
        """Train mode: the head's raw maps; eval mode: decoded ``[B, 4 + nc, A]``, or ``(decoded, maps)`` with
        ``return_maps`` (see :class:`~spikeyolo.nn.head.Detect`)."""
        outputs: list = []
        last = len(self.layers) - 1
        for i, (layer, src) in enumerate(zip(self.layers, self.froms)):
            if src != -1:
                x = outputs[src] if isinstance(src, int) else [outputs[j] for j in src]
            x = layer(x, return_maps=return_maps) if i == last else layer(x)
            outputs.append(x if i in self.keep else None)
        return x


def build_config(
    model: str | Path | dict = "s",
    nc: int = 80,
    T: int = 1,
    D: int | None = None,
    *,
    neuron: NeuronConfig | str | None = None,
    in_channels: int = 3,
    names: list[str] | None = None,
    decay: float | None = None,
    input_gain: float | None = None,
    detach_reset: bool | None = None,
    width: float | None = None,
    depth: float | None = None,
    imgsz: int = 640,
) -> dict:
    """Plain-data description of a model (what checkpoints store). The neuron settings: ``neuron`` (a
    :class:`NeuronConfig`, or its kind ``"ilif"``/``"relu"``/``"silu"``; default: the I-LIF), with ``D``,
    ``decay``, ``input_gain``, ``detach_reset`` overriding its fields."""
    if isinstance(neuron, str):
        neuron = NeuronConfig(kind=neuron)
    neuron = (neuron or NeuronConfig()).replace(D=D, decay=decay, input_gain=input_gain, detach_reset=detach_reset)
    if isinstance(model, str) and model in SCALES:
        scale, spec = model, load_spec(DEFAULT_CONFIG)
    else:
        spec = load_spec(model)
        scale = spec.get("scale") or next(iter(spec["scales"]))
    if scale not in spec["scales"]:
        raise ValueError(f"unknown scale {scale!r}; the config defines {sorted(spec['scales'])}")
    names = list(names) if names is not None else [f"class{i}" for i in range(nc)]
    if len(names) != nc:
        raise ValueError(f"{len(names)} class names given for nc={nc}")
    if T < 1:
        raise ValueError(f"T must be >= 1, got {T}")
    if not neuron.spiking and T != 1:
        raise ValueError(f"the ANN twin (neuron={neuron.kind!r}) has no time dimension: T must be 1, got {T} "
                         "(for event data, set T: 1 in the data YAML or pass --T 1)")
    return dict(spec=spec, scale=scale, nc=int(nc), names=names, T=int(T), **neuron.to_config(),
                in_channels=int(in_channels), width=width, depth=depth, imgsz=int(imgsz))


def build_model(model: str | Path | dict = "s", nc: int = 80, T: int = 1, D: int | None = None, **kwargs) -> SpikeYOLO:
    """Build a SpikeYOLO in train form.

    Args:
        model: a scale ``n``/``s``/``m``/``l`` of the shipped config, or a model YAML path / dict (its ``scale``
            key, else its first scale, is used).
        nc: number of classes. T: timesteps. D: largest integer spike (virtual timesteps at inference).
        kwargs: ``in_channels`` (3 for images; event representations set theirs), ``names``, ``neuron``
            (a :class:`~spikeyolo.neuron.NeuronConfig`, or ``"ilif"`` (default), or ``"relu"``/``"silu"``: the
            ANN twin, the same blocks and head with that activation in every I-LIF's place, T must be 1) or the
            I-LIF fields ``decay``, ``input_gain``, ``detach_reset``; ``width``/``depth`` (override the scale's
            multipliers, e.g. for tiny test models), ``imgsz`` (for the class-bias prior).
    """
    return SpikeYOLO(build_config(model, nc, T, D, **kwargs))
