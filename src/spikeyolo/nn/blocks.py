"""SpikeYOLO building blocks (Luo et al., ECCV 2024), after the Meta-SpikeFormer conv block (Yao et al., 2024).

All residual additions, up-sampling, concatenation and max-pooling act on real-valued pre-neuron tensors
``[T, B, C, H, W]``; every conv except the stem consumes I-LIF outputs (see ``units.py``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .neuron import NeuronConfig
from .units import ConvBN, RepConvBN, SepRepConvBN, time_distributed


class Stem(ConvBN):
    """The first layer: 7x7 stride-4 conv (with bias) + BN on the real-valued image, no neuron (a MAC layer)."""

    def __init__(self, c1, c2, k=7, s=4, p=2, *, neuron: NeuronConfig):
        super().__init__(c1, c2, k, s, p, conv_bias=True, lif=None)


class Downsample(ConvBN):
    """``I-LIF -> Conv(k, s, p, bias) -> BN`` (the reference keeps a redundant conv bias before BN)."""

    def __init__(self, c1, c2, k=3, s=2, p=1, *, neuron: NeuronConfig):
        super().__init__(c1, c2, k, s, p, conv_bias=True, lif=neuron.build())


class SpikeConv(ConvBN):
    """``I-LIF -> Conv(k, s, pad k//2) -> BN`` (the reference's MS_StandardConv / SpikeConv)."""

    def __init__(self, c1, c2, k=1, s=1, *, neuron: NeuronConfig):
        super().__init__(c1, c2, k, s, lif=neuron.build())


class SepConv(nn.Module):
    """Inverted separable conv: pointwise expand x2, 7x7 depthwise, SepRepConv back to C; a neuron before each."""

    def __init__(self, c, expansion=2, k=7, *, neuron: NeuronConfig):
        super().__init__()
        ch = int(expansion * c)
        self.pw = ConvBN(c, ch, 1, lif=neuron.build())
        self.dw = ConvBN(ch, ch, k, groups=ch, lif=neuron.build())
        self.rep = SepRepConvBN(ch, c, lif=neuron.build())

    def forward(self, x):
        return self.rep(self.dw(self.pw(x)))


class SNNBlock1(nn.Module):
    """SNN-Block-1 (reference ``MS_AllConvBlock``): ``x + SepConv(x)``, then a residual pair of standard 3x3 convs
    ``C -> rC -> C``. Used at the low (high-resolution) stages."""

    def __init__(self, c, ratio=4, k=7, *, neuron: NeuronConfig):
        super().__init__()
        self.sep = SepConv(c, 2, k, neuron=neuron)
        self.conv1 = SpikeConv(c, int(c * ratio), 3, neuron=neuron)
        self.conv2 = SpikeConv(int(c * ratio), c, 3, neuron=neuron)

    def forward(self, x):
        x = x + self.sep(x)
        return x + self.conv2(self.conv1(x))


class SNNBlock2(nn.Module):
    """SNN-Block-2 (reference ``MS_ConvBlock``): ``x + SepConv(x)``, then a residual pair of re-parameterizable
    convs ``C -> rC -> C``. Used at the high (low-resolution) stages."""

    def __init__(self, c, ratio=3, k=7, *, neuron: NeuronConfig):
        super().__init__()
        self.sep = SepConv(c, 2, k, neuron=neuron)
        self.conv1 = RepConvBN(c, int(c * ratio), lif=neuron.build())
        self.conv2 = RepConvBN(int(c * ratio), c, lif=neuron.build())

    def forward(self, x):
        x = x + self.sep(x)
        return x + self.conv2(self.conv1(x))


class SPPF(nn.Module):
    """Spatial pyramid pooling (fast): spiking 1x1 reduce, three chained 5x5 max-pools on the real-valued
    result, concatenation, spiking 1x1 back to c2."""

    def __init__(self, c1, c2, k=5, *, neuron: NeuronConfig):
        super().__init__()
        c_ = c1 // 2
        self.cv1 = SpikeConv(c1, c_, 1, neuron=neuron)
        self.cv2 = SpikeConv(c_ * 4, c2, 1, neuron=neuron)
        self.k = k

    def pool(self, x):
        return time_distributed(lambda t: F.max_pool2d(t, self.k, 1, self.k // 2), x)

    def forward(self, x):
        ys = [self.cv1(x)]
        for _ in range(3):
            ys.append(self.pool(ys[-1]))
        return self.cv2(cat_channels(ys))


class Upsample(nn.Module):
    """Nearest-neighbour up-sampling of H and W only."""

    def __init__(self, scale=2):
        super().__init__()
        self.scale = int(scale)

    def forward(self, x):
        return time_distributed(lambda t: F.interpolate(t, scale_factor=self.scale, mode="nearest"), x)


def cat_channels(xs: list[torch.Tensor]) -> torch.Tensor:
    """Concatenate ``[T, B, C, H, W]`` tensors along C, on their ``[T*B, C, H, W]`` views: that keeps
    channels-last inputs channels-last (a 5-D cat returns them contiguous, and the next conv copies them back)."""
    y = torch.cat([x.flatten(0, 1) for x in xs], 1)
    return y.view(*xs[0].shape[:2], *y.shape[1:])


class Concat(nn.Module):
    """Concatenate ``[T, B, C, H, W]`` tensors along channels."""

    def forward(self, xs):
        return cat_channels(xs)
