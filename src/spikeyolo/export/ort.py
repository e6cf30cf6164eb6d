"""spikeyolo's ONNX files in ONNX Runtime: their metadata, the int8 graph rewrite of the deploy form, and a module
that runs a file (the exporter itself is :mod:`spikeyolo.export.onnx`).

int8 here means: every conv whose input is an I-LIF output (integers 0..D) runs as ONNX ``ConvInteger`` on the
spikes cast to uint8 (scale 1, zero point 0: exact, no calibration) with int8 weights, symmetric per output
channel, accumulating in int32; the int32 result is scaled back per channel to float32 and the bias added. The
stem (real-valued image), the head's last 1x1 convs (logits) and the inner convs of a factorized chain (their
inputs are real-valued) stay float32. Why not QDQ ``QLinearConv``: it requantizes every conv output to 8 bits,
and the conv output is the next I-LIF's membrane input, whose rounding to 0..D that error would flip.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..forms.deploy import check_uint8_spikes
from ..nn.int8 import quantize_weight
from ..nn.units import DeployUnit
from ..utils.errors import FileFormatError
from ..utils.version import __version__

METADATA_KEYS = ("names", "strides", "imgsz", "T", "D", "nc", "in_channels", "precision", "config",
                 "spikeyolo_version")
"""Keys every spikeyolo ``.onnx`` carries (JSON values); files written since the fused form has them also carry
``form`` (``fused`` or ``deploy``; absent: ``deploy``, the only form that had metadata before)."""
EXPORT_FORMS = ("fused", "deploy")


def _import_onnx():
    try:
        import onnx  # optional dependency (pip install "spikeyolo[export]")
        import onnxruntime  # optional dependency
    except ImportError as e:
        raise ImportError(f"the onnxruntime backend needs onnx and onnxruntime ({e.name} is missing): "
                          f"pip install 'spikeyolo[export]', or use backend='torch' (fp32, bf16)") from None
    return onnx, onnxruntime


def spike_fed_convs(dep: nn.Module) -> dict[str, nn.Conv2d]:
    """``{weight name: conv}`` of the first conv of every deploy unit that may be lowered
    (:attr:`spikeyolo.nn.units.SpikeUnit.quantizable`, the rule the torch int8 form follows too); the names are
    those the ONNX exporter gives the weights."""
    return {f"{name}.convs.0.weight": m.convs[0] for name, m in dep.named_modules()
            if isinstance(m, DeployUnit) and m.quantizable}


def _int8_conv_nodes(node, w: np.ndarray, bias: np.ndarray | None, D: int):
    """Nodes and initializers replacing one float Conv on spike inputs by Cast(uint8) -> ConvInteger -> scale."""
    from onnx import TensorProto, helper, numpy_helper  # optional dependency, checked by _import_onnx

    q, scale = (t.numpy() for t in quantize_weight(torch.from_numpy(w)))
    p = node.name.strip("/").replace("/", "_") or node.output[0]
    x, y = node.input[0], node.output[0]
    inits = [numpy_helper.from_array(q, f"{p}_wq"), numpy_helper.from_array(np.zeros((), np.int8), f"{p}_wzp"),
             numpy_helper.from_array(scale.reshape(1, -1, 1, 1), f"{p}_scale")]
    attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    nodes = [helper.make_node("Cast", [x], [f"{p}_xu8"], to=TensorProto.UINT8),
             helper.make_node("ConvInteger", [f"{p}_xu8", f"{p}_wq", "", f"{p}_wzp"], [f"{p}_acc"],
                              name=f"{node.name}_int8", **attrs),
             helper.make_node("Cast", [f"{p}_acc"], [f"{p}_accf"], to=TensorProto.FLOAT)]
    if bias is None:
        nodes.append(helper.make_node("Mul", [f"{p}_accf", f"{p}_scale"], [y]))
    else:
        inits.append(numpy_helper.from_array(bias.reshape(1, -1, 1, 1).astype(np.float32), f"{p}_bias"))
        nodes += [helper.make_node("Mul", [f"{p}_accf", f"{p}_scale"], [f"{p}_scaled"]),
                  helper.make_node("Add", [f"{p}_scaled", f"{p}_bias"], [y])]
    return nodes, inits


def quantize_graph(model_proto, convs: dict[str, nn.Conv2d], D: int) -> int:
    """Rewrite, in place, every Conv whose weight input is named in ``convs`` to int8 (weights and bias taken
    from the torch conv, since the exporter may share or fold equal initializers); returns how many."""
    _import_onnx()
    check_uint8_spikes(D)
    g = model_proto.graph
    new_nodes, n, replaced = [], 0, set()
    for node in g.node:
        conv = convs.get(node.input[1]) if node.op_type == "Conv" and len(node.input) > 1 else None
        if conv is None:
            new_nodes.append(node)
            continue
        w = conv.weight.detach().float().cpu().numpy()
        b = conv.bias.detach().float().cpu().numpy() if conv.bias is not None else None
        nodes, extra = _int8_conv_nodes(node, w, b, D)
        new_nodes += nodes
        g.initializer.extend(extra)
        replaced.update(i for i in node.input[1:] if i)
        n += 1
    del g.node[:]
    g.node.extend(new_nodes)
    still_used = {i for node in g.node for i in node.input}
    keep = [i for i in g.initializer if i.name not in replaced or i.name in still_used]
    del g.initializer[:]
    g.initializer.extend(keep)
    return n


@torch.no_grad()
def dequantize_weights_(convs: dict[str, nn.Conv2d]) -> None:
    """Replace, in place, the convs' weights by their int8 round trip (the torch twin of an int8 file)."""
    for conv in convs.values():
        q, scale = quantize_weight(conv.weight.detach())
        conv.weight.copy_((q.float() * scale[:, None, None, None]).to(conv.weight))


def metadata(model: nn.Module, form: str, precision: str, imgsz: tuple[int, int]) -> dict:
    """The metadata written into an export of ``model`` (a SpikeYOLO in the exported form)."""
    cfg = model.config
    return {"names": cfg["names"], "strides": model.head.strides, "imgsz": list(imgsz), "T": cfg["T"],
            "D": cfg["D"], "nc": cfg["nc"], "in_channels": cfg["in_channels"], "precision": precision,
            "config": cfg, "spikeyolo_version": __version__, "form": form}


def parse_metadata(proto, path: str | Path) -> dict:
    """The spikeyolo metadata of a loaded ONNX ``ModelProto``; a file without it (not written by spikeyolo) is
    refused as a :class:`FileFormatError` naming ``path``."""
    props = {p.key: p.value for p in proto.metadata_props}
    missing = [k for k in METADATA_KEYS if k not in props]
    if missing:
        raise FileFormatError(f"{path}: an ONNX file without spikeyolo metadata (lacks {', '.join(missing)}); "
                              f"export it with `spikeyolo export`")
    try:
        meta = {k: json.loads(props[k]) for k in (*METADATA_KEYS, "form") if k in props}
    except json.JSONDecodeError as e:
        raise FileFormatError(f"{path}: its spikeyolo metadata is not valid JSON ({e})") from None
    meta.setdefault("form", "deploy")
    if meta["form"] not in EXPORT_FORMS:
        raise FileFormatError(f"{path}: metadata form {meta['form']!r} is none of {EXPORT_FORMS}")
    return meta


def read_onnx(path: str | Path) -> tuple[bytes, object]:
    """The bytes of an ``.onnx`` file and its parsed ``ModelProto`` (the file is read once); anything that is
    not ONNX is a :class:`FileFormatError` naming the file."""
    onnx, _ = _import_onnx()
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such ONNX file")
    data = path.read_bytes()
    if not data:
        raise FileFormatError(f"{path}: an empty file, not an ONNX model")
    try:
        proto = onnx.load_from_string(data)
    except Exception as e:  # protobuf's DecodeError and friends: the bytes are not an ONNX model
        raise FileFormatError(f"{path}: not an ONNX model ({type(e).__name__}: {str(e)[:120]})") from None
    if not proto.graph.node:
        raise FileFormatError(f"{path}: not an ONNX model (no graph)")
    return data, proto


def read_metadata(path: str | Path) -> dict:
    """The spikeyolo metadata of an export (names, strides, imgsz, T, D, form, ...), without running it."""
    return parse_metadata(read_onnx(path)[1], path)


class OrtModel(nn.Module):
    """A spikeyolo ``.onnx`` export (fused or deploy form) run by ONNX Runtime, called like the torch model:
    ``[B, 3, H, W]`` (or event frames ``[B, T, C, H, W]``) -> ``[B, 4 + nc, anchors]``, at the exported ``imgsz``
    only. The file is read once.

    Carries ``config``, ``names``, ``nc``, ``T``, ``D``, ``imgsz``, ``strides``, ``form`` and ``precision`` from the
    file's metadata.
    """

    def __init__(self, path: str | Path, threads: int | None = None):
        super().__init__()
        _, ort = _import_onnx()
        self.path = Path(path)
        data, proto = read_onnx(self.path)
        meta = parse_metadata(proto, self.path)
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads or torch.get_num_threads()
        try:
            self.session = ort.InferenceSession(data, opts, providers=["CPUExecutionProvider"])
        except Exception as e:  # ONNX Runtime refuses the graph (a damaged or hand-edited file)
            raise FileFormatError(f"{self.path}: ONNX Runtime cannot load it ({str(e)[:200]})") from None
        if meta["spikeyolo_version"] != __version__:
            warnings.warn(f"{self.path} was exported by spikeyolo {meta['spikeyolo_version']}, this is "
                          f"{__version__}; re-export it if its outputs look wrong", stacklevel=2)
        self.config, self.imgsz, self.precision = meta["config"], tuple(meta["imgsz"]), meta["precision"]
        self.names, self.nc, self.T, self.D = meta["names"], meta["nc"], meta["T"], meta["D"]
        self.strides, self.form = meta["strides"], meta["form"]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if tuple(x.shape[-2:]) != self.imgsz:
            h, w = self.imgsz
            raise ValueError(f"{self.path.name} was exported for {h}x{w} inputs, got {x.shape[-2]}x{x.shape[-1]}; "
                             f"use --imgsz {h} or re-export with --imgsz")
        out = self.session.run(None, {"images": x.detach().float().cpu().numpy()})[0]
        return torch.from_numpy(out).to(x.device)
