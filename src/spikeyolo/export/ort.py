"""The deploy form in ONNX Runtime: export (fp32 or int8), metadata, and a module that runs the file.

int8 here means: every conv whose input is an I-LIF output (integers 0..D) runs as ONNX ``ConvInteger`` on the
spikes cast to uint8 (scale 1, zero point 0: exact, no calibration) with int8 weights, symmetric per output
channel, accumulating in int32; the int32 result is scaled back per channel to float32 and the bias added. The
stem (real-valued image), the head's last 1x1 convs (logits) and the inner convs of a factorized chain (their
inputs are real-valued) stay float32. Why not QDQ ``QLinearConv``: it requantizes every conv output to 8 bits,
and the conv output is the next I-LIF's membrane input, whose rounding to 0..D that error would flip.
"""

from __future__ import annotations

import copy
import io
import json
import tempfile
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..nn import int8
from ..nn.units import DeployUnit
from ..utils.runs import atomic_write
from ..utils.version import __version__

METADATA_KEYS = ("names", "strides", "imgsz", "T", "D", "nc", "in_channels", "precision", "config",
                 "spikeyolo_version")


def _import_onnx():
    try:
        import onnx  # optional dependency (pip install "spikeyolo[export]")
        import onnxruntime  # optional dependency
    except ImportError as e:
        raise ImportError(f"the onnxruntime backend needs onnx and onnxruntime ({e.name} is missing): "
                          f"pip install 'spikeyolo[export]', or use backend='torch' (fp32, bf16)") from None
    return onnx, onnxruntime


def spike_fed_convs(dep: nn.Module) -> dict[str, nn.Conv2d]:
    """``{weight name: conv}`` of the first conv of every unit fed by an I-LIF, except the head's last (logit)
    convs; the names are those the ONNX exporter gives the weights."""
    head_last = {id(seq[-1]) for branch in (dep.head.box, dep.head.cls) for seq in branch}
    return {f"{name}.convs.0.weight": m.convs[0] for name, m in dep.named_modules()
            if isinstance(m, DeployUnit) and m.lif is not None and id(m) not in head_last}


def quantize_weight(w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """:func:`spikeyolo.nn.int8.quantize_weight` on numpy arrays: both backends round the weights alike."""
    q, scale = int8.quantize_weight(torch.from_numpy(w))
    return q.numpy(), scale.numpy()


def _int8_conv_nodes(node, w: np.ndarray, bias: np.ndarray | None, D: int):
    """Nodes and initializers replacing one float Conv on spike inputs by Cast(uint8) -> ConvInteger -> scale."""
    from onnx import TensorProto, helper, numpy_helper  # optional dependency, checked by _import_onnx

    q, scale = quantize_weight(w)
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
    if D > 255:
        raise ValueError(f"int8: spikes 0..D must fit uint8, got D={D}")
    return nodes, inits


def quantize_graph(model_proto, convs: dict[str, nn.Conv2d], D: int) -> int:
    """Rewrite, in place, every Conv whose weight input is named in ``convs`` to int8 (weights and bias taken
    from the torch conv, since the exporter may share or fold equal initializers); returns how many."""
    _import_onnx()
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


def export_deployed_onnx(dep: nn.Module, path: str | Path, precision: str = "fp32", imgsz=None, opset: int = 17,
                         check: bool = True) -> dict:
    """Write a float32 torch deploy form (:func:`spikeyolo.deploy.deploy_torch`, not channels-last) as ONNX, fp32
    or int8, with a dynamic batch axis.

    ``imgsz`` defaults to the size in the model config. The file's metadata carries names, strides, imgsz, T, D,
    the model config and the spikeyolo version. With ``check``, ONNX Runtime runs the file on two random inputs
    and ``max_abs_diff`` against the torch deploy form is returned (for int8, against torch with the same int8
    weights dequantized: only float32 summation order differs). ``dep`` is not changed.
    """
    onnx, ort = _import_onnx()
    if precision not in ("fp32", "int8"):
        raise ValueError(f"ONNX export: precision must be fp32 or int8, got {precision!r}")
    cfg = dep.config
    imgsz = imgsz or cfg.get("imgsz", 640)
    h, w = (imgsz, imgsz) if isinstance(imgsz, int) else tuple(imgsz)
    static = cfg["in_channels"] == 3
    shape = (1, cfg["in_channels"], h, w) if static else (1, cfg["T"], cfg["in_channels"], h, w)
    path = Path(path)
    dep = copy.deepcopy(dep).float().cpu().eval()
    buf = io.BytesIO()  # built in memory, written once through a temporary: a full disk never tears a good file
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer/deprecation warnings: shape checks are constant at a fixed size
        torch.onnx.export(dep, (torch.rand(shape),), buf, dynamo=False, opset_version=opset,
                          input_names=["images"], output_names=["output"],
                          dynamic_axes={"images": {0: "batch"}, "output": {0: "batch"}})
    proto = onnx.load_model_from_string(buf.getvalue())
    n_int8 = quantize_graph(proto, spike_fed_convs(dep), cfg["D"]) if precision == "int8" else 0
    meta = {"names": cfg["names"], "strides": dep.head.strides, "imgsz": [h, w], "T": cfg["T"], "D": cfg["D"],
            "nc": cfg["nc"], "in_channels": cfg["in_channels"], "precision": precision, "config": cfg,
            "spikeyolo_version": __version__}
    for k, v in meta.items():
        proto.metadata_props.add(key=k, value=json.dumps(v))
    atomic_write(path, proto.SerializeToString())
    result = {"path": str(path), "precision": precision, "imgsz": [h, w], "int8_convs": n_int8,
              "max_abs_diff": None}
    if check:
        if precision == "int8":
            dequantize_weights_(spike_fed_convs(dep))
        x = torch.rand((2, *shape[1:]))
        got = OrtModel(path)(x)
        with torch.no_grad():
            result["max_abs_diff"] = float((got - dep(x)).abs().max())
    return result


@torch.no_grad()
def dequantize_weights_(convs: dict[str, nn.Conv2d]) -> None:
    """Replace, in place, the convs' weights by their int8 round trip (the torch twin of an int8 file)."""
    for conv in convs.values():
        q, scale = quantize_weight(conv.weight.detach().cpu().numpy())
        conv.weight.copy_(torch.from_numpy(q.astype(np.float32) * scale[:, None, None, None]))


def read_metadata(path: str | Path) -> dict:
    """The spikeyolo metadata of a deploy export (names, strides, imgsz, T, D, ...), without running it."""
    onnx, _ = _import_onnx()
    props = {p.key: p.value for p in onnx.load(str(path), load_external_data=False).metadata_props}
    missing = [k for k in METADATA_KEYS if k not in props]
    if missing:
        raise ValueError(f"{path}: not a spikeyolo deploy export (metadata lacks {', '.join(missing)}); "
                         f"export it with `spikeyolo export --format onnx`")
    return {k: json.loads(props[k]) for k in METADATA_KEYS}


class OrtModel(nn.Module):
    """A deploy-form ONNX file run by ONNX Runtime, called like the torch model: ``[B, 3, H, W]`` (or event
    frames ``[B, T, C, H, W]``) -> ``[B, 4 + nc, anchors]``, at the exported ``imgsz`` only.

    Carries ``config``, ``names``, ``nc``, ``T``, ``D``, ``imgsz`` and ``precision`` from the file's metadata.
    """

    form = "deploy"  # what SpikeYOLO.form reads from its units: an exported file is always the deploy form

    def __init__(self, path: str | Path, threads: int | None = None):
        super().__init__()
        _, ort = _import_onnx()
        self.path = Path(path)
        if not self.path.is_file():
            raise FileNotFoundError(f"{self.path}: no such ONNX file")
        meta = read_metadata(self.path)
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads or torch.get_num_threads()
        self.session = ort.InferenceSession(str(self.path), opts, providers=["CPUExecutionProvider"])
        if meta["spikeyolo_version"] != __version__:
            warnings.warn(f"{self.path} was exported by spikeyolo {meta['spikeyolo_version']}, this is "
                          f"{__version__}; re-export it if its outputs look wrong", stacklevel=2)
        self.config, self.imgsz, self.precision = meta["config"], tuple(meta["imgsz"]), meta["precision"]
        self.names, self.nc, self.T, self.D = meta["names"], meta["nc"], meta["T"], meta["D"]
        self.strides = meta["strides"]

    @classmethod
    def from_deployed(cls, dep: nn.Module, precision: str = "fp32", imgsz=None, path: str | Path | None = None,
                      threads: int | None = None) -> OrtModel:
        """Export a torch deploy form (to ``path``, else a temporary file removed once loaded) and load it."""
        if path is not None:
            export_deployed_onnx(dep, path, precision, imgsz, check=False)
            return cls(path, threads)
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "deploy.onnx"
            export_deployed_onnx(dep, path, precision, imgsz, check=False)
            return cls(path, threads)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if tuple(x.shape[-2:]) != self.imgsz:
            h, w = self.imgsz
            raise ValueError(f"{self.path.name} was exported for {h}x{w} inputs, got {x.shape[-2]}x{x.shape[-1]}; "
                             f"use --imgsz {h} or re-export with --imgsz")
        out = self.session.run(None, {"images": x.detach().float().cpu().numpy()})[0]
        return torch.from_numpy(out).to(x.device)
