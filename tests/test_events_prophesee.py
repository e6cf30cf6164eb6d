"""Prophesee protocol on hand-computed cases (COCO AP over 101 recall points)."""

import numpy as np
import pytest

from spikeyolo.events.io import BBOX_DTYPE
from spikeyolo.events.prophesee import evaluate_per_sample, evaluate_prophesee, filter_boxes


def boxes(rows):
    """rows: (t, x, y, w, h, class_id, confidence)."""
    a = np.zeros(len(rows), BBOX_DTYPE)
    for k, name in enumerate(("t", "x", "y", "w", "h", "class_id", "confidence")):
        a[name] = [r[k] for r in rows]
    return a


BIG = (10, 10, 50, 50)  # diag 70.7, sides 50: passes the Gen1 filter
HALF = 51 / 101  # one of two GT found at precision 1: recall points 0, 0.01, ..., 0.50


def test_filter_by_hand():
    b = boxes([(500_000, *BIG, 0, 1), (500_001, *BIG, 0, 1), (600_000, 0, 0, 9, 50, 0, 1),
               (600_000, 0, 0, 20, 20, 0, 1), (600_000, 0, 0, 22, 22, 0, 1)])
    kept = filter_boxes(b)  # t > 0.5 s, w^2 + h^2 >= 900, w, h >= 10
    assert kept["t"].tolist() == [500_001, 600_000] and kept["w"].tolist() == [50, 22]


def test_perfect_and_first_half_second_ignored():
    gt = {"a": boxes([(400_000, *BIG, 0, 1), (1_000_000, *BIG, 0, 1)])}
    dt = {"a": boxes([(1_040_000, *BIG, 0, 0.9)])}
    r = evaluate_prophesee(gt, dt, names=("car", "pedestrian"))
    assert r["protocol"] == "prophesee" and r["AP"] == pytest.approx(1.0) and r["images"] == 1
    # without the 0.5 s skip the box at 0.4 s counts and is missed
    r0 = evaluate_prophesee(gt, dt, skip_us=0)
    assert r0["AP"] == pytest.approx(HALF) and r0["AP50"] == pytest.approx(HALF) and r0["images"] == 2


def test_small_box_ignored():
    gt = {"a": boxes([(1_000_000, *BIG, 0, 1), (1_000_000, 200, 100, 8, 50, 0, 1)])}  # side 8 < 10
    dt = {"a": boxes([(1_000_000, *BIG, 0, 0.8)])}
    assert evaluate_prophesee(gt, dt)["AP"] == pytest.approx(1.0)
    assert evaluate_prophesee(gt, dt, min_box_side=5)["AP"] == pytest.approx(HALF)
    # a small detection is dropped too: a false positive that would otherwise outrank the match
    dt2 = {"a": boxes([(1_000_000, *BIG, 0, 0.8), (1_000_000, 100, 100, 5, 5, 0, 0.99)])}
    assert evaluate_prophesee({"a": gt["a"][:1]}, dt2)["AP"] == pytest.approx(1.0)
    r = evaluate_prophesee({"a": gt["a"][:1]}, dt2, min_box_diag=0, min_box_side=0)
    assert r["AP"] == pytest.approx(0.5)  # precision 1/2 at recall 1 everywhere


def test_time_tolerance_40ms_matched_60ms_not():
    gt = {"a": boxes([(1_000_000, *BIG, 1, 1)])}
    assert evaluate_prophesee(gt, {"a": boxes([(960_000, *BIG, 1, 0.9)])})["AP"] == pytest.approx(1.0)
    assert evaluate_prophesee(gt, {"a": boxes([(1_060_000, *BIG, 1, 0.9)])})["AP"] == pytest.approx(0.0)
    assert evaluate_prophesee(gt, {})["AP"] == pytest.approx(0.0)
    # recordings are kept apart: a detection in another recording at the same time does not count
    assert evaluate_prophesee(gt, {"b": boxes([(1_000_000, *BIG, 1, 0.9)])})["AP"] == pytest.approx(0.0)


def test_per_sample_protocol():
    gts = [{"im_file": "rec_300000", "shape": (240, 304), "cls": np.array([0]),
            "boxes_xyxy": np.array([[0.0, 0, 20, 20]])}]
    preds = [("rec_300000", np.array([[0.0, 0, 20, 20]]), np.array([0.9]), np.array([0]))]
    r = evaluate_per_sample(gts, preds)
    assert r["protocol"] == "per-sample" and r["AP"] == pytest.approx(1.0)


def test_toolbox_field_names_and_inclusive_tolerance():
    gt = np.zeros(1, [("ts", "<u8"), ("x", "<f4"), ("y", "<f4"), ("w", "<f4"), ("h", "<f4"), ("class_id", "u1")])
    gt[0] = (1_000_000, *BIG, 0)
    # RVT / toolbox detections: class_confidence, another field order
    dt = np.zeros(2, [("t", "<u8"), ("x", "<f4"), ("y", "<f4"), ("w", "<f4"), ("h", "<f4"), ("class_id", "u1"),
                      ("track_id", "<u4"), ("class_confidence", "<f4")])
    dt[0] = (1_050_000, *BIG, 0, 0, 0.3)  # exactly 50 ms away: inside (the window is closed)
    dt[1] = (1_050_000, 200, 150, 40, 40, 0, 0, 0.9)  # a false positive ranked first
    r = evaluate_prophesee({"a": gt}, {"a": dt})
    assert r["AP"] == pytest.approx(0.5) and r["dt_boxes"] == 2
