"""An int8 conv for spike inputs: exact activations, int8 weights, int32 accumulation, float32 output.

Every conv after the stem that is fed by an I-LIF sees integers 0..D, which uint8 holds exactly with scale 1 and
zero point 0, so the only rounding is the weights' (symmetric int8 per output channel, |error| <= scale / 2).
The conv runs as oneDNN's quantized convolution (``torch.ops.onednn.qconv_pointwise``, the kernel PyTorch's X86
Inductor quantizer lowers to) with the int32 sum scaled and biased straight to float32: nothing is requantized to
8 bits, so the next I-LIF's membrane sees the exact sum of the rounded weights. CPU (x86) only.
"""

from __future__ import annotations

import torch
from torch import nn

INT8_MAX = 127  # symmetric: -127..127, so the weight grid is the same on both sides of 0


def int8_available() -> bool:
    """Whether this PyTorch build has oneDNN's quantized conv (x86 CPU builds do)."""
    return torch.backends.mkldnn.is_available() and hasattr(torch.ops.onednn, "qconv_pointwise")


def quantize_weight(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric per-output-channel int8 of a conv weight: ``(int8 weight, float32 scale per channel)``, with
    ``weight ~= q * scale`` (an all-zero channel gets scale 1)."""
    w = weight.detach().double()
    amax = w.abs().amax(dim=tuple(range(1, w.dim())))
    scale = torch.where(amax > 0, amax / INT8_MAX, torch.ones_like(amax))
    q = torch.round(w / scale.view(-1, *[1] * (w.dim() - 1))).clamp_(-INT8_MAX, INT8_MAX)
    return q.to(torch.int8), scale.float()


def bias_shift(weight: torch.Tensor, rounded: torch.Tensor, groups: int, input_mean: torch.Tensor) -> torch.Tensor:
    """The mean output change ``sum_{c,kh,kw} (W - Wq)[o, c, kh, kw] * E[x_c]`` of rounding a conv ``weight`` to
    ``rounded``, given the mean input per channel (float64, per output channel; zero padding ignored)."""
    residual = (weight.double() - rounded.double()).sum((2, 3))  # [Cout, Cin / groups]
    cout, cin_g = residual.shape
    mean = input_mean.double().view(groups, cin_g)[torch.arange(cout) // (cout // groups)]
    return (residual * mean).sum(1)


class Int8SpikeConv(nn.Module):
    """A ``nn.Conv2d`` fed by integer spikes 0..D, run in int8 (see the module docstring).

    Input: float spike counts ``[N, C, H, W]`` (any memory format); output float32 ``[N, C', H', W']``,
    channels-last. ``input_mean`` (the spikes' mean per input channel on calibration images) adds the mean output
    change of the weight rounding back to the bias (:func:`bias_shift`). The int8 weight and scales are buffers.
    oneDNN's packed copy of the weight is made per input shape on first use (packed without the shape, oneDNN
    reorders the weight on every call: 30x slower for a 1024x1024 1x1 conv) and is not copied or saved with the
    module (it is an opaque tensor).
    """

    MAX_PACKED_SHAPES = 8  # input shapes whose packed weights are kept (batch sizes x image sizes in use)

    def __init__(self, conv: nn.Conv2d, input_mean: torch.Tensor | None = None):
        super().__init__()
        if not int8_available():
            raise RuntimeError("int8: this PyTorch build has no oneDNN quantized convolution (x86 CPU builds "
                               "have it); use precision fp32 or bf16, or backend onnxruntime")
        q, scale = quantize_weight(conv.weight)
        self.register_buffer("weight_int8", q)
        self.register_buffer("weight_scale", scale)
        bias = conv.bias.detach().double() if conv.bias is not None else torch.zeros(conv.out_channels).double()
        if input_mean is not None:
            rounded = q.double() * scale.double().view(-1, 1, 1, 1)
            bias = bias + bias_shift(conv.weight, rounded, conv.groups, input_mean)
        self.register_buffer("bias", bias.float())
        self.register_buffer("weight_zero_point", torch.zeros(conv.out_channels, dtype=torch.int64))
        self.stride, self.padding = list(conv.stride), list(conv.padding)
        self.dilation, self.groups = list(conv.dilation), conv.groups
        self._packed: dict[tuple, torch.Tensor] = {}

    def extra_repr(self) -> str:
        o, i, kh, kw = self.weight_int8.shape
        return f"{i * self.groups}, {o}, kernel_size=({kh}, {kw}), stride={tuple(self.stride)}, " \
               f"padding={tuple(self.padding)}, groups={self.groups}, int8 weights per output channel"

    def dequantized_weight(self) -> torch.Tensor:
        """The weight this conv effectively applies (float64): ``int8 * scale``."""
        return self.weight_int8.double() * self.weight_scale.double().view(-1, 1, 1, 1)

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_packed"] = {}  # oneDNN's opaque tensors cannot be copied or pickled; they are re-made on use
        return state

    def packed_weight(self, shape: tuple) -> torch.Tensor:
        packed = self._packed.get(shape)
        if packed is None:
            if len(self._packed) >= self.MAX_PACKED_SHAPES:
                self._packed.clear()
            packed = self._packed[shape] = torch.ops.onednn.qconv_prepack(
                self.weight_int8, self.weight_scale, 1.0, 0, self.stride, self.padding, self.dilation, self.groups,
                list(shape))
        return packed

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        spikes = x.to(torch.uint8, memory_format=torch.channels_last)  # integers 0..D: exact; NHWC for oneDNN
        return torch.ops.onednn.qconv_pointwise(
            spikes, 1.0, 0, self.packed_weight(tuple(x.shape)), self.weight_scale, self.weight_zero_point,
            self.bias, self.stride, self.padding, self.dilation, self.groups, 1.0, 0, torch.float32, "none", [], "")
