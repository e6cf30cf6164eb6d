"""Import official BICLab SpikeYOLO checkpoints (ultralytics-fork pickles) without running their code.

The official files are whole pickled ``DetectionModel`` objects. Loading them normally needs the forked
ultralytics on the path and would execute whatever the pickle names. Here a restricted unpickler rebuilds
only tensors; every other class it meets becomes an inert :class:`_Inert` record of its attributes, from
which the weights are read and renamed to this library's layout. T and D are not stored in the official
files: they must be given (the README's releases: COCO T=1 D=4; Gen1 T=2 D=4 with decay 0.5, gain 0.5).
"""

from __future__ import annotations

import pickle
import re
import types
import warnings
from pathlib import Path

import torch

from .model import SpikeYOLO, build_config
from .neuron import NeuronConfig

# globals a torch checkpoint needs to rebuild tensors: the only callables the unpickler will hand out
_TENSOR_GLOBALS = {
    ("torch._utils", "_rebuild_tensor_v2"), ("torch._utils", "_rebuild_parameter"),
    ("torch._utils", "_rebuild_parameter_with_state"), ("collections", "OrderedDict"),
}


class _Inert:
    """Stands in for any class named in the pickle; keeps the state it is given and does nothing else."""

    def __init__(self, *args, **kwargs):
        self._args = args

    def __setstate__(self, state):
        self.__dict__["_state"] = state


def _inert_class(module: str, name: str) -> type:
    return type(name, (_Inert,), {"__module__": f"inert.{module}"})


class _RestrictedUnpickler(pickle.Unpickler):
    def find_class(self, module, name):
        if (module, name) in _TENSOR_GLOBALS or (module == "torch" and name.endswith("Storage")):
            return super().find_class(module, name)
        if module == "torch" and name in ("device", "Size"):
            return super().find_class(module, name)
        if module == "copyreg" and name == "_reconstructor":
            return _reconstruct
        if module == "torch" and isinstance(getattr(torch, name, None), torch.dtype):
            return getattr(torch, name)
        return _inert_class(module, name)


def _reconstruct(cls, base, state):
    # copyreg's protocol-0/1 reconstructor, limited to our inert classes
    return cls.__new__(cls) if isinstance(cls, type) and issubclass(cls, _Inert) else _Inert()


_restricted_pickle = types.SimpleNamespace(Unpickler=_RestrictedUnpickler, load=None, __name__="restricted_pickle")


def _state_dict_of(obj, prefix: str = "") -> dict[str, torch.Tensor]:
    """Walk an inert nn.Module record (``_parameters``, ``_buffers``, ``_modules``) into a flat state dict."""
    state = obj.__dict__.get("_state", {}) if isinstance(obj, _Inert) else {}
    if isinstance(state, tuple):  # (dict, slots) form
        state = state[0] or {}
    out: dict[str, torch.Tensor] = {}
    for kind in ("_parameters", "_buffers"):
        for name, value in (state.get(kind) or {}).items():
            if isinstance(value, torch.Tensor):
                out[prefix + name] = value
    for name, child in (state.get("_modules") or {}).items():
        if child is not None:
            out.update(_state_dict_of(child, f"{prefix}{name}."))
    return out


def read_official_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """The weights of an official checkpoint (its EMA model if present), with official key names."""
    path = Path(path)
    try:
        ckpt = torch.load(path, map_location="cpu", pickle_module=_restricted_pickle, weights_only=False)
    except Exception as e:
        raise ValueError(f"{path}: cannot be read as an official SpikeYOLO checkpoint ({e})") from None
    model = ckpt.get("ema") or ckpt.get("model") if isinstance(ckpt, dict) else ckpt
    state = _state_dict_of(model)
    if not state:
        raise ValueError(f"{path}: no model weights found (expected an 'ema' or 'model' entry)")
    return {k.removeprefix("model."): v.float() for k, v in state.items()}


# official name -> ours, applied to keys of the form "<layer>.<rest>"; first matching rule wins
_RULES = [
    (r"^(\d+)\.encode_conv\.", r"\1.conv."), (r"^(\d+)\.encode_bn\.", r"\1.bn."),
    (r"\bConv\.pwconv1\.", "sep.pw.conv."), (r"\bConv\.bn1\.", "sep.pw.bn."),
    (r"\bConv\.dwconv2\.", "sep.dw.conv."), (r"\bConv\.bn2\.", "sep.dw.bn."),
    (r"\bConv\.pwconv3\.body\.0\.bn\.", "sep.rep.bnpad.bn."), (r"\bConv\.pwconv3\.body\.1\.0\.", "sep.rep.pw."),
    (r"\bConv\.pwconv3\.body\.1\.1\.", "sep.rep.dw."), (r"\bConv\.bn3\.", "sep.rep.bn."),
    (r"\b(conv[12])\.body\.0\.", r"\1.pw1."), (r"\b(conv[12])\.body\.1\.bn\.", r"\1.bnpad.bn."),
    (r"\b(conv[12])\.body\.2\.0\.", r"\1.dw."), (r"\b(conv[12])\.body\.2\.1\.", r"\1.pw2."),
    (r"\b(conv[12])\.body\.2\.2\.", r"\1.bn_inner."), (r"\bbn([12])\.", r"conv\1.bn."),
    (r"\.cv2\.(\d+)\.", r".box.\1."), (r"\.cv3\.(\d+)\.", r".cls.\1."),
]


def official_to_ours(key: str) -> str:
    if re.search(r"\.dfl\.conv\.weight$", key):
        return re.sub(r"^(\d+)\.dfl\.conv\.weight$", r"layers.\1.dfl.bins", key)
    for pattern, repl in _RULES:
        key = re.sub(pattern, repl, key)
    return "layers." + key


STEM_WIDTH_TO_SCALE = {48: "n", 64: "s", 80: "m", 96: "l"}


def infer_official(path: str | Path, **kwargs) -> SpikeYOLO:
    """Import with scale (unless given) and nc read from the weights and the COCO release's T=1, D=4 (with a warning:
    the official files do not record T, D or the neuron settings)."""
    state = read_official_state_dict(path)
    stem, cls = state.get("1.encode_conv.weight"), state.get("26.cv3.0.2.conv.weight")
    if stem is None or cls is None:
        raise ValueError(f"{path}: not a SpikeYOLO checkpoint (no stem conv or detection head found)")
    scale = kwargs.pop("scale", None) or STEM_WIDTH_TO_SCALE.get(stem.shape[0])
    if scale is None:
        raise ValueError(f"{path}: stem width {stem.shape[0]} matches no scale {STEM_WIDTH_TO_SCALE}")
    given = {k: kwargs.pop(k) for k in ("T", "D") if k in kwargs}
    settings = {"T": 1, "D": NeuronConfig.D, **given}
    if not given:
        warnings.warn(f"{path}: official checkpoints do not record T, D or the neuron settings; assuming the COCO "
                      "release's T=1, D=4, decay 0.25, gain 1. For the Gen1 release use import_official(path, 's', "
                      "nc=2, T=2, D=4, decay=0.5, input_gain=0.5).", stacklevel=2)
    return import_official(path, scale, nc=cls.shape[0], state=state, **settings, **kwargs)


def import_official(
    path: str | Path, scale: str, nc: int = 80, T: int = 1, D: int | None = None, names: list[str] | None = None,
    state: dict | None = None, **kwargs
) -> SpikeYOLO:
    """Build our model from an official checkpoint. ``kwargs`` go to :func:`spikeyolo.model.build_config`
    (``neuron=NeuronConfig(decay=0.5, input_gain=0.5)`` or ``decay=0.5, input_gain=0.5`` for the Gen1
    release). Shapes must match exactly."""
    official = state if state is not None else read_official_state_dict(path)
    model = SpikeYOLO(build_config(scale, nc, T, D, names=names, **kwargs))
    ours = model.state_dict()
    converted, unexpected = {}, []
    for key, value in official.items():
        new = official_to_ours(key)
        if new not in ours:
            unexpected.append(key)
            continue
        converted[new] = value.reshape(ours[new].shape) if new.endswith("dfl.bins") else value
    missing = sorted(set(ours) - set(converted))
    bad = [k for k in converted if converted[k].shape != ours[k].shape]
    if missing or unexpected or bad:
        raise ValueError(
            f"{path}: does not match SpikeYOLO-{scale} with nc={nc}: {len(missing)} missing (e.g. {missing[:3]}), "
            f"{len(unexpected)} unexpected (e.g. {unexpected[:3]}), {len(bad)} with other shapes (e.g. {bad[:3]})"
        )
    model.load_state_dict(converted)
    return model.eval()
