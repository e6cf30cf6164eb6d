"""Per-image AP (cached matches) against COCOeval, and the paired bootstrap on hand cases."""

import numpy as np
import pytest

from spikeyolo.metrics.coco import coco_evaluate
from spikeyolo.metrics.per_image import ImageScores, average_precision, paired_bootstrap, score_image, score_images


def _random_image(rng, nc=2):
    gt = rng.uniform(0, 80, (rng.integers(1, 6), 2))
    gt_boxes = np.concatenate((gt, gt + rng.uniform(5, 20, gt.shape)), 1)
    gt_cls = rng.integers(0, nc, len(gt_boxes))
    n = rng.integers(0, 130)  # more than COCO's 100 per image sometimes
    near = gt_boxes[rng.integers(0, len(gt_boxes), n)] + rng.normal(0, 2, (n, 4))
    near[:, 2:] = np.maximum(near[:, 2:], near[:, :2] + 1)  # positive sizes (COCO ignores negative areas)
    return near, rng.uniform(0, 1, n), rng.integers(0, nc, n), gt_boxes, gt_cls


def test_cached_match_ap_equals_cocoeval():
    rng = np.random.default_rng(2)
    images = {f"im{i}": _random_image(rng) for i in range(12)}
    preds = [(i, b, s, c) for i, (b, s, c, _, _) in images.items()]
    gts = {i: (gb, gc) for i, (_, _, _, gb, gc) in images.items()}
    coco = coco_evaluate([{"image_id": i, "shape": (100, 100), "boxes_xyxy": gb, "cls": gc}
                          for i, (gb, gc) in gts.items()], preds, ["a", "b"])
    map50, map_ = average_precision(list(score_images(preds, gts).values()), 2)
    assert map50 == pytest.approx(coco["map50"], abs=1e-9) and map_ == pytest.approx(coco["map"], abs=1e-9)


def _scores(hit: bool, conf: float) -> ImageScores:
    """One image with one ground-truth box and one detection that hits it (or misses it)."""
    gt = np.array([[0.0, 0.0, 10.0, 10.0]])
    det = gt if hit else gt + 50
    return score_image(det, [conf], [0], gt, [0])


def test_bootstrap_of_identical_forms_is_exactly_zero():
    rng = np.random.default_rng(3)
    groups = [[score_image(*_random_image(rng)) for _ in range(3)] for _ in range(5)]
    out = paired_bootstrap({"ref": groups, "same": groups}, "ref", nc=2, resamples=200)
    assert out["same"]["d_map50"] == 0 and out["same"]["d_map"] == 0
    assert out["same"]["d_map50_ci"] == (0.0, 0.0) and out["same"]["d_map_ci"] == (0.0, 0.0)


def test_bootstrap_hand_case():
    # two source images: both forms find image 0's box; on image 1 the reference finds it, the other misses.
    ref = [[_scores(True, 0.9)], [_scores(True, 0.8)]]
    other = [[_scores(True, 0.9)], [_scores(False, 0.8)]]
    assert average_precision([g[0] for g in other], 1)[0] == pytest.approx(51 / 101)  # recall 0.5 at precision 1
    out = paired_bootstrap({"ref": ref, "other": other}, "ref", nc=1, resamples=1000, seed=0)
    # full set: 51/101 - 1; draws {0,0}: 0, {1,1}: -1, mixed: 51/101 - 1, each pair a quarter of the time, so
    # the 2.5% and 97.5% percentiles are the extremes
    assert out["other"]["d_map50"] == pytest.approx(51 / 101 - 1)
    assert out["other"]["d_map50_ci"] == (-1.0, 0.0)
    assert out["ref"]["d_map50_ci"] == (0.0, 0.0)


def test_only_the_100_best_detections_per_image_count_as_in_cocoeval():
    gt = np.array([[0.0, 0.0, 10.0, 10.0]])
    misses = np.tile([[50.0, 50.0, 60.0, 60.0]], (100, 1))
    boxes = np.concatenate((misses, gt))  # the one hit is the 101st by score
    scores = np.concatenate((np.full(100, 0.9), [0.5]))
    coco = coco_evaluate([{"image_id": "a", "shape": (100, 100), "boxes_xyxy": gt, "cls": [0]}],
                         [("a", boxes, scores, np.zeros(101))], ["a"])
    ours = average_precision([score_image(boxes, scores, np.zeros(101), gt, [0])], 1)
    assert coco["map50"] == 0 and ours == (0.0, 0.0)
