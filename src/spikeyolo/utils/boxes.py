"""Box operations as pure functions (no state, no I/O).

Formats: ``xyxy`` = (x1, y1, x2, y2) corners, ``cxcywh`` = (cx, cy, w, h) centre and size, ``ltwh`` = (left,
top, w, h) as COCO JSON and the Prophesee ``_bbox.npy`` store them; all in pixels unless a docstring says
normalized. ``xywh`` in an argument name (``dist2bbox``, ``bbox_iou``) means ``cxcywh``, as in ultralytics.
Shapes are ``[..., 4]`` unless stated.
"""

from __future__ import annotations

import math

import numpy as np
import torch


def cxcywh2xyxy(x: torch.Tensor) -> torch.Tensor:
    """[..., 4] centre/size -> corners."""
    c, half = x[..., :2], x[..., 2:] / 2
    return torch.cat((c - half, c + half), -1)


def xyxy2cxcywh(x: torch.Tensor) -> torch.Tensor:
    """[..., 4] corners -> centre/size."""
    return torch.cat(((x[..., :2] + x[..., 2:]) / 2, x[..., 2:] - x[..., :2]), -1)


# the ultralytics names, kept for users who call them
xywh2xyxy, xyxy2xywh = cxcywh2xyxy, xyxy2cxcywh


def make_anchors(
    shapes: list[tuple[int, int]], strides: list[float], offset: float = 0.5, device=None, dtype=torch.float32
) -> tuple[torch.Tensor, torch.Tensor]:
    """Anchor points at cell centres of every level.

    Returns ``points [A, 2]`` (x, y in grid units of their level) and ``stride [A, 1]``, levels concatenated
    in order, each level row-major over (y, x).
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


def box_area(boxes: torch.Tensor) -> torch.Tensor:
    """``[..., 4]`` xyxy -> ``[...]`` areas (negative extents count as 0)."""
    return (boxes[..., 2] - boxes[..., 0]).clamp(min=0) * (boxes[..., 3] - boxes[..., 1]).clamp(min=0)


def box_iou(a: torch.Tensor, b: torch.Tensor, eps: float = 1e-7) -> torch.Tensor:
    """Pairwise IoU of xyxy boxes: ``a [N, 4]``, ``b [M, 4]`` -> ``[N, M]``."""
    lt = torch.maximum(a[:, None, :2], b[None, :, :2])
    rb = torch.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = (rb - lt).clamp(min=0).prod(-1)
    return inter / (box_area(a)[:, None] + box_area(b)[None, :] - inter + eps)


def bbox_iou(b1: torch.Tensor, b2: torch.Tensor, xywh: bool = False, ciou: bool = False,
             eps: float = 1e-7) -> torch.Tensor:
    """Elementwise IoU (or Complete-IoU) of broadcastable ``[..., 4]`` boxes -> ``[...]``.

    CIoU (Zheng et al., "Distance-IoU Loss", AAAI 2020):
    ``IoU - rho^2 / c^2 - alpha * v`` with ``rho`` the distance between the centres, ``c`` the diagonal of the
    smallest enclosing box, ``v = 4 / pi^2 * (atan(w2 / h2) - atan(w1 / h1))^2`` and
    ``alpha = v / (1 - IoU + v)``; ``alpha`` is treated as a constant in the backward pass, as in the paper.
    """
    if xywh:
        b1, b2 = xywh2xyxy(b1), xywh2xyxy(b2)
    b1x1, b1y1, b1x2, b1y2 = b1.unbind(-1)
    b2x1, b2y1, b2x2, b2y2 = b2.unbind(-1)
    w1, h1 = b1x2 - b1x1, (b1y2 - b1y1).clamp(min=eps)
    w2, h2 = b2x2 - b2x1, (b2y2 - b2y1).clamp(min=eps)
    inter = (torch.minimum(b1x2, b2x2) - torch.maximum(b1x1, b2x1)).clamp(min=0) * (
        torch.minimum(b1y2, b2y2) - torch.maximum(b1y1, b2y1)
    ).clamp(min=0)
    union = w1 * h1 + w2 * h2 - inter + eps
    iou = inter / union
    if not ciou:
        return iou
    cw = torch.maximum(b1x2, b2x2) - torch.minimum(b1x1, b2x1)
    ch = torch.maximum(b1y2, b2y2) - torch.minimum(b1y1, b2y1)
    c2 = cw**2 + ch**2 + eps
    rho2 = ((b2x1 + b2x2 - b1x1 - b1x2) ** 2 + (b2y1 + b2y2 - b1y1 - b1y2) ** 2) / 4
    v = (4 / math.pi**2) * (torch.atan(w2 / h2) - torch.atan(w1 / h1)) ** 2
    with torch.no_grad():
        alpha = v / (v - iou + (1 + eps))
    return iou - (rho2 / c2 + v * alpha)


def bbox2dist(points: torch.Tensor, xyxy: torch.Tensor, reg_max: int) -> torch.Tensor:
    """Inverse of :func:`dist2bbox` (xyxy): ``points [..., 2]``, boxes ``[..., 4]`` -> (l, t, r, b) distances,
    clamped to ``[0, (reg_max - 1) - 0.01]`` so that the upper neighbouring DFL bin stays ``<= reg_max - 1``.

    ``reg_max`` is the number of DFL bins (16, bins 0..15); distances are in the units of the inputs.
    """
    x1y1, x2y2 = xyxy.chunk(2, -1)
    return torch.cat((points - x1y1, x2y2 - points), -1).clamp(0, reg_max - 1 - 0.01)


def unletterbox(boxes_xyxy: torch.Tensor, ratio_pad) -> torch.Tensor:
    """Network-input pixels -> original-image pixels for ``[..., 4]`` xyxy boxes (returns a new tensor).

    ``ratio_pad = ((gain_y, gain_x), (pad_x, pad_y))`` as in the batch contract:
    ``input = original * gain + pad``.
    """
    (gy, gx), (px, py) = ratio_pad
    gain = boxes_xyxy.new_tensor([gx, gy, gx, gy])
    pad = boxes_xyxy.new_tensor([px, py, px, py])
    return (boxes_xyxy - pad) / gain


def clip_boxes(boxes: torch.Tensor, shape) -> torch.Tensor:
    """Clamp ``[..., 4]`` xyxy boxes into an image of ``shape = (h, w)`` (returns a new tensor)."""
    h, w = float(shape[0]), float(shape[1])
    x = boxes[..., 0::2].clamp(0, w)
    y = boxes[..., 1::2].clamp(0, h)
    return torch.stack((x[..., 0], y[..., 0], x[..., 1], y[..., 1]), -1)


def letterbox_geometry(orig_shape, input_shape, zoom: float = 1.0, shift=(0, 0), scaleup: bool = True
                       ) -> tuple[int, int, int, int]:
    """Where a centred, aspect-preserving letterbox puts an ``orig_shape (h, w)`` picture in ``input_shape (h, w)``:
    ``(resized_h, resized_w, left, top)`` with the resized size rounded to whole pixels (at least 1) and the
    padding floored. ``zoom`` scales the fitted size and ``shift`` (x, y) moves it (augmentation); without
    ``scaleup`` a picture is never enlarged. The one geometry of the image and the event-frame letterbox."""
    h, w = orig_shape
    r = min(input_shape[0] / h, input_shape[1] / w)
    if not scaleup:
        r = min(r, 1.0)
    r *= zoom
    rh, rw = max(1, round(h * r)), max(1, round(w * r))
    return rh, rw, (input_shape[1] - rw) // 2 + int(shift[0]), (input_shape[0] - rh) // 2 + int(shift[1])


def letterbox_ratio_pad(input_shape, orig_shape) -> tuple[tuple[float, float], tuple[float, float]]:
    """``ratio_pad`` of a centred, aspect-preserving letterbox from ``orig_shape (h, w)`` into
    ``input_shape (h, w)`` (no rounding of the padding)."""
    gain = min(input_shape[0] / orig_shape[0], input_shape[1] / orig_shape[1])
    pad_x = (input_shape[1] - orig_shape[1] * gain) / 2
    pad_y = (input_shape[0] - orig_shape[0] * gain) / 2
    return (gain, gain), (pad_x, pad_y)


def scale_boxes(
    boxes_xyxy: torch.Tensor, input_shape, orig_shape, ratio_pad=None, clip: bool = True
) -> torch.Tensor:
    """Map xyxy boxes from network-input pixels (``input_shape (h, w)``) to original pixels
    (``orig_shape (h, w)``).

    Uses ``ratio_pad`` when given (the batch's exact value), else assumes a centred letterbox
    (:func:`letterbox_ratio_pad`). Clips to the original image when ``clip``.
    """
    if ratio_pad is None:
        ratio_pad = letterbox_ratio_pad(input_shape, orig_shape)
    out = unletterbox(boxes_xyxy, ratio_pad)
    return clip_boxes(out, orig_shape) if clip else out


def clip_visible(boxes_xyxy: np.ndarray, region, min_visibility: float = 0.5) -> tuple[np.ndarray, np.ndarray]:
    """Clip ``[n, 4]`` xyxy boxes to ``region (x0, y0, x1, y1)`` and say which to keep: those with some area
    inside and at least ``min_visibility`` of their own area inside. Returns ``(clipped [n, 4], keep [n] bool)``
    (in the boxes' coordinates and dtype); the one rule of tiles and of the simulator's moving view."""
    x0, y0, x1, y1 = region
    clipped = np.clip(boxes_xyxy, [x0, y0, x0, y0], [x1, y1, x1, y1]).astype(boxes_xyxy.dtype)
    area = (boxes_xyxy[:, 2] - boxes_xyxy[:, 0]) * (boxes_xyxy[:, 3] - boxes_xyxy[:, 1])
    inside = (clipped[:, 2] - clipped[:, 0]).clip(0) * (clipped[:, 3] - clipped[:, 1]).clip(0)
    return clipped, (inside > 0) & (inside >= min_visibility * area)
