"""Spiking conv units: one I-LIF followed by a purely linear chain (convs and BatchNorms).

Every parameterised part of SpikeYOLO is such a unit, so the three execution forms differ only here:

- train form: :class:`ConvBN`, :class:`ConvBias`, :class:`SepRepConvBN`, :class:`RepConvBN` (multi-branch,
  BatchNorm kept);
- fused form: :class:`FusedUnit`, one ``nn.Conv2d`` with bias (``unit.fuse()``);
- spike-driven form: :class:`SpikeDrivenUnit`, the same conv fed D binary virtual timesteps;
- deploy form: :class:`DeployUnit`, BN folded, re-parameterized only where that does not raise MACs
  (``unit.deploy()``; RepConv keeps its 1x1 -> dw3x3 -> 1x1 chain), in fp32, bf16 or int8.

A unit maps ``[T, B, C, H, W] -> [T, B, C', H', W']``; convs run on ``x.flatten(0, 1)``, so BatchNorm
statistics are shared over T and B as in the reference. Op order is I-LIF -> conv -> BN (pre-activation).
Fusion maths is done in float64 and cast back, so fused weights are as exact as the dtype allows.
"""

from __future__ import annotations

import torch
from torch import nn

from .depthwise import DepthwiseConv2d
from .int8 import Int8SpikeConv
from .neuron import ILIF

BN_EPS, BN_MOMENTUM = 1e-3, 0.03  # the reference's (ultralytics') BatchNorm settings
DEPLOY_PRECISIONS = ("fp32", "bf16", "int8")


def batchnorm(c: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(c, eps=BN_EPS, momentum=BN_MOMENTUM)


def bn_affine(bn: nn.BatchNorm2d) -> tuple[torch.Tensor, torch.Tensor]:
    """Eval-mode BatchNorm as ``y = a * x + b`` per channel (float64)."""
    a = bn.weight.double() / torch.sqrt(bn.running_var.double() + bn.eps)
    return a, bn.bias.double() - bn.running_mean.double() * a


def time_distributed(fn, x: torch.Tensor) -> torch.Tensor:
    """Apply a 4-D op to a ``[T, B, ...]`` tensor by merging T into the batch (a view, no copy)."""
    y = fn(x.flatten(0, 1))
    return y.view(x.shape[0], x.shape[1], *y.shape[1:])


class BNAndPad(nn.Module):
    """BatchNorm, then pad by ``pad`` pixels with the value BN(0) (from running statistics, as the reference).

    Padding with BN(0) instead of 0 makes ``BN -> conv`` equal to ``conv`` on the zero-padded input, which is
    what lets the following unpadded depthwise conv fold into one padded conv (the DBB/RepVGG trick).
    """

    def __init__(self, c: int, pad: int = 1):
        super().__init__()
        self.bn, self.pad = batchnorm(c), pad

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.bn(x)
        if self.pad == 0:
            return y
        p = self.pad
        with torch.no_grad():  # the pad value BN(0) is a constant to autograd, as in the reference
            fill = bn_affine(self.bn)[1].to(y.dtype)
        n, c, h, w = y.shape
        out = fill.view(1, c, 1, 1).expand(n, c, h + 2 * p, w + 2 * p).contiguous()
        out[..., p:-p, p:-p] = y
        return out


class SpikeUnit(nn.Module):
    """Base: optional I-LIF, then a linear map on ``[N, C, H, W]`` given by :meth:`linear`."""

    logits = False  # the detection head's last convs (ConvBias) say True

    def __init__(self, lif: ILIF | None):
        super().__init__()
        self.lif = lif

    @property
    def quantizable(self) -> bool:
        """The one rule every deploy backend reads: a unit's first conv may run in bf16 / int8 when it is fed by
        I-LIF spikes (integers 0..D, exact in both) and does not produce logits (kept float32 for the scores);
        the stem (real-valued image) and the head's last 1x1 convs stay float32."""
        return self.lif is not None and not self.logits

    def linear(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.lif is not None:
            x = self.lif(x)
        return time_distributed(self.linear, x)

    def fused_kernel(self) -> tuple[torch.Tensor, torch.Tensor, dict]:
        """(weight, bias, conv kwargs) of the single conv equal to :meth:`linear` in eval mode (float64)."""
        raise NotImplementedError

    def fuse(self) -> FusedUnit:
        return FusedUnit(self.lif, self._make_conv(*self.fused_kernel()))

    def chain_kernels(self) -> list[tuple[torch.Tensor, torch.Tensor | None, dict]]:
        """The linear chain with every BN folded but not re-parameterized: ``(weight, bias or None, kwargs)`` per
        conv, float64. Units whose chain is one conv return the fused kernel."""
        return [self.fused_kernel()]

    def deploy(self, precision: str = "fp32", channels_last: bool = False,
               input_mean: torch.Tensor | None = None) -> DeployUnit:
        """Deploy form in ``precision`` (:data:`DEPLOY_PRECISIONS`): the BN-folded chain or the single fused
        conv, whichever needs fewer MACs per output pixel (every conv of a chain keeps the spatial size, so
        per-pixel MACs compare the two exactly)."""
        chain, fused = self.chain_kernels(), [self.fused_kernel()]
        best = chain if kernels_macs(chain) < kernels_macs(fused) else fused
        convs = nn.Sequential(*(self._make_conv(*k) for k in best))
        return DeployUnit(self.lif, convs, precision, channels_last, input_mean, quantizable=self.quantizable)

    def _make_conv(self, w: torch.Tensor, b: torch.Tensor | None, kw: dict) -> nn.Conv2d:
        ref = next(self.parameters())
        conv = nn.Conv2d(w.shape[1] * kw["groups"], w.shape[0], w.shape[-1], bias=b is not None, **kw)
        conv.to(device=ref.device, dtype=ref.dtype)
        with torch.no_grad():
            conv.weight.copy_(w)
            if b is not None:
                conv.bias.copy_(b)
        return conv


def kernels_macs(kernels: list[tuple[torch.Tensor, torch.Tensor | None, dict]]) -> int:
    """Multiply-accumulates per output pixel of a conv chain (weights ``[Cout, Cin/groups, k, k]``)."""
    return sum(w.numel() for w, _, _ in kernels)


def _conv_kwargs(conv: nn.Conv2d) -> dict:
    return dict(stride=conv.stride, padding=conv.padding, groups=conv.groups)


def _fold_bn(w: torch.Tensor, b: torch.Tensor, bn: nn.BatchNorm2d) -> tuple[torch.Tensor, torch.Tensor]:
    a, c = bn_affine(bn)
    return w * a.view(-1, 1, 1, 1), b * a + c


class ConvBN(SpikeUnit):
    """``[I-LIF] -> Conv(k, s, p, groups[, bias]) -> BN``.

    The stem (no neuron, conv with bias), the downsampling layers (conv with bias, as the reference), the
    standard and SPPF/head convs, and the first two convs of SepConv are all this unit.
    """

    def __init__(self, c1, c2, k=1, s=1, p=None, groups=1, conv_bias=False, lif: ILIF | None = None):
        super().__init__(lif)
        p = k // 2 if p is None else p
        if groups > 1 and groups == c1 == c2:  # SepConv's 7x7: a faster weight gradient on CPU
            self.conv = DepthwiseConv2d(c1, k, s, p, bias=conv_bias)
        else:
            self.conv = nn.Conv2d(c1, c2, k, s, p, groups=groups, bias=conv_bias)
        self.bn = batchnorm(c2)

    def linear(self, x):
        return self.bn(self.conv(x))

    def fused_kernel(self):
        w = self.conv.weight.double()
        b = self.conv.bias.double() if self.conv.bias is not None else w.new_zeros(w.shape[0])
        return *_fold_bn(w, b, self.bn), _conv_kwargs(self.conv)


class ConvBias(SpikeUnit):
    """``I-LIF -> Conv(k, bias)`` without BN: the last convs of the detection head."""

    logits = True

    def __init__(self, c1, c2, k=1, lif: ILIF | None = None):
        super().__init__(lif)
        self.conv = nn.Conv2d(c1, c2, k, 1, k // 2, bias=True)

    def linear(self, x):
        return self.conv(x)

    def fused_kernel(self):
        return self.conv.weight.double().clone(), self.conv.bias.double().clone(), _conv_kwargs(self.conv)


def _dw3x3_after_1x1(pw: torch.Tensor, pw_bias: torch.Tensor, dw: torch.Tensor):
    """Compose a 1x1 conv (``pw [M, Cin]``, bias ``[M]``, constant also on the padding) with an unpadded
    depthwise 3x3 (``dw [M, 3, 3]``): one 3x3 conv ``[M, Cin, 3, 3]`` on the zero-padded input."""
    return pw[:, :, None, None] * dw[:, None], pw_bias * dw.sum((1, 2))


class SepRepConvBN(SpikeUnit):
    """``I-LIF -> BNAndPad(c1) -> 1x1 (c1 -> c2) -> 3x3 depthwise (c2, no pad) -> BN``: the last part of SepConv.

    Folds into one dense 3x3 conv ``c1 -> c2`` with padding 1.
    """

    def __init__(self, c1, c2, lif: ILIF | None = None):
        super().__init__(lif)
        self.bnpad = BNAndPad(c1, 1)
        self.pw = nn.Conv2d(c1, c2, 1, bias=False)
        self.dw = nn.Conv2d(c2, c2, 3, 1, 0, groups=c2, bias=False)
        self.bn = batchnorm(c2)

    def linear(self, x):
        return self.bn(self.dw(self.pw(self.bnpad(x))))

    def fused_kernel(self):
        a, c = bn_affine(self.bnpad.bn)
        pw = self.pw.weight.double()[:, :, 0, 0]
        w, b = _dw3x3_after_1x1(pw * a, pw @ c, self.dw.weight.double()[:, 0])
        return *_fold_bn(w, b, self.bn), dict(stride=1, padding=1, groups=1)

    def chain_kernels(self):
        # BN -> 1x1 is a 1x1 with bias pw @ c, also on the BN(0) padding; a constant border through the unpadded
        # depthwise 3x3 equals zero padding plus (pw @ c) * sum(dw) on the output, so that bias moves past it
        a, c = bn_affine(self.bnpad.bn)
        pw = self.pw.weight.double()
        dw = self.dw.weight.double()
        w, b = _fold_bn(dw, (pw[:, :, 0, 0] @ c) * dw.sum((1, 2, 3)), self.bn)
        return [(pw * a.view(1, -1, 1, 1), None, dict(stride=1, padding=0, groups=1)),
                (w, b, dict(stride=1, padding=1, groups=dw.shape[0]))]


class RepConvBN(SpikeUnit):
    """``I-LIF -> 1x1 (c1 -> c1) -> BNAndPad(c1) -> 3x3 dw (no pad) -> 1x1 (c1 -> c2) -> BN -> BN``.

    The reference's RepConv followed by the block's own BN (two BNs in a row). Folds into one dense 3x3 conv.
    """

    def __init__(self, c1, c2, lif: ILIF | None = None):
        super().__init__(lif)
        self.pw1 = nn.Conv2d(c1, c1, 1, bias=False)
        self.bnpad = BNAndPad(c1, 1)
        self.dw = nn.Conv2d(c1, c1, 3, 1, 0, groups=c1, bias=False)
        self.pw2 = nn.Conv2d(c1, c2, 1, bias=False)
        self.bn_inner = batchnorm(c2)
        self.bn = batchnorm(c2)

    def linear(self, x):
        return self.bn(self.bn_inner(self.pw2(self.dw(self.bnpad(self.pw1(x))))))

    def fused_kernel(self):
        a, c = bn_affine(self.bnpad.bn)
        pw1 = self.pw1.weight.double()[:, :, 0, 0] * a[:, None]  # BN(pw1 x) = a * (pw1 x) + c
        w, b = _dw3x3_after_1x1(pw1, c, self.dw.weight.double()[:, 0])
        pw2 = self.pw2.weight.double()[:, :, 0, 0]
        w, b = torch.einsum("om,mikl->oikl", pw2, w), pw2 @ b
        w, b = _fold_bn(w, b, self.bn_inner)
        return *_fold_bn(w, b, self.bn), dict(stride=1, padding=1, groups=1)

    def chain_kernels(self):
        a, c = bn_affine(self.bnpad.bn)  # BN(pw1 x) with BN(0) = c on the border: see SepRepConvBN.chain_kernels
        pw1 = self.pw1.weight.double() * a.view(-1, 1, 1, 1)
        dw = self.dw.weight.double()
        pw2, pw2_bias = _fold_bn(*_fold_bn(self.pw2.weight.double(), c.new_zeros(self.pw2.out_channels),
                                           self.bn_inner), self.bn)
        dw_bias = c * dw.sum((1, 2, 3))
        return [(pw1, None, dict(stride=1, padding=0, groups=1)),
                (dw, dw_bias, dict(stride=1, padding=1, groups=dw.shape[0])),
                (pw2, pw2_bias, dict(stride=1, padding=0, groups=1))]


class FusedUnit(nn.Module):
    """Fused form: ``[I-LIF] -> Conv(bias)``."""

    def __init__(self, lif: ILIF | None, conv: nn.Conv2d):
        super().__init__()
        self.lif, self.conv = lif, conv

    def forward(self, x):
        if self.lif is not None:
            x = self.lif(x)
        return time_distributed(self.conv, x)


class DeployUnit(nn.Module):
    """Deploy form: ``[I-LIF] -> convs`` (one conv or a BN-folded chain) in ``precision``; output float32.

    - ``fp32``: the convs as they are.
    - ``bf16``: the spikes 0..D are cast to bfloat16 exactly and the chain runs in bf16 (oneDNN / cuDNN
      accumulate in float32 and write bf16); the last conv's bias is added in float32 while casting back, so
      a large folded bias is not rounded to bf16.
    - ``int8``: the first conv (fed by the spikes) is an :class:`Int8SpikeConv` (exact uint8 inputs, int8
      weights, float32 output; ``input_mean`` from calibration corrects its bias); the chain's inner convs,
      whose inputs are real-valued, stay float32.

    Residual sums and the next I-LIF's membrane stay float32. ``channels_last`` keeps the conv inputs NHWC,
    which oneDNN runs faster.
    """

    def __init__(self, lif: ILIF | None, convs: nn.Sequential, precision: str = "fp32",
                 channels_last: bool = False, input_mean: torch.Tensor | None = None, *, quantizable: bool = False):
        super().__init__()
        if precision not in DEPLOY_PRECISIONS:
            raise ValueError(f"DeployUnit: precision must be one of {DEPLOY_PRECISIONS}, got {precision!r}")
        if precision != "fp32" and not quantizable:
            raise ValueError(f"DeployUnit: precision {precision} needs a spike-fed, non-logit unit (quantizable)")
        self.lif, self.precision = lif, precision
        self.quantizable = quantizable  # SpikeUnit.quantizable of the unit it came from: which backends may lower
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        self.register_buffer("bias", None)  # bf16: the last conv's bias, kept float32
        if precision == "bf16":
            last = convs[-1]
            if last.bias is not None:
                self.bias = last.bias.detach().float().clone()
                last.bias = None
            convs.to(dtype=torch.bfloat16)
        elif precision == "int8":
            convs[0] = Int8SpikeConv(convs[0], input_mean)
        self.convs = convs.to(memory_format=self.memory_format)

    def forward(self, x):
        if self.lif is not None:
            x = self.lif(x)
        n, flat = x.shape[:2], x.flatten(0, 1)
        if self.precision == "bf16":  # spikes 0..D are exact in bf16
            flat = flat.to(torch.bfloat16)
        if self.memory_format is torch.channels_last and self.precision != "int8":  # int8: done with the cast
            flat = flat.contiguous(memory_format=torch.channels_last)
        y = self.convs(flat)
        if self.bias is not None:
            y = y + self.bias.view(1, -1, 1, 1)  # bf16 + float32 bias -> float32 in one pass
        elif y.dtype != x.dtype:
            y = y.to(x.dtype)
        return y.view(*n, *y.shape[1:])


class SpikeDrivenUnit(nn.Module):
    """Spike-driven form: ``I-LIF`` counts expanded into D binary virtual timesteps, a bias-free conv on the
    binary slots, the D partial sums accumulated per real timestep, and the bias added once per real timestep.

    Virtual steps are time-major (slot ``t*D + d``) and thermometer coded: slot d of step t is ``1[S_t > d]``.
    The conv stays an ``nn.Conv2d`` so hooks, op counters and exporters see it.
    """

    def __init__(self, lif: ILIF, conv: nn.Conv2d):
        super().__init__()
        self.lif = lif
        self.conv = nn.Conv2d(
            conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding,
            groups=conv.groups, bias=False,
        ).to(device=conv.weight.device, dtype=conv.weight.dtype)
        with torch.no_grad():
            self.conv.weight.copy_(conv.weight)
        self.bias = nn.Parameter(conv.bias.detach().clone())

    def forward(self, x):
        counts = self.lif(x)  # [T, B, C, H, W], integers 0..D
        T, B = counts.shape[:2]
        slots = expand_to_binary(counts, self.lif.D)  # [T*D, B, C, H, W], 0/1
        y = self.conv(slots.flatten(0, 1))
        y = y.view(T, self.lif.D, B, *y.shape[1:]).sum(1)  # accumulate the virtual steps of each real step
        return y + self.bias.view(1, 1, -1, 1, 1)


def expand_to_binary(counts: torch.Tensor, D: int) -> torch.Tensor:
    """``[T, ...]`` integers 0..D -> ``[T*D, ...]`` binary thermometer code, time-major."""
    levels = torch.arange(D, device=counts.device, dtype=counts.dtype).view(1, D, *[1] * (counts.dim() - 1))
    return (counts.unsqueeze(1) > levels).to(counts.dtype).flatten(0, 1)


# Each conversion (fuse, deploy, to_spike_driven) replaces the units of a network, so the units it is built of
# say its form. A spike-driven network keeps its stem as a FusedUnit: the kinds are looked for in this order.
FORM_OF_UNIT = ((SpikeDrivenUnit, "spike-driven"), (DeployUnit, "deploy"), (FusedUnit, "fused"), (SpikeUnit, "train"))
FORMS = tuple(form for _, form in FORM_OF_UNIT)


def form_of(model: nn.Module) -> str:
    """The form of a network (one of :data:`FORMS`), read from the units it is built of."""
    kinds = {type(m) for m in model.modules()}
    for kind, form in FORM_OF_UNIT:
        if any(issubclass(k, kind) for k in kinds):
            return form
    raise ValueError(f"{type(model).__name__} holds no spiking unit of any form")
