"""Rectangular validation batches, as ultralytics 8.0 validates (the protocol behind the published SpikeYOLO COCO
numbers): images sorted by aspect ratio so that each batch holds similar shapes, every image resized to long side
``imgsz`` and letterboxed (centred, never enlarged) into its batch's shape, the smallest multiple of the stride
that holds the batch's images plus half a stride of padding. A 4:3 landscape batch at 640 runs at 512x672, a
square or mixed one at 672x672.
"""

from __future__ import annotations

import math

import cv2
import numpy as np

from . import augment as A

RECT_STRIDE = 32  # the largest stride of every spikeyolo model (and ultralytics' minimum)
RECT_PAD = 0.5  # extra padding in strides (ultralytics' validation value)


def rect_batch_shapes(shapes_hw, batch_size: int, imgsz: int, stride: int = RECT_STRIDE,
                      pad: float = RECT_PAD) -> tuple[np.ndarray, np.ndarray]:
    """Batches of images with original sizes ``shapes_hw [n, 2]`` (h, w), ``batch_size`` at a time.

    Returns ``(order [n], shapes [n_batches, 2])``: the image indices in batch order (sorted by h / w, ties in
    index order) and each batch's input (h, w). A batch whose images are all landscape (h / w < 1, at most
    ``a``) gets height ``a * imgsz``, all portrait (h / w > 1, at least ``a``) width ``imgsz / a``, a mixed one
    ``imgsz`` both ways; each side then becomes ``ceil(side / stride + pad) * stride``.
    """
    hw = np.asarray(shapes_hw, dtype=np.float64).reshape(-1, 2)
    ratio = hw[:, 0] / hw[:, 1]
    order = np.argsort(ratio, kind="stable")
    ratio = ratio[order]
    shapes = []
    for start in range(0, len(order), max(int(batch_size), 1)):
        r = ratio[start : start + batch_size]
        if r.max() < 1:
            rel = (r.max(), 1.0)
        elif r.min() > 1:
            rel = (1.0, 1.0 / r.min())
        else:
            rel = (1.0, 1.0)
        shapes.append([math.ceil(v * imgsz / stride + pad) * stride for v in rel])
    return order, np.asarray(shapes, dtype=np.int64).reshape(-1, 2)


def rect_letterbox(img: np.ndarray, imgsz: int, shape_hw) -> tuple[np.ndarray, tuple[float, float], tuple]:
    """``img`` resized to long side ``imgsz`` (short side rounded up, INTER_AREA when shrinking, else linear)
    and letterboxed into ``shape_hw`` without enlarging it again. Returns ``(img, (gain_y, gain_x),
    (pad_x, pad_y))`` with ``input = original * gain + pad``."""
    h, w = img.shape[:2]
    r = imgsz / max(h, w)
    if r != 1:
        nw, nh = min(math.ceil(w * r), imgsz), min(math.ceil(h * r), imgsz)
        img = cv2.resize(img, (nw, nh), interpolation=cv2.INTER_AREA if r < 1 else cv2.INTER_LINEAR)
    rh, rw = img.shape[:2]
    img, (gy, gx), pad = A.letterbox(img, tuple(int(v) for v in shape_hw), scaleup=False)  # gains 1: it fits
    return img, (rh * gy / h, rw * gx / w), pad
