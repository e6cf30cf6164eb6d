"""The inference model: what ``val``, ``predict``, event recordings and ``energy`` run, whatever it came from.

:class:`InferenceModel` (the role of ultralytics' AutoBackend) loads any file the project writes or imports, each
read once: a checkpoint ``.pt`` (spikeyolo's, or official BICLab weights through :mod:`spikeyolo.models.official`)
or a fused or deploy ``.onnx`` export; or it wraps an in-memory network in any form (train, fused, spike-driven,
torch deploy form, ONNX Runtime model). Every one is described the same way (``names``, ``nc``, ``stride``,
``imgsz``, ``T``, ``D``, ``form``, ``precision``, ``backend``, ``config``) and has one output contract: in eval mode
``forward(x) -> [B, 4 + nc, anchors]``, cxcywh in input pixels then class scores.

:func:`deploy` (``spikeyolo.deploy``) makes the deploy form of a train-form network.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Protocol, runtime_checkable

import torch
from torch import nn

from .export.onnx import onnxruntime_model
from .export.ort import OrtModel
from .forms.deploy import check_device_support, check_precision, deploy_torch
from .models.checkpoint import load_with_record, trained_imgsz
from .models.yolo import SpikeYOLO
from .nn.units import DeployUnit
from .utils.errors import InputError

DEFAULT_STRIDES = (8, 16, 32)


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
    return onnxruntime_model(model, precision, kwargs.pop("imgsz", None), **kwargs)


@runtime_checkable
class Configured(Protocol):
    """A stand-in network (tests, custom detectors) that describes itself with a plain ``config`` dict in the
    SpikeYOLO layout (at least ``names``; ``T``, ``D``, ``in_channels``, ``imgsz``, ``events`` when known)."""

    config: dict


def _torch_precision(net: nn.Module) -> str:
    """The precision the spike-fed convs of a torch network run in (``fp32`` unless it is a deploy form)."""
    return next((m.precision for m in net.modules() if isinstance(m, DeployUnit) and m.quantizable), "fp32")


Calibration = torch.Tensor | Callable[[int], torch.Tensor] | None
"""int8 calibration images: a ``[N, 3, H, W]`` tensor, or a function of the model's input size giving them."""


class InferenceModel(nn.Module):
    """One network ready for inference, with one description and one output contract (see the module docstring).

    Build it with :meth:`load` (a file), :meth:`of` (an in-memory network) or :meth:`converted` (its deploy form).
    ``net`` is the network that runs (a :class:`SpikeYOLO` in some form, an :class:`OrtModel`, or a stand-in
    with a ``config``); ``record`` holds what a checkpoint recorded besides its weights (``train_args``, ...);
    ``source`` is the file it was read from (None in memory). ``imgsz`` is an int for square inputs, else (h, w).
    """

    def __init__(self, net: nn.Module, imgsz: int | tuple[int, int] | None = None, record: dict | None = None,
                 source: str | Path | None = None):
        super().__init__()
        self.net, self.record, self.source = net, dict(record or {}), source
        if isinstance(net, OrtModel):
            config, strides, form, precision, backend = net.config, net.strides, net.form, net.precision, "onnxruntime"
            h, w = net.imgsz
            exported = h if h == w else (h, w)
            if imgsz is not None and imgsz not in (exported, (h, w)):
                raise InputError(f"{source or 'the ONNX model'} was exported for {h}x{w} inputs, not {imgsz}; drop "
                                 f"--imgsz or export again with --imgsz {imgsz}")
            imgsz = exported
        elif isinstance(net, SpikeYOLO):
            config, strides, form = net.config, net.head.strides, net.form
            precision, backend = _torch_precision(net), "torch"
        elif isinstance(net, Configured):
            config, form, precision, backend = net.config, "custom", "fp32", "torch"
            strides = config.get("strides", DEFAULT_STRIDES)
        else:
            raise TypeError(f"InferenceModel: cannot describe a {type(net).__name__} (not a SpikeYOLO, an OrtModel "
                            f"or a network with a plain `config` dict)")
        self.config, self.form, self.precision, self.backend = config, form, precision, backend
        self.names = list(config["names"])
        self.nc = len(self.names)
        self.stride = tuple(int(s) for s in strides)
        self.T, self.D = int(config.get("T", 1)), int(config.get("D", 1))
        self.in_channels = int(config.get("in_channels", 3))
        self.reg_max = int(config.get("spec", {}).get("reg_max", 16))
        self.imgsz = imgsz if imgsz is not None else trained_imgsz({**self.record, "config": config})

    def extra_repr(self) -> str:
        return f"form={self.form}, precision={self.precision}, backend={self.backend}, imgsz={self.imgsz}"

    @property
    def device(self) -> torch.device:
        ref = next(self.net.parameters(), None)
        return ref.device if ref is not None else torch.device("cpu")

    @property
    def has_maps(self) -> bool:
        """Whether :meth:`forward` can also return the raw head maps (a torch SpikeYOLO: the validator's loss)."""
        return isinstance(self.net, SpikeYOLO)

    def forward(self, x: torch.Tensor, return_maps: bool = False):
        """``[B, 4 + nc, anchors]`` in eval mode; with ``return_maps`` (only where :attr:`has_maps`)
        ``(that, raw head maps)``."""
        if not return_maps:
            return self.net(x)
        if not self.has_maps:
            raise ValueError(f"a {self.form}-form {self.backend} model gives no head maps")
        return self.net(x, return_maps=True)

    @classmethod
    def of(cls, model: nn.Module, imgsz: int | tuple[int, int] | None = None) -> InferenceModel:
        """``model`` itself when it is an InferenceModel (``imgsz`` then must agree or be None), else a new one
        wrapping the in-memory network."""
        if not isinstance(model, InferenceModel):
            return cls(model, imgsz)
        if imgsz is None or imgsz == model.imgsz:
            return model
        return cls(model.net, imgsz, model.record, model.source)  # an export refuses other sizes here

    @classmethod
    def load(cls, weights: str | Path | nn.Module, precision: str | None = None, backend: str | None = None,
             imgsz: int | None = None, device: torch.device | str = "cpu",
             calibration: Calibration = None) -> InferenceModel:
        """Read ``weights`` once: a ``.onnx`` export (run by ONNX Runtime, on the CPU), or a checkpoint in the train
        form (no ``precision`` / ``backend``) or converted to the deploy form (:meth:`converted`). An in-memory
        network (or InferenceModel) is taken as it is (:meth:`of`), moved to ``device`` and converted alike."""
        device = torch.device(device)
        if isinstance(weights, nn.Module):
            return cls.of(weights, imgsz).to(device).converted(precision, backend, calibration)
        if str(weights).lower().endswith(".onnx"):
            if device.type != "cpu":
                raise InputError(f"{weights}: ONNX files run on the CPU here, not {device}; use --device cpu")
            return cls(OrtModel(weights), imgsz, source=weights).converted(precision, backend, calibration)
        net, record = load_with_record(weights)
        return cls(net.to(device), imgsz, record, weights).converted(precision, backend, calibration)

    def converted(self, precision: str | None = None, backend: str | None = None,
                  calibration: Calibration = None) -> InferenceModel:
        """This model in the deploy form of ``precision`` / ``backend`` (:func:`deploy`), on the same device;
        itself when neither is given. An export or a converted form cannot change precision again: only a
        matching request is accepted."""
        if precision is None and backend is None and calibration is None:
            return self
        where = self.source or "the model"
        if self.form != "train":
            want = precision or self.precision
            if calibration is not None:
                raise InputError(f"{where}: calibration applies when a checkpoint is converted, not to a "
                                 f"{self.form}-form {self.backend} model")
            if backend not in (None, self.backend):
                raise InputError(f"{where}: a {self.backend} model cannot run with backend {backend}")
            if want != self.precision:
                raise InputError(f"{where} was exported in {self.precision}, not {precision}; export again with "
                                 f"`spikeyolo export --precision {precision}`")
            check_device_support(self.precision, self.device)
            return self
        precision = precision or "fp32"
        backend = check_precision(precision, backend)
        if backend == "onnxruntime" and self.device.type != "cpu":
            raise InputError(f"the onnxruntime backend runs on the CPU here, not {self.device}; use --device cpu "
                             f"or --backend torch")
        kwargs = {"imgsz": self.imgsz} if backend == "onnxruntime" else {}
        if calibration is not None:
            kwargs["calibration"] = calibration(self.imgsz) if callable(calibration) else calibration
        return InferenceModel(deploy(self.net, precision, backend, **kwargs), self.imgsz, self.record, self.source)
