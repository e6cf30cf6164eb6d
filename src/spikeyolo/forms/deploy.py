"""Train form -> deploy form in torch: the fastest form for inference, in fp32, bf16 or int8.

Each unit converts itself (:meth:`spikeyolo.nn.units.SpikeUnit.deploy`); this module walks the model and picks
the precision of each unit. The ONNX Runtime backend is reached through :func:`spikeyolo.inference.deploy`. See
docs/deploy.md for which op runs in which precision.
"""

from __future__ import annotations

import copy
import warnings

import torch
from torch import nn

from ..nn.units import SpikeUnit
from .calibrate import spike_means
from .fuse import replace_modules

PRECISIONS = ("fp32", "bf16", "int8")
BACKENDS = ("torch", "onnxruntime")
SUPPORTED = {("fp32", "torch"), ("bf16", "torch"), ("int8", "torch"), ("fp32", "onnxruntime"),
             ("int8", "onnxruntime")}


def check_precision(precision: str, backend: str | None) -> str:
    """The backend to use for ``precision`` (``None``: torch); one clear error when the pair is not supported,
    naming the pairs that are."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    if backend is None:
        backend = "torch"
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if (precision, backend) not in SUPPORTED:
        works = ", ".join(f"{p}+{b}" for p, b in sorted(SUPPORTED))
        raise ValueError(f"precision {precision} is not available with backend {backend}; supported: {works}")
    return backend


def check_uint8_spikes(D: int) -> None:
    """int8 (torch or ONNX) casts the spikes 0..D to uint8: refuse a D that does not fit."""
    if D > 255:
        raise ValueError(f"int8: spikes 0..D must fit uint8, but D = {D}; use precision fp32 or bf16")


def cpu_has(flag: str) -> bool:
    """Whether /proc/cpuinfo lists an instruction-set flag (False where it cannot be read)."""
    try:
        with open("/proc/cpuinfo") as f:
            return any(flag in line.split() for line in f if line.startswith("flags"))
    except OSError:
        return False


# instruction-set flags that run each precision at speed on x86 (names as in /proc/cpuinfo)
CPU_FLAGS = {"bf16": ("avx512_bf16", "amx_bf16"), "int8": ("avx512_vnni", "avx_vnni", "amx_int8")}


def check_device_support(precision: str, device: torch.device | str = "cpu") -> None:
    """Refuse what the device cannot run; warn (one line) when it runs without the instructions that make it fast."""
    device = torch.device(device)
    if precision == "bf16" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise RuntimeError(f"bf16: {torch.cuda.get_device_name(device)} has no bfloat16 support; use fp32")
    if precision == "int8" and device.type != "cpu":
        raise RuntimeError(f"int8 runs on the CPU (oneDNN's quantized conv), not on {device}; use bf16 or fp32 "
                           f"there, or --device cpu")
    flags = CPU_FLAGS.get(precision)
    if device.type == "cpu" and flags and not any(cpu_has(f) for f in flags):
        warnings.warn(f"{precision}: this CPU lists none of {', '.join(flags)}; it runs, but likely slower "
                      f"than fp32", stacklevel=3)


def deploy_torch(model: nn.Module, precision: str = "fp32", channels_last: bool = True,
                 calibration=None) -> nn.Module:
    """A deploy-form copy of a train-form model (eval mode, torch backend); the original is untouched.

    BatchNorm is folded everywhere; each unit keeps its factorized chain unless the fused conv needs fewer MACs.
    ``bf16`` / ``int8``: every unit fed by spikes runs in that precision (:class:`~spikeyolo.nn.units.DeployUnit`
    says which of its convs); the stem (real-valued image), the head's last 1x1 convs (box-bin and class
    logits), every I-LIF and the box decoding stay float32. ``channels_last`` (default on: oneDNN runs every
    precision faster NHWC, fp32 too) stores conv inputs NHWC. ``calibration`` (int8 only): images (a
    ``[N, 3, H, W]`` tensor in [0, 1] or an iterable of them) whose mean spikes correct each int8 conv's bias
    for its weight rounding (:mod:`spikeyolo.calibrate`).
    """
    if precision not in PRECISIONS:
        raise ValueError(f"deploy_torch: precision must be one of {PRECISIONS}, got {precision!r}")
    if precision == "int8":
        check_uint8_spikes(model.config["D"])
    if calibration is not None and precision != "int8":
        raise ValueError(f"calibration corrects int8 weight rounding; precision {precision} takes none")
    means = spike_means(deploy_torch(model), calibration) if calibration is not None else {}
    dep = copy.deepcopy(model).eval()
    name_of = {id(m): name for name, m in dep.named_modules()}

    def convert(unit: SpikeUnit) -> nn.Module:  # SpikeUnit.quantizable: the rule the ONNX int8 rewrite reads too
        return unit.deploy(precision if unit.quantizable else "fp32", channels_last, means.get(name_of[id(unit)]))

    if replace_modules(dep, SpikeUnit, convert) == 0:
        raise ValueError("deploy: the model has no train-form units (already fused, deployed or spike-driven?)")
    dep.precision = precision
    return dep
