"""Box operations as pure functions (no state, no I/O).

Formats: ``xyxy`` = (x1, y1, x2, y2) corners, ``xywh`` = (cx, cy, w, h) centre and size, both in pixels unless
a docstring says normalized. Shapes are ``[..., 4]`` unless stated.
"""

from __future__ import annotations

import torch


def xywh2xyxy(x: torch.Tensor) -> torch.Tensor:
    """[..., 4] centre/size -> corners."""
    c, half = x[..., :2], x[..., 2:] / 2
    return torch.cat((c - half, c + half), -1)


def xyxy2xywh(x: torch.Tensor) -> torch.Tensor:
    """[..., 4] corners -> centre/size."""
    return torch.cat(((x[..., :2] + x[..., 2:]) / 2, x[..., 2:] - x[..., :2]), -1)


def make_anchors(
    shapes: list[tuple[int, int]], strides: list[float], offset: float = 0.5, device=None, dtype=torch.float32
) -> tuple[torch.Tensor, torch.Tensor]:
    """Anchor points at cell centres of every level.

    Returns ``points [A, 2]`` (x, y in grid units of their level) and ``stride [A, 1]``, levels concatenated in
    order, each level row-major over (y, x).
    """
    points, stride_list = [], []
    for (h, w), s in zip(shapes, strides):
        sy = torch.arange(h, device=device, dtype=dtype) + offset
        sx = torch.arange(w, device=device, dtype=dtype) + offset
        yy, xx = torch.meshgrid(sy, sx, indexing="ij")
        points.append(torch.stack((xx, yy), -1).reshape(-1, 2))
        stride_list.append(torch.full((h * w, 1), float(s), device=device, dtype=dtype))
    return torch.cat(points), torch.cat(stride_list)


def dist2bbox(distance: torch.Tensor, points: torch.Tensor, xywh: bool = True, dim: int = -1) -> torch.Tensor:
    """(left, top, right, bottom) distances from anchor points -> boxes (xywh or xyxy) along ``dim``."""
    lt, rb = distance.chunk(2, dim)
    x1y1, x2y2 = points - lt, points + rb
    if xywh:
        return torch.cat(((x1y1 + x2y2) / 2, x2y2 - x1y1), dim)
    return torch.cat((x1y1, x2y2), dim)
