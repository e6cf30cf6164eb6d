"""Depthwise conv with a fast weight gradient on CPU.

oneDNN computes the weight gradient of a large-kernel depthwise conv slowly on CPU: for SpikeYOLO's 7x7 ones
(SepConv) it takes 15-40x the forward conv, and was the largest single cost of a training step. The same
gradient is itself a grouped convolution, which oneDNN runs fast: for channel c,

    dW[c, i, j] = sum_{n, h, w} x_pad[n, c, h + i, w + j] * dY[n, c, h, w],

so with the (channel, image) pairs as groups, ``x`` as a one-image input and ``dY`` as the kernels, one conv
gives ``dW`` per pair, summed over the images afterwards (in float32). The forward and the input gradient
stay oneDNN's own; :class:`DepthwiseConv2d` is an ``nn.Conv2d`` (same parameters, state dict and hooks) that
takes this path only when it pays off: training on CPU, stride 1, kernels larger than 3x3 (for 3x3 oneDNN's
own weight gradient is as fast).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

FAST_GRAD_MIN_KERNEL = 5  # measured: oneDNN's own weight gradient is fine for 3x3, slow from 7x7 on


def depthwise_weight_grad(x: torch.Tensor, grad_out: torch.Tensor, kernel: tuple[int, int],
                          padding: tuple[int, int]) -> torch.Tensor:
    """Weight gradient ``[C, 1, kh, kw]`` of a stride-1 depthwise conv of ``x [N, C, H, W]`` with output
    gradient ``grad_out [N, C, H', W']``: computed in the dtype of ``x``, summed over N in float32 at least."""
    n, c, h, w = x.shape
    ho, wo = grad_out.shape[-2:]
    pairs = x.transpose(0, 1).reshape(1, c * n, h, w)  # channel-major: group c*N + i is image i's channel c
    kernels = grad_out.transpose(0, 1).reshape(c * n, 1, ho, wo)
    per_pair = F.conv2d(pairs, kernels, padding=padding, groups=c * n)  # [1, C*N, kh, kw]
    return per_pair.view(c, n, *kernel).sum(1, dtype=torch.promote_types(x.dtype, torch.float32)).unsqueeze(1)


class _DepthwiseConvFn(torch.autograd.Function):
    """Stride-1 depthwise conv run in ``dtype``; gradients returned in the dtypes of the inputs."""

    @staticmethod
    def forward(ctx, x, weight, bias, padding, dtype):
        xc, wc = x.to(dtype), weight.to(dtype)
        bc = None if bias is None else bias.to(dtype)
        ctx.save_for_backward(xc, wc)
        ctx.padding, ctx.dtypes = padding, (x.dtype, weight.dtype, None if bias is None else bias.dtype)
        return F.conv2d(xc, wc, bc, 1, padding, 1, x.shape[1])

    @staticmethod
    def backward(ctx, grad):
        xc, wc = ctx.saved_tensors
        x_dtype, w_dtype, b_dtype = ctx.dtypes
        grad = grad.to(xc.dtype)
        gx = gw = gb = None
        if ctx.needs_input_grad[0]:
            gx = torch.ops.aten.convolution_backward(grad, xc, wc, None, [1, 1], list(ctx.padding), [1, 1], False,
                                                     [0, 0], xc.shape[1], [True, False, False])[0].to(x_dtype)
        if ctx.needs_input_grad[1]:
            gw = depthwise_weight_grad(xc, grad, tuple(wc.shape[-2:]), ctx.padding).to(w_dtype)
        if b_dtype is not None and ctx.needs_input_grad[2]:
            gb = grad.sum((0, 2, 3), dtype=torch.promote_types(grad.dtype, torch.float32)).to(b_dtype)
        return gx, gw, gb, None, None


class DepthwiseConv2d(nn.Conv2d):
    """``nn.Conv2d(c, c, k, stride, padding, groups=c)`` whose training backward on CPU uses
    :func:`depthwise_weight_grad` (see the module docstring); everything else is ``nn.Conv2d``'s."""

    def __init__(self, c: int, k: int, stride: int = 1, padding: int = 0, bias: bool = False):
        super().__init__(c, c, k, stride, padding, groups=c, bias=bias)

    def _fast_grad(self, x: torch.Tensor) -> bool:
        return (x.device.type == "cpu" and torch.is_grad_enabled() and self.weight.requires_grad
                and self.stride == (1, 1) and self.dilation == (1, 1) and self.padding_mode == "zeros"
                and isinstance(self.padding, tuple) and min(self.kernel_size) >= FAST_GRAD_MIN_KERNEL
                and not torch.jit.is_tracing() and not torch.compiler.is_compiling())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self._fast_grad(x):
            return super().forward(x)
        if torch.is_autocast_enabled("cpu") and x.dtype != torch.float64:
            dtype = torch.get_autocast_dtype("cpu")  # as autocast runs a conv: every input in its lower precision
        elif x.dtype == self.weight.dtype and not torch.is_autocast_enabled("cpu"):
            dtype = x.dtype
        else:  # what autocast leaves alone, or a dtype mismatch for nn.Conv2d to report
            return super().forward(x)
        with torch.autocast("cpu", enabled=False):
            return _DepthwiseConvFn.apply(x, self.weight, self.bias, self.padding, dtype)
