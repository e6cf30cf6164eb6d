"""The model ``val`` / ``predict`` / ``spikeyolo.deploy`` run: a checkpoint in the train or deploy form, or a
deploy export in ONNX Runtime."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from .export.ort import OrtModel, read_metadata
from .forms.deploy import check_device_support, check_precision, deploy_torch
from .models.checkpoint import checkpoint_imgsz, load


def deploy(model: nn.Module, precision: str = "fp32", backend: str | None = None, **kwargs) -> nn.Module:
    """The deploy form of a train-form SpikeYOLO: same eval output ``[B, 4 + nc, anchors]``, faster.

    Args:
        precision: ``fp32``, ``bf16`` (torch) or ``int8`` (torch or onnxruntime: int8 weights per output
            channel, spike inputs as uint8 with scale 1 and zero point 0, int32 accumulation; stem and final head
            convs fp32).
        backend: ``torch`` (default; CPU for int8) or ``onnxruntime`` (fp32, int8).
        kwargs: ``channels_last`` and ``calibration`` (torch backend; see :func:`deploy_torch`), ``imgsz``
            (onnxruntime: the export size, default the checkpoint's training size).
    """
    backend = check_precision(precision, backend)
    ref = next(model.parameters(), None)
    check_device_support(precision, ref.device if ref is not None else "cpu")
    if backend == "torch":
        return deploy_torch(model, precision, **kwargs)
    if kwargs.pop("calibration", None) is not None:
        raise ValueError("calibration is applied by the torch backend only; use backend='torch' for int8")
    imgsz = kwargs.pop("imgsz", None)
    return OrtModel.from_deployed(deploy_torch(model, "fp32", channels_last=False), precision, imgsz, **kwargs)


def inference_imgsz(weights: str | Path) -> int:
    """The input size of a ``.onnx`` deploy export, or the size a checkpoint was trained at."""
    if str(weights).endswith(".onnx"):
        return int(read_metadata(weights)["imgsz"][0])
    return checkpoint_imgsz(weights)


def load_for_inference(weights: str | Path, precision: str | None = None, backend: str | None = None,
                       imgsz: int | None = None, device: torch.device | str = "cpu",
                       calibration: torch.Tensor | None = None) -> nn.Module:
    """The model ``val`` / ``predict`` run: a ``.onnx`` deploy export in ONNX Runtime, or a checkpoint in the
    train form (no precision or backend given) or in the deploy form (at ``imgsz`` for onnxruntime;
    ``calibration`` images for int8 in torch, see :func:`deploy_torch`)."""
    device = torch.device(device)
    if str(weights).endswith(".onnx"):
        if backend not in (None, "onnxruntime"):
            raise ValueError(f"{weights}: an ONNX file runs with backend onnxruntime, not {backend}")
        if calibration is not None:
            raise ValueError(f"{weights}: calibration applies when a checkpoint is converted, not to an ONNX file")
        model = OrtModel(weights)
        if precision not in (None, model.precision):
            raise ValueError(f"{weights} was exported in {model.precision}, not {precision}; export again with "
                             f"`spikeyolo export --precision {precision}`")
        if imgsz is not None and (imgsz, imgsz) != model.imgsz:
            raise ValueError(f"{weights} was exported for {model.imgsz[0]}x{model.imgsz[1]} inputs, not {imgsz}; "
                             f"drop --imgsz or export again with --imgsz {imgsz}")
    else:
        model = load(weights)
        if precision is None and backend is None and calibration is None:
            return model.to(device)
        backend = check_precision(precision or "fp32", backend)
        kwargs = {"imgsz": imgsz} if backend == "onnxruntime" else {}
        if calibration is not None:
            kwargs["calibration"] = calibration
        if backend == "onnxruntime" and device.type != "cpu":
            raise ValueError(f"the onnxruntime backend runs on the CPU here, not {device}; use --device cpu or "
                             f"--backend torch")
        return deploy(model.to(device), precision or "fp32", backend, **kwargs)
    if device.type != "cpu":
        raise ValueError(f"{weights}: ONNX files run on the CPU here, not {device}; use --device cpu")
    check_device_support(model.precision, device)
    return model
