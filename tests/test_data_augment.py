"""Box transforms of the augmentations against hand-computed coordinates and against drawn pixels."""

from __future__ import annotations

import numpy as np
import pytest

from spikeyolo.data import augment as A


class FixedRng:
    """Stands in for numpy's Generator: ``uniform`` returns queued values (checked to lie in [low, high])."""

    def __init__(self, *values):
        self.values = list(values)

    def uniform(self, low=0.0, high=1.0, size=None):
        v = np.asarray(self.values.pop(0), np.float64)
        assert np.all(v >= low) and np.all(v <= high), (v, low, high)
        return v if size is not None else float(v)


def bright_bbox(img: np.ndarray, thr: int = 200):
    """(x1, y1, x2, y2) enclosing every pixel brighter than ``thr`` (pixel edges, so x2 = last x + 1)."""
    ys, xs = np.nonzero(img.max(2) > thr)
    return xs.min(), ys.min(), xs.max() + 1, ys.max() + 1


def test_letterbox_wide_image_hand_computed():
    img = np.zeros((100, 200, 3), np.uint8)
    out, gain, pad = A.letterbox(img, 64)
    # r = min(64/100, 64/200) = 0.32 -> 64 x 32, centred vertically: 16 rows of padding on top
    assert out.shape == (64, 64, 3)
    assert gain == (0.32, 0.32) and pad == (0.0, 16.0)
    assert (out[:16] == 114).all() and (out[48:] == 114).all() and (out[16:48] == 0).all()
    box = A.apply_gain_pad(np.array([[20, 10, 60, 50]], np.float32), gain, pad)
    np.testing.assert_allclose(box, [[6.4, 19.2, 19.2, 32.0]], atol=1e-5)


def test_letterbox_box_bounds_drawn_rectangle():
    img = np.zeros((90, 60, 3), np.uint8)
    img[30:60, 12:48] = 255
    out, gain, pad = A.letterbox(img, 120)  # r = 4/3 -> 80 x 120, pad_x 20
    assert gain == (120 / 90, 80 / 60) and pad == (20.0, 0.0)
    box = A.apply_gain_pad(np.array([[12, 30, 48, 60]], np.float32), gain, pad)[0]
    np.testing.assert_allclose(box, [36, 40, 84, 80], atol=1e-4)
    np.testing.assert_allclose(bright_bbox(out, 128), box, atol=1)


def test_hflip_known_box_and_pixels():
    img = np.zeros((50, 100, 3), np.uint8)
    img[20:40, 10:30] = 255
    out, boxes = A.hflip(img, np.array([[10, 20, 30, 40]], np.float32))
    np.testing.assert_array_equal(boxes, [[70, 20, 90, 40]])
    assert bright_bbox(out) == (70, 20, 90, 40)


def test_affine_translate_by_known_pixels():
    img = np.zeros((100, 100, 3), np.uint8)
    img[10:30, 10:30] = 255
    boxes = np.array([[10, 10, 30, 30], [0, 50, 10, 60], [5, 0, 25, 20]], np.float32)
    # scale gain 1 (scale=0), translate tx = -0.1 of 100 px, ty = +0.2: x -> x - 10, y -> y + 20
    rng = FixedRng(1.0, [-0.1, 0.2])
    out, b, c = A.random_affine(img, boxes, np.array([0, 1, 2]), (100, 100), rng, translate=0.2, scale=0.0)
    # box 1 leaves the frame (x in [-10, 0]) and is dropped; box 2 is clipped at x = 0
    np.testing.assert_allclose(b, [[0, 30, 20, 50], [0, 20, 15, 40]], atol=1e-4)
    np.testing.assert_array_equal(c, [0, 2])
    assert bright_bbox(out) == (0, 30, 20, 50)
    assert (out[:20] == 114).all()  # rows uncovered by the shift are padding


def test_affine_scale_half_maps_box_to_known_coords():
    img = np.zeros((100, 100, 3), np.uint8)
    img[20:80, 20:60] = 255
    # s = 0.5, tx = 0.1: x' = 0.5 (x - 50) + 60 = 0.5 x + 35, y' = 0.5 (y - 50) + 50 = 0.5 y + 25
    rng = FixedRng(0.5, [0.1, 0.0])
    out, b, _ = A.random_affine(img, np.array([[20, 20, 60, 80]], np.float32), np.array([0]), (100, 100), rng)
    np.testing.assert_allclose(b, [[45, 35, 65, 65]], atol=1e-4)
    np.testing.assert_allclose(bright_bbox(out, 128), b[0], atol=1)


def test_affine_drops_boxes_that_shrink_to_almost_nothing():
    # s = 0.5 makes a 4 px box 2 px wide: not more than MIN_BOX_PX, dropped; a 10 px box survives as 5 px
    rng = FixedRng(0.5, [0.0, 0.0])
    boxes = np.array([[50, 50, 54, 54], [10, 10, 20, 20]], np.float32)
    img = np.zeros((100, 100, 3), np.uint8)
    _, b, c = A.random_affine(img, boxes, np.array([0, 1]), (100, 100), rng)
    np.testing.assert_array_equal(c, [1])
    np.testing.assert_allclose(b, [[30, 30, 35, 35]], atol=1e-4)


def test_keep_boxes_area_ratio():
    old = np.array([[0, 0, 100, 100]], np.float32)
    assert A.keep_boxes(old, np.array([[0, 0, 100, 11]], np.float32), 1.0)[0]  # 11 % of the area kept
    assert not A.keep_boxes(old, np.array([[0, 0, 100, 9]], np.float32), 1.0)[0]  # 9 %


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_mosaic_boxes_equal_drawn_pixels(seed):
    size = 64
    rng = np.random.default_rng(seed)
    pieces = []
    for k, (h, w) in enumerate([(64, 48), (40, 64), (64, 64), (64, 32)]):
        img = np.zeros((h, w, 3), np.uint8)
        x1, y1 = int(rng.integers(0, w - 12)), int(rng.integers(0, h - 12))
        x2, y2 = x1 + 10, y1 + 10
        img[y1:y2, x1:x2] = 50 * (k + 1)  # one grey level per piece
        pieces.append((img, np.array([[x1, y1, x2, y2]], np.float32), np.array([k])))
    canvas, boxes, cls = A.mosaic4(pieces, size, np.random.default_rng(seed + 10))
    assert canvas.shape == (128, 128, 3)
    assert ((boxes >= 0) & (boxes <= 128)).all()
    for b, k in zip(boxes, cls):
        ys, xs = np.nonzero(canvas[:, :, 0] == 50 * (k + 1))
        if len(xs) == 0:  # fell off the canvas: then the clipped box is empty
            assert b[2] <= b[0] or b[3] <= b[1]
            continue
        np.testing.assert_array_equal(b, [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1])


def test_hsv_jitter_keeps_shape_and_is_identity_at_zero():
    img = np.random.default_rng(0).integers(0, 256, (8, 8, 3), dtype=np.uint8)
    np.testing.assert_array_equal(A.hsv_jitter(img, np.random.default_rng(0), 0, 0, 0), img)
    out = A.hsv_jitter(img, np.random.default_rng(0), 0.015, 0.7, 0.4)
    assert out.shape == img.shape and out.dtype == np.uint8 and not np.array_equal(out, img)


def test_hsv_value_and_hue_by_hand():
    grey = np.full((4, 4, 3), 100, np.uint8)  # saturation 0: only the value gain shows
    out = A.hsv_jitter(grey, FixedRng(0.0, [0.0, 0.5]), 0.015, 0.7, 0.4)  # value gain 1 + 0.5 * 0.4 = 1.2
    assert (out == 120).all()
    red = np.zeros((2, 2, 3), np.uint8)
    red[..., 2] = 255  # BGR pure red: hue 0; a shift of +1 * 0.015 * 180 = 2.7 -> 3 (of 180) moves toward yellow
    out = A.hsv_jitter(red, FixedRng(1.0, [0.0, 0.0]), 0.015, 0.7, 0.4)
    assert out[0, 0, 2] == 255 and out[0, 0, 0] == 0 and 15 <= out[0, 0, 1] <= 30  # 3 units = 6 deg: G = 255 * 6 / 60


def test_sample_rng_depends_only_on_seed_epoch_index():
    a = A.sample_rng(1, 2, 3).random(4)
    np.testing.assert_array_equal(a, A.sample_rng(1, 2, 3).random(4))
    assert not np.array_equal(a, A.sample_rng(1, 3, 3).random(4))
    assert not np.array_equal(a, A.sample_rng(1, 2, 4).random(4))


def test_merge_hyp_defaults_and_override():
    h = A.merge_hyp({"fliplr": 0, "lr0": 0.01})
    assert h["fliplr"] == 0 and h["scale"] == 0.5 and h["translate"] == 0.1 and "lr0" not in h
    assert (h["hsv_h"], h["hsv_s"], h["hsv_v"], h["mosaic"]) == (0.015, 0.7, 0.4, 1.0)
