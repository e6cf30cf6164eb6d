"""Export the fused form to ONNX (I-LIF becomes Clip + Round; one Conv per neuron), checked with onnxruntime."""

from __future__ import annotations

import io
import warnings
from pathlib import Path

import torch
from torch import nn

from ..forms.deploy import deploy_torch
from ..forms.fuse import fuse
from ..models.yolo import SpikeYOLO
from ..utils.runs import atomic_write
from .ort import export_deployed_onnx


def export_onnx(
    model: SpikeYOLO, path: str | Path, imgsz: int | tuple[int, int] = 640, opset: int = 17, check: bool = True
) -> dict:
    """Write ``model``'s fused form as ONNX with a dynamic batch axis.

    Input ``images``: ``[B, C, H, W]`` (static images, repeated T times inside) for 3-channel models, or
    ``[B, T, C, H, W]`` event frames otherwise; output ``output``: ``[B, 4 + nc, anchors]`` as in eval mode.
    With ``check``, onnxruntime (when installed) runs the file and its output is compared to PyTorch's.
    Returns ``{"path", "max_abs_diff" (None when not checked)}``.
    """
    h, w = (imgsz, imgsz) if isinstance(imgsz, int) else imgsz
    cfg = model.config
    fused = fuse(model).float().cpu()
    static = cfg["in_channels"] == 3
    shape = (1, cfg["in_channels"], h, w) if static else (1, cfg["T"], cfg["in_channels"], h, w)
    example = torch.rand(shape)
    path = Path(path)
    buf = io.BytesIO()  # serialized first, then written through a temporary: a full disk never tears a good file
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", torch.jit.TracerWarning)  # shape checks are constant for a fixed size
        torch.onnx.export(fused, (example,), buf, dynamo=False, opset_version=opset, input_names=["images"],
                          output_names=["output"], dynamic_axes={"images": {0: "batch"}, "output": {0: "batch"}})
    atomic_write(path, buf.getvalue())
    result = {"path": str(path), "max_abs_diff": None}
    if check:
        try:
            import onnxruntime as ort  # optional (pip install spikeyolo[export])
        except ImportError:
            return result
        x = torch.rand((2, *shape[1:]))
        got = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"images": x.numpy()})[0]
        with torch.no_grad():
            result["max_abs_diff"] = float((torch.from_numpy(got) - fused(x)).abs().max())
    return result


def export_deploy(model: nn.Module, path: str | Path, precision: str = "fp32", imgsz=None, opset: int = 17,
                  check: bool = True) -> dict:
    """Write the deploy form of a train-form SpikeYOLO as ONNX (fp32 or int8; see
    :func:`spikeyolo.ort.export_deployed_onnx`) at ``imgsz``, by default the size in the model config."""
    return export_deployed_onnx(deploy_torch(model, "fp32", channels_last=False), path, precision, imgsz, opset,
                                check)
