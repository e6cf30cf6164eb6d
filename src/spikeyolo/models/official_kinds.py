"""Which official SpikeYOLO release an official checkpoint is, and the settings it runs with.

The official files record no T/D/neuron settings as such, but they name their module classes and keep some
settings in their modules: the COCO code's neuron is ``mem_update`` with a ``MultiSpike<D>`` quantizer (decay
0.25, input gain 1: constants of that code), and ``MS_GetT`` holds T; the Gen1 code uses SpikingJelly's
``MultiStepLIFNode`` whose ``tau`` and ``decay_input`` are stored (decay ``1 - 1/tau``, input gain ``1/tau``),
made an integer neuron 0..4 by the spikingjelly copy bundled with it (not recorded in the file), with T set by
the data (2 for the release). The scale comes from the parameter count (checked against the stem width), the
number of classes from the head. Anything missing or contradictory is an error, never a default.

The fourth release, the binary-inference 23M (``yolo_spikformer_bin``), is another network (no
re-parameterized convs: a neuron before each of RepConv's three convs, a fourth conv in SepConv, no conv
biases). It is recognized and refused with that explanation.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass

import torch

from ..utils.errors import CheckpointError
from .yolo import SCALES, SpikeYOLO, build_config, layer_roles, load_spec

STEM_WIDTH_TO_SCALE = {48: "n", 64: "s", 80: "m", 96: "l"}
RELEASES = {("coco", "s", 80): "COCO 23M", ("coco", "l", 80): "COCO 69M", ("gen1", "s", 2): "Gen1 23M"}
COCO_DECAY, COCO_GAIN = 0.25, 1.0  # module-level constants of the official COCO neuron (mem_update)
GEN1_RELEASE_T = 2  # the README's "23M, T=2, D=4, GEN1": T is the number of event frames the data brings
GEN1_D = 4  # the bundled spikingjelly's surrogate clamps to [0, 4] (quant4)


def shipped_roles() -> dict:
    """Layer indices of the stem and head in the shipped layer table, which the official weights also follow."""
    return layer_roles(load_spec())


@dataclass(frozen=True)
class OfficialKind:
    """A recognized official file: release name, scale, classes, parameter count and the model settings, with
    ``sources`` saying where T and D came from."""

    release: str
    scale: str
    nc: int
    n_params: int
    T: int
    D: int
    decay: float
    input_gain: float
    detach_reset: bool
    neuron: str
    sources: dict

    def settings(self) -> dict:
        return {"T": self.T, "D": self.D, "decay": self.decay, "input_gain": self.input_gain,
                "detach_reset": self.detach_reset}

    def line(self, path) -> str:
        """One line saying what was recognized (``spikeyolo.load`` prints it)."""
        return (f"{path}: official SpikeYOLO {self.release}: scale {self.scale} ({self.n_params:,} parameters), "
                f"{self.nc} classes; {self.neuron}: T={self.T} ({self.sources['T']}), D={self.D} "
                f"({self.sources['D']}), decay {self.decay:g}, input gain {self.input_gain:g}")


@functools.lru_cache(maxsize=8)
def scale_parameter_counts(nc: int) -> dict[str, int]:
    """Parameters of each shipped scale at ``nc`` classes (built on the meta device: no memory, no init)."""
    out = {}
    for scale in SCALES:
        with torch.device("meta"):
            out[scale] = sum(p.numel() for p in SpikeYOLO(build_config(scale, nc)).parameters())
    return out


def _class_names(info) -> set[str]:
    return {c.rsplit(".", 1)[-1] for c in info.classes}


def refuse_binary(info, path) -> None:
    """The binary-inference release is another network: say so instead of a list of mismatched weights."""
    binary = any(c.endswith(".Conv2d_bn") or ".yolo_spikformer_bin." in c for c in info.classes) or \
        any(".dwconv4." in k for k in info.state)
    if binary:
        raise CheckpointError(
            f"{path}: the official binary-inference checkpoint ({info.n_params:,} parameters, yolo_spikformer_bin): "
            "a different network (a neuron before each of RepConv's three convs, a fourth conv in SepConv, no conv "
            "biases), which spikeyolo does not build. The authors give it the accuracy of the integer COCO 23M "
            "checkpoint (issue 67): load that one and run it spike-driven with spikeyolo.to_spike_driven(model)")


def _neuron(info, path) -> dict:
    names = _class_names(info)
    quantizers = {n for n in names if re.fullmatch(r"MultiSpike\d+", n)}
    coco, sj = bool(quantizers or "mem_update" in names), "MultiStepLIFNode" in names
    if coco and sj:
        raise CheckpointError(f"{path}: inconsistent official checkpoint: it names both the COCO neuron (mem_update/"
                              "MultiSpike) and SpikingJelly's MultiStepLIFNode (the Gen1 neuron)")
    if not coco and not sj:
        raise CheckpointError(
            f"{path}: unknown official checkpoint: no neuron module (mem_update/MultiSpike<D> of the COCO code, or "
            "SpikingJelly's MultiStepLIFNode of the Gen1 code), so T, D and the neuron cannot be told; give them: "
            "spikeyolo.models.official.import_official(path, scale, nc=..., T=..., D=..., decay=..., input_gain=...)")
    if coco:
        Ds = sorted(int(n[len("MultiSpike"):]) for n in quantizers)
        if len(Ds) != 1:
            raise CheckpointError(f"{path}: inconsistent official checkpoint: quantizers for D = {Ds or 'none'} "
                                  "(one MultiSpike<D> expected)")
        return dict(kind="coco", D=Ds[0], D_source=f"MultiSpike{Ds[0]}", decay=COCO_DECAY, input_gain=COCO_GAIN,
                    detach_reset=True, neuron="I-LIF (mem_update)")
    settings = set(info.lif)
    if len(settings) != 1:
        raise CheckpointError(f"{path}: inconsistent official checkpoint: its MultiStepLIFNode neurons differ "
                              f"(tau, decay_input, v_threshold, v_reset, detach_reset = {sorted(map(str, settings))})")
    tau, decay_input, _, v_reset, detach = next(iter(settings))
    if isinstance(tau, bool) or not isinstance(tau, int | float) or tau <= 1 or v_reset is not None:
        raise CheckpointError(f"{path}: a MultiStepLIFNode with tau {tau!r}, v_reset {v_reset!r}: the official Gen1 "
                              "neuron has tau > 1 and a soft reset (v_reset None)")
    return dict(kind="gen1", D=GEN1_D, D_source="the bundled spikingjelly's quant4", decay=1 - 1 / tau,
                input_gain=1 / tau if decay_input else 1.0, detach_reset=bool(detach),
                neuron=f"SpikingJelly MultiStepLIFNode (tau {tau:g}{', decay_input' if decay_input else ''})")


def _coco_timesteps(info, path) -> int:
    """T as the COCO file stores it: the MS_GetT module and its row in the pickled model config, which must agree."""
    found = {("MS_GetT module", t) for t in info.getT}
    for row in (info.yaml.get("backbone") or []) if isinstance(info.yaml, dict) else []:
        if isinstance(row, list | tuple) and len(row) == 4 and row[2] == "MS_GetT" and len(row[3] or []) >= 2:
            found.add(("model config", row[3][1]))
    values = {t for _, t in found}
    if len(values) > 1:
        raise CheckpointError(f"{path}: inconsistent official checkpoint: T differs between {sorted(found)}")
    T = next(iter(values), None)
    if isinstance(T, bool) or not isinstance(T, int) or T < 1:
        raise CheckpointError(f"{path}: no timesteps recorded (no MS_GetT T), or not a positive integer ({T!r}); "
                              "give T: spikeyolo.load(path, T=...)")
    return T


def _scale(info, nc: int, path) -> str:
    counts = scale_parameter_counts(nc)
    matches = [s for s, n in counts.items() if n == info.n_params]
    stem = info.state[f"{shipped_roles()['stem']}.encode_conv.weight"]
    by_stem = STEM_WIDTH_TO_SCALE.get(stem.shape[0])
    if not matches:
        table = ", ".join(f"{s} {n:,}" for s, n in counts.items())
        raise CheckpointError(f"{path}: {info.n_params:,} parameters match no SpikeYOLO scale at nc={nc} ({table}; "
                              f"the stem width {stem.shape[0]} says {by_stem or 'none'}); give scale= if it is one")
    if matches[0] != by_stem:
        raise CheckpointError(f"{path}: inconsistent official checkpoint: {info.n_params:,} parameters are scale "
                              f"{matches[0]}, the stem width {stem.shape[0]} is scale {by_stem}")
    return matches[0]


def recognize(info, path, scale: str | None = None, **given) -> OfficialKind:
    """The release and settings of an official file read by ``official.read_official``. ``scale`` and ``given``
    (``T``, ``D``, ``decay``, ``input_gain``) replace what the file says; each is marked as given."""
    refuse_binary(info, path)
    roles = shipped_roles()
    stem = info.state.get(f"{roles['stem']}.encode_conv.weight")
    cls = info.state.get(f"{roles['head']}.cv3.0.2.conv.weight")
    if stem is None or cls is None or stem.dim() != 4 or cls.dim() != 4:
        raise CheckpointError(f"{path}: not a SpikeYOLO checkpoint (no stem conv or detection head found)")
    nc = int(cls.shape[0])
    neuron = _neuron(info, path)
    sources = {"D": neuron["D_source"]}
    if "T" in given:
        T, sources["T"] = given["T"], "given"
    elif neuron["kind"] == "gen1":
        T, sources["T"] = GEN1_RELEASE_T, "the Gen1 release; the file does not record it"
    else:
        T, sources["T"] = _coco_timesteps(info, path), "its MS_GetT"
    if "D" in given:
        sources["D"] = "given"
    settings = {k: given.get(k, neuron[k]) for k in ("D", "decay", "input_gain")}
    scale = scale or _scale(info, nc, path)
    release = RELEASES.get((neuron["kind"], scale, nc), f"{neuron['kind'].upper()}-code model (not a released file)")
    if given.get("width") or given.get("depth"):
        release = f"{neuron['kind'].upper()}-code model (width/depth given)"
    return OfficialKind(release, scale, nc, info.n_params, int(T), detach_reset=neuron["detach_reset"],
                        neuron=neuron["neuron"], sources=sources, **settings)
