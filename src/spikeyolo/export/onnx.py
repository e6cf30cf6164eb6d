"""The one exporter: a train-form SpikeYOLO written as a file, by format name (:data:`EXPORTERS`).

ONNX (:func:`export_onnx`) writes either form, with the same set-up, metadata and parity check:

- ``fused`` (default): one Conv per neuron, I-LIF as Clip + Round (for hardware mapping); fp32.
- ``deploy``: the deploy form (BN-folded chains where they need fewer MACs), fp32 or int8 (spike-fed convs as
  ``ConvInteger``, see :mod:`spikeyolo.export.ort`); the fast file for ``val`` / ``predict``.

Both carry the metadata :class:`spikeyolo.export.ort.OrtModel` and :class:`spikeyolo.inference.InferenceModel`
read back (names, strides, imgsz, T, D, form, precision, config, version).
"""

from __future__ import annotations

import io
import json
import tempfile
import warnings
from pathlib import Path

import torch
from torch import nn

from ..forms.deploy import deploy_torch
from ..forms.fuse import fuse
from ..models.yolo import SpikeYOLO
from ..utils.errors import InputError
from ..utils.runs import atomic_write
from .ort import EXPORT_FORMS, OrtModel, _import_onnx, dequantize_weights_, metadata, quantize_graph, spike_fed_convs

ONNX_PRECISIONS = {"fused": ("fp32",), "deploy": ("fp32", "int8")}


def _exported_net(model: SpikeYOLO, form: str, precision: str) -> nn.Module:
    """The float32 CPU torch network whose graph is written (``model`` is not changed)."""
    if form not in EXPORT_FORMS:
        raise InputError(f"ONNX export: form must be one of {EXPORT_FORMS}, got {form!r}")
    if precision not in ONNX_PRECISIONS[form]:
        raise InputError(f"ONNX export: the {form} form is written in {' or '.join(ONNX_PRECISIONS[form])}, "
                         f"not {precision!r}")
    if not isinstance(model, SpikeYOLO) or model.form != "train":
        raise InputError("ONNX export needs a train-form SpikeYOLO (a loaded checkpoint); the exported form is "
                         "made from it")
    net = fuse(model) if form == "fused" else deploy_torch(model, "fp32", channels_last=False)
    return net.float().cpu().eval()


def export_onnx(model: SpikeYOLO, path: str | Path, imgsz: int | tuple[int, int] | None = None, opset: int = 17,
                check: bool = True, *, form: str = "fused", precision: str = "fp32") -> dict:
    """Write ``model`` (train form) as ONNX in ``form`` and ``precision`` with a dynamic batch axis.

    Input ``images``: ``[B, C, H, W]`` (static images, repeated T times inside) for 3-channel models, or
    ``[B, T, C, H, W]`` event frames otherwise; output ``output``: ``[B, 4 + nc, anchors]`` as in eval mode.
    ``imgsz`` defaults to the size in the model config. With ``check`` (and onnxruntime installed) the file runs
    on two random inputs and ``max_abs_diff`` against the torch network is returned (int8: against torch with
    the same int8 weights dequantized, so only float32 summation order differs). Returns ``{"path", "form",
    "precision", "imgsz", "int8_convs", "max_abs_diff" (None when not checked)}``.
    """
    onnx, _ = _import_onnx()
    net = _exported_net(model, form, precision)
    cfg = model.config
    imgsz = imgsz or cfg.get("imgsz", 640)
    h, w = (imgsz, imgsz) if isinstance(imgsz, int) else tuple(imgsz)
    shape = (1, cfg["in_channels"], h, w) if cfg["in_channels"] == 3 else (1, cfg["T"], cfg["in_channels"], h, w)
    path, buf = Path(path), io.BytesIO()  # the graph is built in memory and written once, complete
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer/deprecation warnings: shape checks are constant at a fixed size
        torch.onnx.export(net, (torch.rand(shape),), buf, dynamo=False, opset_version=opset,
                          input_names=["images"], output_names=["output"],
                          dynamic_axes={"images": {0: "batch"}, "output": {0: "batch"}})
    proto = onnx.load_model_from_string(buf.getvalue())
    convs = spike_fed_convs(net) if precision == "int8" else {}
    n_int8 = quantize_graph(proto, convs, cfg["D"]) if convs else 0
    for k, v in metadata(net, form, precision, (h, w)).items():
        proto.metadata_props.add(key=k, value=json.dumps(v))
    atomic_write(path, proto.SerializeToString())  # a full disk never tears a good file
    result = {"path": str(path), "form": form, "precision": precision, "imgsz": [h, w], "int8_convs": n_int8,
              "max_abs_diff": None}
    if check:
        dequantize_weights_(convs)
        x = torch.rand((2, *shape[1:]))
        with torch.no_grad():
            result["max_abs_diff"] = float((OrtModel(path)(x) - net(x)).abs().max())
    return result


def onnxruntime_model(model: SpikeYOLO, precision: str = "fp32", imgsz=None, path: str | Path | None = None,
                      threads: int | None = None) -> OrtModel:
    """The deploy form of ``model`` in ONNX Runtime: exported (to ``path``, else a temporary file removed once
    loaded) and loaded back."""
    if path is not None:
        export_onnx(model, path, imgsz, check=False, form="deploy", precision=precision)
        return OrtModel(path, threads)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "deploy.onnx"
        export_onnx(model, path, imgsz, check=False, form="deploy", precision=precision)
        return OrtModel(path, threads)


EXPORTERS = {"onnx": export_onnx}
"""Format name -> exporter ``(model, path, imgsz=..., ...) -> dict``: what :func:`export` dispatches to. The
integer-only export joins here as ``"integer": export_integer`` (``from .integer import export_integer`` at the
top of this module) where export/integer.py exists."""


def export(model: SpikeYOLO, path: str | Path, format: str = "onnx", **kwargs) -> dict:
    """Write a train-form ``model`` to ``path`` in ``format`` (:data:`EXPORTERS`); ``kwargs`` go to that
    format's exporter (ONNX: ``imgsz``, ``opset``, ``check``, ``form``, ``precision``)."""
    if format not in EXPORTERS:
        raise InputError(f"export: format must be one of {tuple(EXPORTERS)}, got {format!r}")
    return EXPORTERS[format](model, path, **kwargs)
