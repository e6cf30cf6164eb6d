"""Import official BICLab SpikeYOLO checkpoints (ultralytics-fork pickles) without running their code.

The official files are whole pickled ``DetectionModel`` objects. Loading them normally needs the forked
ultralytics on the path and would execute whatever the pickle names. Here a restricted unpickler rebuilds
only tensors; every other class it meets becomes an inert :class:`_Inert` record of its attributes, from
which the weights are read and renamed to this library's layout. Which release a file is, and the T, D and
neuron it runs with, is recognized from the module classes and settings it names (``official_kinds``).
"""

from __future__ import annotations

import collections
import io
import pickle
import re
import warnings
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..utils.errors import CheckpointError
from .official_kinds import OfficialKind, recognize, shipped_roles
from .yolo import SpikeYOLO, build_config


# the only globals the unpickler hands out (everything else becomes an inert record): tensor rebuilding, plain
# containers and torch value types. Nothing else a file names is ever imported.
def _rebuild_tensor_checked(storage, offset, size, stride, *rest):
    """``torch._utils._rebuild_tensor_v2`` after checking that the view lies inside its storage (torch would
    grow the storage to fit, allocating whatever size the file names)."""
    if not isinstance(storage, torch.storage.TypedStorage):
        raise CheckpointError("a tensor without a storage")
    dims = (offset, *size, *stride)
    if len(size) != len(stride) or not all(isinstance(v, int) and v >= 0 for v in dims):
        raise CheckpointError(f"bad tensor view: offset {offset}, size {tuple(size)}, stride {tuple(stride)}")
    end = offset + sum((n - 1) * st for n, st in zip(size, stride)) + 1 if all(size) else 0
    if end > storage.size():
        raise CheckpointError(f"a tensor of size {tuple(size)} reaches element {end} of a storage of {storage.size()}")
    return torch._utils._rebuild_tensor_v2(storage, offset, size, stride, *rest)


_TENSOR_GLOBALS = {
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor_checked,
    ("torch._utils", "_rebuild_parameter"): torch._utils._rebuild_parameter,
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("torch", "device"): torch.device,
    ("torch", "Size"): torch.Size,
}
MAX_MODULE_DEPTH = 100  # nesting of nn.Module records (the official models are 4 deep)


class _Inert:
    """Stands in for any class named in the pickle; keeps the state it is given and does nothing else."""

    def __init__(self, *args, **kwargs):
        self._args = args

    def __setstate__(self, state):
        self.__dict__["_state"] = state


def _inert_class(module: str, name: str) -> type:
    return type(str(name), (_Inert,), {"__module__": f"inert.{module}"})


def _reconstruct(cls, base, state):
    # copyreg's protocol-0/1 reconstructor, limited to our inert classes
    return cls.__new__(cls) if isinstance(cls, type) and issubclass(cls, _Inert) else _Inert()


def _storage_dtype(storage_type) -> torch.dtype:
    if storage_type is torch.UntypedStorage:
        return torch.uint8
    dtype = getattr(storage_type, "dtype", None) if isinstance(storage_type, type) else None
    if not isinstance(dtype, torch.dtype):
        raise CheckpointError(f"storage type {storage_type!r} is not a torch storage")
    return dtype


class _RestrictedUnpickler(pickle.Unpickler):
    """Unpickles ``data.pkl`` of a zip-format torch file: allow-listed globals only; storages are read from the
    zip's records after checking that each record holds the bytes the pickle asks for."""

    def __init__(self, data: bytes, zf: zipfile.ZipFile, record_prefix: str):
        super().__init__(io.BytesIO(data))
        self._zf, self._prefix, self._storages = zf, record_prefix, {}

    def find_class(self, module, name):
        if (module, name) in _TENSOR_GLOBALS:
            return _TENSOR_GLOBALS[module, name]
        if module == "torch" and isinstance(name, str):
            value = getattr(torch, name, None)
            if isinstance(value, torch.dtype):
                return value
            if name.endswith("Storage") and isinstance(value, type) and issubclass(
                    value, torch.storage.TypedStorage | torch.UntypedStorage):
                return value
        if module == "copyreg" and name == "_reconstructor":
            return _reconstruct
        return _inert_class(module, name)

    def persistent_load(self, pid):
        if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage"):
            raise CheckpointError(f"unknown persistent id {str(pid)[:80]}")
        _, storage_type, key, _location, numel = pid
        dtype = _storage_dtype(storage_type)
        if not isinstance(numel, int) or numel < 0:
            raise CheckpointError(f"storage {key!r}: bad size {numel!r}")
        if key in self._storages:
            return self._storages[key]
        nbytes = numel * torch.empty((), dtype=dtype).element_size()
        name = f"{self._prefix}{key}"
        try:
            info = self._zf.getinfo(name)
        except KeyError:
            raise CheckpointError(f"storage {key!r}: no record {name}") from None
        if nbytes > info.file_size:
            raise CheckpointError(f"storage {key!r} asks for {nbytes} bytes; its record holds {info.file_size}")
        raw = bytearray(self._zf.read(name)[:nbytes])
        data = torch.frombuffer(raw, dtype=torch.uint8).clone() if nbytes else torch.empty(0, dtype=torch.uint8)
        typed = torch.storage.TypedStorage(wrap_storage=data.untyped_storage(), dtype=dtype, _internal=True)
        self._storages[key] = typed
        return typed


def _load_restricted(path: Path):
    """The object pickled in a zip-format torch file, rebuilt by :class:`_RestrictedUnpickler`."""
    if not zipfile.is_zipfile(path):
        raise CheckpointError("not a zip-format torch file")
    size = path.stat().st_size
    with zipfile.ZipFile(path) as zf:
        infos = zf.infolist()
        big = [i for i in infos if i.file_size > size]
        if big:  # a record claiming more bytes than the whole file: corrupt or a decompression bomb
            raise CheckpointError(f"record {big[0].filename} claims {big[0].file_size} bytes, more than the file")
        pkl = [i.filename for i in infos if i.filename.endswith("data.pkl")]
        if len(pkl) != 1:
            raise CheckpointError(f"expected one data.pkl record, found {len(pkl)}")
        prefix = pkl[0][: -len("data.pkl")]
        order = [i for i in infos if i.filename == prefix + "byteorder"]
        if order and zf.read(order[0]).strip() not in (b"little", b""):
            raise CheckpointError("big-endian tensor data is not supported")
        with warnings.catch_warnings():  # torch.load also silences it: the file format names typed storages
            warnings.filterwarnings("ignore", "TypedStorage is deprecated")
            return _RestrictedUnpickler(zf.read(pkl[0]), zf, prefix + "data/").load()


def _fields(obj, kind: str, where: str) -> dict:
    value = obj.get(kind)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise CheckpointError(f"module {where or '<root>'}: field {kind} is a {type(value).__name__}, not a dict")
    return value


def _module_records(root):
    """``(path, class, state)`` of every inert nn.Module record under ``root``: iterative, with a depth limit; a
    module met twice (shared, or a cycle) is visited once."""
    seen, stack = set(), [(root, "", 0)]
    while stack:
        obj, prefix, depth = stack.pop()
        if id(obj) in seen or not isinstance(obj, _Inert):
            continue
        seen.add(id(obj))
        if depth > MAX_MODULE_DEPTH:
            raise CheckpointError(f"module tree deeper than {MAX_MODULE_DEPTH} levels")
        state = obj.__dict__.get("_state", {})
        if isinstance(state, tuple) and state:  # (dict, slots) form
            state = state[0] or {}
        if not isinstance(state, dict):
            continue
        yield prefix, type(obj), state
        for name, child in _fields(state, "_modules", prefix).items():
            stack.append((child, f"{prefix}{name}.", depth + 1))


@dataclass
class OfficialFile:
    """What an official file holds: its weights (official names, ``model.`` removed, dtype as stored), the number
    of parameters (``_parameters`` entries only, as ultralytics counts), the module classes it names
    (``module.Class``), the settings stored in its modules (``MS_GetT.T``, the SpikingJelly neurons' fields) and
    its model config (``yaml``) and ``train_args`` when pickled."""

    state: dict
    n_params: int = 0
    classes: set = field(default_factory=set)
    getT: list = field(default_factory=list)
    lif: list = field(default_factory=list)
    yaml: dict = field(default_factory=dict)
    names: object = None
    train_args: dict = field(default_factory=dict)


LIF_FIELDS = ("tau", "decay_input", "v_threshold", "v_reset", "detach_reset")


def _read_records(root) -> OfficialFile:
    out = OfficialFile({})
    for prefix, cls, state in _module_records(root):
        name = cls.__name__
        out.classes.add(f"{cls.__module__.removeprefix('inert.')}.{name}")
        if not prefix:
            out.yaml = state.get("yaml") if isinstance(state.get("yaml"), dict) else {}
            out.names = state.get("names")
        if name == "MS_GetT" and "T" in state:
            out.getT.append(state["T"])
        if name == "MultiStepLIFNode":
            out.lif.append(tuple(state.get(k) for k in LIF_FIELDS))
        for kind in ("_parameters", "_buffers"):
            for key, value in _fields(state, kind, prefix).items():
                if isinstance(value, torch.Tensor):
                    out.state[f"{prefix}{key}"] = value
                    out.n_params += value.numel() if kind == "_parameters" else 0
    return out


def _state_dict_of(root) -> dict[str, torch.Tensor]:
    """Walk inert nn.Module records (``_parameters``, ``_buffers``, ``_modules``) into a flat state dict."""
    return _read_records(root).state


def read_official(path: str | Path) -> OfficialFile:
    """Read an official checkpoint (its EMA model if present) without unpickling its objects: only tensors,
    plain containers and torch value types are rebuilt (see :class:`_RestrictedUnpickler`). Every problem raises
    :class:`CheckpointError` naming the file."""
    path = Path(path)
    try:
        ckpt = _load_restricted(path)
        model = ckpt if not isinstance(ckpt, dict) else ckpt.get("ema") if ckpt.get("ema") is not None else \
            ckpt.get("model")
        info = _read_records(model)
        info.state = {str(k).removeprefix("model."): v for k, v in info.state.items()}
        args = ckpt.get("train_args") if isinstance(ckpt, dict) else None
        info.train_args = args if isinstance(args, dict) else {}
    except CheckpointError as e:
        raise CheckpointError(f"{path}: cannot be read as an official SpikeYOLO checkpoint ({e})") from None
    except Exception as e:  # untrusted bytes: any failure of the parse is the file's fault, reported as such
        raise CheckpointError(f"{path}: cannot be read as an official SpikeYOLO checkpoint "
                              f"({type(e).__name__}: {str(e)[:200]})") from None
    if not info.state:
        raise CheckpointError(f"{path}: no model weights found (expected an 'ema' or 'model' entry)")
    return info


def read_official_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """The weights of an official checkpoint (its EMA model if present), with official key names, as float32."""
    return {k: v.float() for k, v in read_official(path).state.items()}


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


def recognize_official(path: str | Path, scale: str | None = None, **given) -> OfficialKind:
    """Which official release ``path`` is (COCO 23M / 69M, Gen1 23M; the binary-inference 23M is refused with
    the reason) and its settings, read from the file without building a model (see ``official_kinds``)."""
    return recognize(read_official(path), path, scale, **given)


def infer_official(path: str | Path, report=print, info: OfficialFile | None = None, **kwargs) -> SpikeYOLO:
    """Import an official checkpoint with everything recognized from the file: scale (from the parameter count),
    classes and their names, T, D, decay and input gain (see ``official_kinds``); ``report`` gets one line
    saying what was recognized. ``kwargs``: ``scale``, ``T``, ``D``, ``decay``, ``input_gain`` replace what was
    recognized; ``nc`` must be the file's; the rest (``width``, ``depth``, ``names``) go to
    :func:`import_official`. ``info``: the file already read by :func:`read_official`. An unknown or
    inconsistent file raises :class:`CheckpointError`."""
    info = info if info is not None else read_official(path)
    nc = kwargs.pop("nc", None)
    given = {k: kwargs.pop(k) for k in ("T", "D", "decay", "input_gain") if kwargs.get(k) is not None}
    kind = recognize(info, path, kwargs.pop("scale", None), **given, width=kwargs.get("width"),
                     depth=kwargs.get("depth"))
    if nc is not None and nc != kind.nc:
        raise CheckpointError(f"{path}: has {kind.nc} classes, not nc={nc}")
    report(kind.line(path))
    state = {k: v.float() for k, v in info.state.items()}
    names = kwargs.pop("names", None) or _class_names(info, kind.nc)
    return import_official(path, kind.scale, nc=kind.nc, state=state, names=names, **kind.settings(), **kwargs)


def official_names(info: OfficialFile, path) -> list[str]:
    """The class names a model imported from ``info`` gets: the pickled ones, else ``class0..``."""
    cls = info.state.get(f"{shipped_roles()['head']}.cv3.0.2.conv.weight")
    if cls is None or cls.dim() != 4:
        raise CheckpointError(f"{path}: not a SpikeYOLO checkpoint (no detection head found)")
    return _class_names(info, int(cls.shape[0])) or [f"class{i}" for i in range(int(cls.shape[0]))]


def _class_names(info: OfficialFile, nc: int) -> list[str] | None:
    """The class names the ultralytics model pickled (``names``, a dict or list), when there is one per class."""
    names = info.names
    if isinstance(names, dict):
        names = [names.get(i) for i in range(nc)]
    if isinstance(names, list | tuple) and len(names) == nc and all(isinstance(n, str) for n in names):
        return list(names)
    return None


def import_official(
    path: str | Path, scale: str, nc: int = 80, T: int = 1, D: int | None = None, names: list[str] | None = None,
    state: dict | None = None, **kwargs
) -> SpikeYOLO:
    """Build our model from an official checkpoint. ``kwargs`` go to :func:`spikeyolo.models.yolo.build_config`
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
        fits = new.endswith("dfl.bins") and value.numel() == ours[new].numel()
        converted[new] = value.reshape(ours[new].shape) if fits else value
    missing = sorted(set(ours) - set(converted))
    bad = [k for k in converted if converted[k].shape != ours[k].shape]
    if missing or unexpected or bad:
        raise CheckpointError(
            f"{path}: does not match SpikeYOLO-{scale} with nc={nc}: {len(missing)} missing (e.g. {missing[:3]}), "
            f"{len(unexpected)} unexpected (e.g. {unexpected[:3]}), {len(bad)} with other shapes (e.g. {bad[:3]})"
        )
    model.load_state_dict(converted)
    return model.eval()
