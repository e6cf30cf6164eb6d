"""Decoupled anchor-free detection head with distribution focal loss bins (YOLOv8 style), spiking convs."""

from __future__ import annotations

import math

import torch
from torch import nn

from ..utils.boxes import dist2bbox, make_anchors
from .blocks import SpikeConv
from .neuron import NeuronConfig
from .units import ConvBias


class DFL(nn.Module):
    """Distribution focal loss decoding: ``[B, 4*reg_max, A]`` bin logits -> ``[B, 4, A]`` expected distances.

    The bin values 0..reg_max-1 are a frozen parameter, as in the reference, so parameter counts match it.
    """

    def __init__(self, reg_max: int = 16):
        super().__init__()
        self.bins = nn.Parameter(torch.arange(reg_max, dtype=torch.float32), requires_grad=False)

    def forward(self, logits: torch.Tensor) -> torch.Tensor:
        B, _, A = logits.shape
        probs = logits.view(B, 4, self.bins.numel(), A).softmax(2)
        return torch.einsum("bkra,r->bka", probs, self.bins.to(probs.dtype))


class Detect(nn.Module):
    """Per level: a box branch ``SpikeConv3x3 -> SpikeConv3x3 -> Conv1x1(4*reg_max)`` and a class branch
    ``SpikeConv3x3 -> SpikeConv3x3 -> Conv1x1(nc)``. The time axis is averaged here, after the last convs.

    Train mode returns the raw maps ``[B, 4*reg_max + nc, H_i, W_i]``; eval mode decodes them to
    ``[B, 4 + nc, A]`` (cxcywh in input pixels, sigmoid class scores), or returns ``(decoded, maps)`` when called
    with ``return_maps=True`` (the validator's loss needs the maps).
    """

    def __init__(self, nc: int, ch: list[int], strides: list[int], reg_max: int = 16, *, neuron: NeuronConfig):
        super().__init__()
        self.nc, self.reg_max, self.no = nc, reg_max, nc + 4 * reg_max
        self.strides = [int(s) for s in strides]
        c2, c3 = max(16, ch[0] // 4, 4 * reg_max), max(ch[0], min(nc, 100))
        self.box = nn.ModuleList(
            nn.Sequential(SpikeConv(c, c2, 3, neuron=neuron), SpikeConv(c2, c2, 3, neuron=neuron),
                          ConvBias(c2, 4 * reg_max, 1, lif=neuron.build()))
            for c in ch
        )
        self.cls = nn.ModuleList(
            nn.Sequential(SpikeConv(c, c3, 3, neuron=neuron), SpikeConv(c3, c3, 3, neuron=neuron),
                          ConvBias(c3, nc, 1, lif=neuron.build()))
            for c in ch
        )
        self.dfl = DFL(reg_max)
        self._anchor_cache: tuple | None = None

    @property
    def stride(self) -> torch.Tensor:
        return torch.tensor(self.strides, dtype=torch.float32)

    def init_biases(self, imgsz: int = 640) -> None:
        """Box bins start flat (bias 1); class logits start at a prior of ~5 objects per 640 image."""
        for box, cls, s in zip(self.box, self.cls, self.strides):
            box[-1].conv.bias.data.fill_(1.0)
            cls[-1].conv.bias.data.fill_(math.log(5 / self.nc / (imgsz / s) ** 2))

    def forward(self, xs: list[torch.Tensor], return_maps: bool = False):
        maps = [torch.cat((b(x), c(x)), 2).mean(0) for x, b, c in zip(xs, self.box, self.cls)]
        if self.training:
            return maps
        return (self.decode(maps), maps) if return_maps else self.decode(maps)

    def anchors(self, maps: list[torch.Tensor]):
        key = (tuple(m.shape[-2:] for m in maps), maps[0].device, maps[0].dtype)
        if self._anchor_cache is None or self._anchor_cache[0] != key:
            points, strides = make_anchors([m.shape[-2:] for m in maps], self.strides,
                                           device=maps[0].device, dtype=maps[0].dtype)
            self._anchor_cache = (key, points.T.unsqueeze(0), strides.T.unsqueeze(0))
        return self._anchor_cache[1:]

    def decode(self, maps: list[torch.Tensor]) -> torch.Tensor:
        points, strides = self.anchors(maps)
        flat = torch.cat([m.flatten(2) for m in maps], 2)  # [B, no, A]
        dist = self.dfl(flat[:, : 4 * self.reg_max])
        boxes = dist2bbox(dist, points, xywh=True, dim=1) * strides
        return torch.cat((boxes, flat[:, 4 * self.reg_max :].sigmoid()), 1)

