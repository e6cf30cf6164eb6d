"""The official pipeline's training-data arithmetic (``pipeline="official"``), each against hand-computed values,
and crowd boxes as targets. Every test also shows that ours differs there, so each would fail without the switch.
"""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from spikeyolo.data import augment as A
from spikeyolo.data import build_dataset


class FixedRng:
    """``uniform`` returns queued values (as in test_data_augment)."""

    def __init__(self, *values):
        self.values = list(values)

    def uniform(self, low=0.0, high=1.0, size=None):
        v = np.asarray(self.values.pop(0), np.float64)
        return v if size is not None else float(v)


def test_hsv_hue_multiplied_and_truncated_vs_shifted_and_rounded():
    g = (1.0, 0.35, -0.2)  # hue draw +1 (gain 0.015), saturation x 1.35, value x 0.8
    off, ours = A.hsv_tables(g, 0.015, official=True)[:, 0], A.hsv_tables(g, 0.015)[:, 0]
    # official hue: 100 * 1.015 = 101.5 -> 101; 179 * 1.015 = 181.685 -> mod 180 = 1.685 -> 1; 0 stays 0
    assert (off[100, 0], off[179, 0], off[0, 0]) == (101, 1, 0)
    # ours: + 0.015 * 180 = 2.7: 102.7 -> 103; 181.7 -> 182 -> 2; 0 -> 3 (every hue moves the same way)
    assert (ours[100, 0], ours[179, 0], ours[0, 0]) == (103, 2, 3)
    # saturation 5 * 1.35 = 6.75: official truncates to 6, ours rounds to 7; value 7 * 0.8 = 5.6: 5 vs 6
    assert (off[5, 1], ours[5, 1]) == (6, 7) and (off[7, 2], ours[7, 2]) == (5, 6)
    assert off[255, 1] == 255 and off[255, 2] == 204  # 344.25 clipped; 255 * 0.8 = 204


def test_hsv_jitter_official_equals_per_pixel_formula():
    img = np.random.default_rng(0).integers(0, 256, (16, 16, 3), dtype=np.uint8)
    out = A.hsv_jitter(img, FixedRng(-0.6, [0.3, -0.5]), 0.015, 0.7, 0.4, official=True)
    hsv = cv2.cvtColor(img, cv2.COLOR_BGR2HSV).astype(np.int64)
    want = np.empty_like(hsv)
    for y in range(16):  # independent: the official formula written out per pixel
        for x in range(16):
            hh, ss, vv = (int(c) for c in hsv[y, x])
            want[y, x] = (int((hh * (1 - 0.6 * 0.015)) % 180), int(min(ss * (1 + 0.3 * 0.7), 255)),
                          int(min(vv * (1 - 0.5 * 0.4), 255)))
    np.testing.assert_array_equal(out, cv2.cvtColor(want.astype(np.uint8), cv2.COLOR_HSV2BGR))


def test_aspect_ratio_filter_only_official():
    old = np.array([[0, 0, 300, 2.5], [0, 0, 250, 2.6], [0, 0, 2.5, 300]], np.float32)
    # 300 / 2.5 = 120 >= 100 and 2.5 / 300 likewise: dropped officially; 250 / 2.6 = 96.2 stays
    np.testing.assert_array_equal(A.keep_boxes(old, old, 1.0, official=True), [False, True, False])
    np.testing.assert_array_equal(A.keep_boxes(old, old, 1.0), [True, True, True])
    img = np.zeros((320, 320, 3), np.uint8)
    for official, want in ((True, [1]), (False, [0, 1])):  # scale 1, no shift: boxes unchanged, then filtered
        _, _, cls = A.random_affine(img, old[:2], np.array([0, 1]), (320, 320), FixedRng(1.0, [0.0, 0.0]),
                                    official=official)
        np.testing.assert_array_equal(cls, want)


def test_official_resize_rounds_up_and_interpolates_linearly():
    img = np.random.default_rng(1).integers(0, 256, (100, 300, 3), dtype=np.uint8)
    # 100 * 64 / 300 = 21.33: official ceil -> 22, ours round -> 21
    out, gain = A.resize_long_side(img, 64, official=True)
    assert out.shape[:2] == (22, 64) and gain == (22 / 100, 64 / 300)
    np.testing.assert_array_equal(out, cv2.resize(img, (64, 22), interpolation=cv2.INTER_LINEAR))
    ours, _ = A.resize_long_side(img, 64)
    np.testing.assert_array_equal(ours, cv2.resize(img, (64, 21), interpolation=cv2.INTER_AREA))  # no aliasing
    assert not np.array_equal(cv2.resize(img, (64, 21), interpolation=cv2.INTER_LINEAR), ours)


@pytest.fixture(scope="module")
def numbered(tmp_path_factory):
    """10 images; image i has one box of class i (so a mosaic's classes name the images it used)."""
    root = tmp_path_factory.mktemp("numbered")
    (root / "images").mkdir()
    (root / "labels").mkdir()
    for i in range(10):
        cv2.imwrite(str(root / f"images/{i}.png"), np.full((32, 32, 3), 20 * i, np.uint8))
        (root / f"labels/{i}.txt").write_text(f"{i} 0.5 0.5 0.8 0.8\n")
    y = root / "d.yaml"
    y.write_text(f"train: images\nnames: [{', '.join(f'c{i}' for i in range(10))}]\n")
    return y


def test_official_mosaic_partners_come_from_the_recent_buffer(numbered):
    hyp = {"scale": 0.0, "translate": 0.0, "hsv_h": 0, "hsv_s": 0, "hsv_v": 0}
    ds = build_dataset(numbered, "train", imgsz=32, hyp=hyp, pipeline="official", mosaic_buffer=4)
    for i in range(6):  # loads 0..5; a buffer of 4 keeps 3 after each append: {3, 4, 5}
        ds[(i, 0, False)]
    assert ds.images.recent() == [3, 4, 5]
    seen = set()
    for k in range(40):
        seen.update(ds._partners(5, np.random.default_rng(k)))
        seen.update(int(c) for c in ds[(5, k, True)]["cls"].flatten())  # the mosaic's boxes
    assert seen == {3, 4, 5}
    ours = build_dataset(numbered, "train", imgsz=32, hyp=hyp)
    for i in range(6):
        ours[(i, 0, False)]
    assert len({j for k in range(40) for j in ours._partners(5, np.random.default_rng(k))}) > 5  # uniform


def coco_set(root):
    (root / "img").mkdir()
    cv2.imwrite(str(root / "img/a.png"), np.zeros((50, 100, 3), np.uint8))
    anns = [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [10, 10, 20, 10], "iscrowd": 0},
            {"id": 2, "image_id": 1, "category_id": 2, "bbox": [50, 20, 40, 20], "iscrowd": 1}]
    (root / "a.json").write_text(json.dumps({
        "images": [{"id": 1, "file_name": "a.png", "height": 50, "width": 100}], "annotations": anns,
        "categories": [{"id": 1, "name": "p"}, {"id": 2, "name": "q"}]}))
    y = root / "d.yaml"
    y.write_text("type: coco\ntrain: {images: img, annotations: a.json}\nnames: [p, q]\n")
    return y


def test_crowd_boxes_are_targets_only_with_crowd_targets(tmp_path):
    y = coco_set(tmp_path)
    plain = build_dataset(y, "train", imgsz=100, augment=False)
    crowd = build_dataset(y, "train", imgsz=100, augment=False, crowd_targets=True)
    assert plain.stats["crowd"] == 1
    # letterbox 100x50 -> 100x100: gain 1, pad (0, 25); boxes as normalized cxcywh
    np.testing.assert_allclose(plain[0]["bboxes"].numpy(), [[0.2, 0.4, 0.2, 0.1]], atol=1e-6)
    np.testing.assert_allclose(crowd[0]["bboxes"].numpy(), [[0.2, 0.4, 0.2, 0.1], [0.7, 0.55, 0.4, 0.2]], atol=1e-6)
    assert crowd[0]["cls"].flatten().tolist() == [0, 1]
    gt = plain.ground_truth(0)  # evaluation still sees the crowd box, as an ignore region
    assert gt["cls"].tolist() == [0] and gt["crowd_cls"].tolist() == [1]
    np.testing.assert_array_equal(gt["crowd_boxes_xyxy"], [[50, 20, 90, 40]])
    again = build_dataset(y, "train", imgsz=100, augment=False)  # from the label cache: the flag survives it
    assert again.stats["cache_hit"] and again.ground_truth(0)["crowd_cls"].tolist() == [1]


@pytest.mark.parametrize("pipeline, want", [("spikeyolo", [1, 2, 4, 5]), ("official", [1, 3, 5])])
def test_epoch_end_steps_ours_and_drops_official(tmp_path, monkeypatch, pipeline, want):
    """3 batches of 1 per epoch, nominal batch 2: accumulate 2. Ours steps after batches 1, 2 (epoch end), 4, 5
    (counted over the run); official after 1, then counts on over the epoch boundary (batch 2's gradient is
    zeroed at the next epoch's start): 3, 5."""
    from _train_data import make_dataset
    from spikeyolo.engine.trainer import TrainConfig, Trainer

    data = make_dataset(tmp_path / "ds", n_train=3, n_val=1)
    steps, train_step, step = [], Trainer.train_step, Trainer._step
    monkeypatch.setattr(Trainer, "train_step",
                        lambda self, b, ni: (setattr(self, "_ni", ni), train_step(self, b, ni))[1])
    monkeypatch.setattr(Trainer, "_step", lambda self, *a: (steps.append(self._ni), step(self, *a))[1])
    cfg = TrainConfig(data=str(data), project=str(tmp_path / "runs"), model="n", width=0.0625, imgsz=64, batch=1,
                      nbs=2, workers=0, device="cpu", epochs=2, warmup_epochs=0, warmup_min_iters=0, val=False,
                      plots=False, progress=False, verbose=False, tensorboard=False, pipeline=pipeline)
    Trainer(cfg).train()
    assert steps == want
