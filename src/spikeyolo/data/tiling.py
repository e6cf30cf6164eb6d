"""Cutting large images into tiles and regions, with boxes clipped to each piece.

Regions are ``(x0, y0, x1, y1)`` integer pixels of the full image, end exclusive. Boxes are ``[n, 4]`` xyxy
float pixels; a box is kept in a piece when at least ``min_visibility`` of its area lies inside, and is then
clipped to the piece and shifted to the piece's origin.
"""

from __future__ import annotations

import numpy as np

from ..utils.boxes import clip_visible


def _starts(length: int, tile: int, stride: int) -> list[int]:
    if length <= tile:
        return [0]
    starts = list(range(0, length - tile, stride))
    return starts + [length - tile]  # the last tile is aligned to the edge, so the image is covered exactly


def tile_grid(h: int, w: int, tile_size: int, overlap: float = 0.2) -> list[tuple[int, int, int, int]]:
    """Regions covering an ``h x w`` image with ``tile_size`` squares (smaller where the image is smaller).

    ``overlap`` is a fraction of ``tile_size`` shared by neighbouring tiles (0 <= overlap < 1); the last row
    and column are aligned to the image edge, so no tile needs padding. Row-major order.
    """
    if not 0 <= overlap < 1:
        raise ValueError(f"overlap must be in [0, 1), got {overlap}")
    stride = max(1, round(tile_size * (1 - overlap)))
    return [
        (x0, y0, min(x0 + tile_size, w), min(y0 + tile_size, h))
        for y0 in _starts(h, tile_size, stride)
        for x0 in _starts(w, tile_size, stride)
    ]


def partition_grid(h: int, w: int, tile_size: int) -> list[tuple[int, int, int, int]]:
    """Regions that split an ``h x w`` image into ``ceil(h / tile) x ceil(w / tile)`` near-equal, disjoint
    pieces (each at most ``tile_size``). For evaluation: every pixel, and so every box, is seen once."""

    def cuts(length: int) -> list[int]:
        n = -(-length // tile_size)
        return [round(k * length / n) for k in range(n + 1)]

    xs, ys = cuts(w), cuts(h)
    return [(xs[i], ys[j], xs[i + 1], ys[j + 1]) for j in range(len(ys) - 1) for i in range(len(xs) - 1)]


def clip_boxes_to_region(
    boxes: np.ndarray, cls: np.ndarray, region, min_visibility: float = 0.5
) -> tuple[np.ndarray, np.ndarray]:
    """Boxes ``[n, 4]`` of the full image -> boxes ``[m, 4]`` in the region's coordinates, and their ``cls``."""
    x0, y0, x1, y1 = region
    boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
    cls = np.asarray(cls).reshape(-1)
    clipped, keep = clip_visible(boxes, region, min_visibility)
    return clipped[keep] - np.array([x0, y0, x0, y0], np.float32), cls[keep]


def crop_region(img: np.ndarray, boxes: np.ndarray, cls: np.ndarray, region, min_visibility: float = 0.5):
    """Crop ``img [H, W, C]`` to ``region``; returns ``(crop, boxes [m, 4], cls [m])`` in crop coordinates."""
    x0, y0, x1, y1 = region
    b, c = clip_boxes_to_region(boxes, cls, region, min_visibility)
    return img[y0:y1, x0:x1].copy(), b, c


def tile_image(
    img: np.ndarray,
    boxes_xyxy: np.ndarray,
    cls: np.ndarray,
    tile_size: int,
    overlap: float = 0.2,
    min_visibility: float = 0.5,
) -> list[dict]:
    """Cut ``img [H, W, C]`` into tiles; returns dicts ``img``, ``boxes_xyxy [m, 4]``, ``cls [m]``, ``region``."""
    out = []
    for region in tile_grid(img.shape[0], img.shape[1], tile_size, overlap):
        t, b, c = crop_region(img, boxes_xyxy, cls, region, min_visibility)
        out.append({"img": t, "boxes_xyxy": b, "cls": c, "region": region})
    return out


def split_regions(h: int, w: int, val_fraction: float = 0.3, axis: str = "x"):
    """A spatial train/val split: ``(train_region, val_region)`` on either side of one cut line.

    ``axis="x"`` cuts vertically (train left, val right); ``"y"`` cuts horizontally (train top, val bottom).
    The regions share no pixel.
    """
    if not 0 < val_fraction < 1:
        raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction}")
    if axis == "x":
        cut = round(w * (1 - val_fraction))
        return (0, 0, cut, h), (cut, 0, w, h)
    if axis == "y":
        cut = round(h * (1 - val_fraction))
        return (0, 0, w, cut), (0, cut, w, h)
    raise ValueError(f"axis must be 'x' or 'y', got {axis!r}")
