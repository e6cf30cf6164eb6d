"""Augmentations with exact box transforms. Images are ``[H, W, 3]`` uint8 (BGR while loading), boxes ``[n, 4]``
xyxy float pixels, ``cls [n]``. Every random choice comes from a ``numpy.random.Generator`` passed in, so a
sample's augmentation depends only on ``(seed, epoch, index)`` (see :func:`sample_rng`), not on worker count.

``official=True`` arguments give the official SpikeYOLO (ultralytics 8.0) arithmetic where it differs from ours
(``TrainConfig.pipeline = "official"``; docs/training.md says which is better and why): the long-side resize
rounds up and always interpolates linearly, HSV hue is multiplied by ``1 + g`` and every table truncated, and
the post-affine box filter also drops boxes with an aspect ratio of 100 or more.
"""

from __future__ import annotations

import math

import cv2
import numpy as np

from ..utils.boxes import letterbox_geometry

# The SpikeYOLO COCO recipe (ultralytics v8 defaults): no rotation, shear, mixup or copy-paste.
DEFAULT_HYP = {
    "mosaic": 1.0,  # probability of a 4-image mosaic
    "translate": 0.1,  # fraction of the output size
    "scale": 0.5,  # scale gain drawn from [1 - scale, 1 + scale]
    "hsv_h": 0.015,  # hue shift, fraction of the hue circle
    "hsv_s": 0.7,  # saturation gain drawn from [1 - s, 1 + s]
    "hsv_v": 0.4,  # value gain drawn from [1 - v, 1 + v]
    "fliplr": 0.5,  # probability of a horizontal flip
}
PAD_VALUE = 114
MIN_BOX_PX = 2.0  # boxes at most this wide or high after an affine transform are dropped
MIN_AREA_RATIO = 0.1  # ... and boxes keeping at most this fraction of their (scaled) area
MAX_ASPECT = 100.0  # the official filter also drops boxes this elongated (either way) or more
ASPECT_EPS = 1e-16  # the official filter's guard against zero sides


def sample_rng(seed: int, epoch: int, index: int) -> np.random.Generator:
    """Independent generator per (seed, epoch, index): the same sample draws the same numbers in any worker."""
    return np.random.default_rng(np.random.SeedSequence([int(seed), int(epoch), int(index)]))


def _resize(img: np.ndarray, w: int, h: int, official: bool = False) -> np.ndarray:
    """INTER_AREA when shrinking (no aliasing), INTER_LINEAR when enlarging; ``official``: always INTER_LINEAR."""
    if (h, w) == img.shape[:2]:
        return img
    interp = cv2.INTER_AREA if w < img.shape[1] and not official else cv2.INTER_LINEAR
    return cv2.resize(img, (w, h), interpolation=interp)


def long_side_size(shape: tuple[int, int], size: int, official: bool = False) -> tuple[int, int]:
    """(h, w) after scaling the longer side of ``shape`` to ``size``: rounded, or (``official``) rounded up and
    capped at ``size``."""
    h, w = shape
    r = size / max(h, w)
    if official:
        return min(math.ceil(h * r), size), min(math.ceil(w * r), size)
    return max(1, round(h * r)), max(1, round(w * r))


def resize_long_side(img: np.ndarray, size: int, official: bool = False) -> tuple[np.ndarray, tuple[float, float]]:
    """Resize so the longer side is ``size``; returns ``(img, (gain_y, gain_x))`` exact per axis."""
    h, w = img.shape[:2]
    nh, nw = long_side_size((h, w), size, official)
    return _resize(img, nw, nh, official), (nh / h, nw / w)


def bgr_to_rgb_chw(img: np.ndarray) -> np.ndarray:
    """An OpenCV image (BGR, ``[H, W, 3]``) as the model's input layout: RGB, ``[3, H, W]``, contiguous."""
    # cv2.split copies whole planes (vectorized); a transposed numpy copy walks the image with stride 3
    return np.stack(cv2.split(np.ascontiguousarray(img))[::-1])


def letterbox(
    img: np.ndarray, new_shape: int | tuple[int, int] = 640, scaleup: bool = True, color: int = PAD_VALUE
) -> tuple[np.ndarray, tuple[float, float], tuple[float, float]]:
    """Resize keeping the aspect ratio and pad to ``new_shape`` (h, w), centred.

    Returns ``(img [H', W', C], (gain_y, gain_x), (pad_x, pad_y))`` with ``input = original * gain + pad``
    (gains are exact per axis after rounding the resized size; pads are the left and top pixel offsets).
    """
    nh, nw = (new_shape, new_shape) if isinstance(new_shape, int) else new_shape
    h, w = img.shape[:2]
    rh, rw, left, top = letterbox_geometry((h, w), (nh, nw), scaleup=scaleup)
    img = _resize(img, rw, rh)
    img = cv2.copyMakeBorder(
        img, top, nh - rh - top, left, nw - rw - left, cv2.BORDER_CONSTANT, value=(color,) * 3
    )
    return img, (rh / h, rw / w), (float(left), float(top))


def apply_gain_pad(boxes: np.ndarray, gain: tuple[float, float], pad: tuple[float, float]) -> np.ndarray:
    """xyxy ``[n, 4]``: ``x * gain_x + pad_x``, ``y * gain_y + pad_y``."""
    gy, gx = gain
    return boxes * np.array([gx, gy, gx, gy], np.float32) + np.array([pad[0], pad[1]] * 2, np.float32)


def mosaic4(
    pieces: list[tuple[np.ndarray, np.ndarray, np.ndarray]], size: int, rng: np.random.Generator, channels: int = 3
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Four ``(img, boxes, cls)`` (each already resized to long side ``size``) -> one ``2size x 2size`` canvas.

    The images meet at a random centre (xc, yc) in [size/2, 3size/2): first top-left of it, then top-right,
    bottom-left, bottom-right; parts falling off the canvas are cut, boxes are shifted and clipped to it.
    ``channels=4``: a BGRA canvas (the same BGR, alpha 114), which :func:`random_affine` warps faster.
    """
    s2 = 2 * size
    xc, yc = (int(v) for v in rng.integers(size // 2, 3 * size // 2, size=2))
    canvas = np.full((s2, s2, channels), PAD_VALUE, np.uint8)
    all_boxes, all_cls = [], []
    for k, (img, boxes, cls) in enumerate(pieces):
        h, w = img.shape[:2]
        ox = xc - w if k in (0, 2) else xc  # top-left corner of the image on the canvas
        oy = yc - h if k in (0, 1) else yc
        x1, y1, x2, y2 = max(ox, 0), max(oy, 0), min(ox + w, s2), min(oy + h, s2)
        part = img[y1 - oy : y2 - oy, x1 - ox : x2 - ox]
        canvas[y1:y2, x1:x2] = cv2.cvtColor(part, cv2.COLOR_BGR2BGRA) if channels == 4 else part
        all_boxes.append(np.asarray(boxes, np.float32).reshape(-1, 4) + np.array([ox, oy, ox, oy], np.float32))
        all_cls.append(np.asarray(cls).reshape(-1))
    boxes = np.clip(np.concatenate(all_boxes), 0, s2)
    return canvas, boxes, np.concatenate(all_cls)


def affine_matrix(
    in_shape: tuple[int, int], out_shape: tuple[int, int], rng: np.random.Generator, translate: float, scale: float
) -> tuple[np.ndarray, float]:
    """3x3 matrix: centre the input, scale by s in [1-scale, 1+scale], move to the output centre + shift.

    The shift is uniform in [-translate, translate] of the output size per axis. Returns ``(M, s)``.
    """
    (ih, iw), (oh, ow) = in_shape, out_shape
    s = rng.uniform(1 - scale, 1 + scale)
    tx, ty = rng.uniform(-translate, translate, size=2)
    centre = np.array([[1, 0, -iw / 2], [0, 1, -ih / 2], [0, 0, 1]], np.float64)
    scale_m = np.diag([s, s, 1.0])
    shift = np.array([[1, 0, ow * (0.5 + tx)], [0, 1, oh * (0.5 + ty)], [0, 0, 1]], np.float64)
    return shift @ scale_m @ centre, float(s)


def transform_boxes(boxes: np.ndarray, m: np.ndarray, out_shape: tuple[int, int]) -> np.ndarray:
    """xyxy ``[n, 4]`` through the 3x3 affine ``m``: the bounding box of the 4 moved corners, clipped to the frame."""
    if len(boxes) == 0:
        return np.zeros((0, 4), np.float32)
    x1, y1, x2, y2 = boxes.T
    corners = np.stack([np.stack([x1, y1]), np.stack([x2, y1]), np.stack([x1, y2]), np.stack([x2, y2])])  # [4,2,n]
    xy = np.einsum("ij,kjn->kin", m[:2, :2], corners) + m[:2, 2:3]  # [4, 2, n]
    oh, ow = out_shape
    out = np.stack([xy[:, 0].min(0), xy[:, 1].min(0), xy[:, 0].max(0), xy[:, 1].max(0)], 1)
    return np.clip(out, 0, [ow, oh, ow, oh]).astype(np.float32)


def keep_boxes(old: np.ndarray, new: np.ndarray, gain: float, official: bool = False) -> np.ndarray:
    """Boolean ``[n]``: new box wider and higher than MIN_BOX_PX and keeping > MIN_AREA_RATIO of its area;
    ``official``: and less elongated than MAX_ASPECT (``max(w/h, h/w)``, sides guarded by ASPECT_EPS)."""
    w, h = new[:, 2] - new[:, 0], new[:, 3] - new[:, 1]
    old_area = (old[:, 2] - old[:, 0]) * (old[:, 3] - old[:, 1]) * gain**2
    keep = (w > MIN_BOX_PX) & (h > MIN_BOX_PX) & (w * h > MIN_AREA_RATIO * old_area)
    if official:
        keep &= np.maximum(w / (h + ASPECT_EPS), h / (w + ASPECT_EPS)) < MAX_ASPECT
    return keep


def random_affine(
    img: np.ndarray,
    boxes: np.ndarray,
    cls: np.ndarray,
    out_shape: tuple[int, int],
    rng: np.random.Generator,
    translate: float = 0.1,
    scale: float = 0.5,
    official: bool = False,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Random scale + translate of ``img`` (BGR, or BGRA: the alpha is dropped) into an ``out_shape`` (h, w)
    BGR frame padded with 114.

    Boxes go through their 4 corners, are clipped to the frame, and are dropped by :func:`keep_boxes`.
    """
    m, s = affine_matrix(img.shape[:2], out_shape, rng, translate, scale)
    # OpenCV's bilinear warp is vectorized for 4 channels, about 2x faster than for 3; each channel is
    # interpolated on its own, so the BGR planes come out identical
    src = img if img.shape[2] == 4 else cv2.cvtColor(img, cv2.COLOR_BGR2BGRA)
    out = cv2.warpAffine(
        src, m[:2], (out_shape[1], out_shape[0]), flags=cv2.INTER_LINEAR, borderValue=(PAD_VALUE,) * 4
    )
    out = cv2.cvtColor(out, cv2.COLOR_BGRA2BGR)
    boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
    new = transform_boxes(boxes, m, out_shape)
    keep = keep_boxes(boxes, new, s, official)
    return out, new[keep], np.asarray(cls).reshape(-1)[keep]


def hsv_tables(g: tuple[float, float, float], h: float, official: bool = False) -> np.ndarray:
    """``[256, 1, 3]`` uint8 look-up tables for (hue, saturation, value) from uniform draws ``g`` in [-1, 1].

    Ours: hue shifted by ``g0 * h * 180`` (OpenCV hue is 0..179) modulo 180, saturation and value scaled by
    ``1 + g1``, ``1 + g2`` (gains already multiplied in), all rounded. ``official``: hue multiplied by
    ``1 + g0 * h`` modulo 180 and every table truncated toward zero.
    """
    x = np.arange(256, dtype=np.float64 if official else np.float32)
    if official:
        lut_h = np.mod(x * (1 + g[0] * h), 180)
        lut_s, lut_v = (np.clip(x * (1 + gk), 0, 255) for gk in g[1:])
    else:
        lut_h = np.mod(np.round(x + g[0] * h * 180), 180)
        lut_s, lut_v = (np.clip(np.round(x * (1 + gk)), 0, 255) for gk in g[1:])
    return np.stack([lut_h, lut_s, lut_v], 1).astype(np.uint8).reshape(256, 1, 3)


def hsv_jitter(
    img: np.ndarray, rng: np.random.Generator, h: float, s: float, v: float, official: bool = False
) -> np.ndarray:
    """BGR image with hue changed by up to ``h`` of the circle (see :func:`hsv_tables`) and saturation/value
    scaled by 1 +- s, v."""
    g0 = rng.uniform(-1, 1)
    g1, g2 = rng.uniform(-1, 1, size=2) * (s, v)
    if g0 * h == 0 and g1 == 0 and g2 == 0:
        return img
    hsv = cv2.LUT(cv2.cvtColor(img, cv2.COLOR_BGR2HSV), hsv_tables((g0, g1, g2), h, official))  # per channel
    return cv2.cvtColor(hsv, cv2.COLOR_HSV2BGR)


def hflip(img: np.ndarray, boxes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mirror left-right: x -> W - x, so (x1, x2) -> (W - x2, W - x1)."""
    w = img.shape[1]
    boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
    flipped = np.stack([w - boxes[:, 2], boxes[:, 1], w - boxes[:, 0], boxes[:, 3]], 1)
    return cv2.flip(img, 1), flipped  # = img[:, ::-1] copied, vectorized


def merge_hyp(hyp: dict | None) -> dict:
    """DEFAULT_HYP updated by the matching keys of ``hyp`` (a trainer may pass all its settings at once)."""
    out = dict(DEFAULT_HYP)
    out.update({k: float(v) for k, v in (hyp or {}).items() if k in out})
    return out
