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


# ---------------------------------------------------------------- exactly the toolbox (issue 11.13)


def test_boxes_and_scores_are_not_rounded():
    # IoU 0.499996: not a match at 0.5 (rounding h to 3 decimals would make it IoU 0.5, a match)
    gt = {"a": boxes([(1_000_000, 0, 0, 100, 100, 0, 1)])}
    h = np.float32(49.9996)
    assert 100 * float(h) / 10_000 < 0.5 and round(float(h), 3) == 50.0
    r = evaluate_prophesee(gt, {"a": boxes([(1_000_000, 0, 0, 100, h, 0, 0.9)])})
    assert r["AP50"] == 0.0 and r["AP"] == 0.0
    # scores 0.300004 (a miss) above 0.300001 (the hit): precision 1/2 at recall 1 -> AP50 0.5; rounded to 5
    # decimals they would tie, and the hit (first in the input) would be ranked first (AP50 1)
    dt = boxes([(1_000_000, 0, 0, 100, 100, 0, 0.300001), (1_000_000, 300, 200, 100, 100, 0, 0.300004)])
    assert evaluate_prophesee(gt, {"a": dt})["AP50"] == pytest.approx(0.5)


def test_size_filter_and_areas_in_float32():
    w = np.float32(21.21320343017578)  # w^2 + h^2 is 900 in float32, 899.99999954 exactly
    assert float(w) ** 2 * 2 < 900 <= w * w + w * w
    kept = filter_boxes(boxes([(600_000, 0, 0, w, w, 0, 1)]))
    assert len(kept) == 1
    # area 31.999996 * 32.000004 is 1024 in float32 (1023.99999999999 exactly): a medium object for COCO
    a, b = np.float32(31.999996185302734), np.float32(32.000003814697266)
    assert float(a) * float(b) < 32**2 <= a * b
    gt = {"a": boxes([(1_000_000, 3, 5, a, b, 0, 1)])}
    r = evaluate_prophesee(gt, {"a": boxes([(1_000_000, 3, 5, a, b, 0, 0.8)])})
    assert r["AP"] == pytest.approx(1.0) and r["AP_M"] == pytest.approx(1.0) and r["AP_S"] == pytest.approx(1.0)


def test_no_detections_at_all_is_zero():
    gt = {"a": boxes([(1_000_000, *BIG, 0, 1)]), "b": boxes([(2_000_000, *BIG, 1, 1)])}
    for dt in ({}, {"a": boxes([]), "b": np.zeros(0, BBOX_DTYPE)}):
        r = evaluate_prophesee(gt, dt)
        assert r["AP"] == 0.0 and r["AP50"] == 0.0 and r["dt_boxes"] == 0 and r["images"] == 2


def _toolbox_reference(gt_list, dt_list, height=240, width=304, time_tol=50_000):
    """The toolbox's evaluate_detection written out from its description, straight on pycocotools: filter in
    the arrays' float32, loop over GT timestamps, boxes and scores as the rows' numpy scalars."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    def keep(b):
        return b[(b["t"] > 500_000) & (b["w"] ** 2 + b["h"] ** 2 >= 30**2) & (b["w"] >= 10) & (b["h"] >= 10)]

    images, anns, res = [], [], []
    for gt, dt in zip(gt_list, dt_list):
        gt, dt = keep(gt), keep(dt)
        for ts in np.unique(gt["t"]):
            im = len(images) + 1
            images.append({"id": im, "height": height, "width": width})
            for g in gt[gt["t"] == ts]:
                anns.append({"area": float(g["w"] * g["h"]), "iscrowd": False, "image_id": im,
                             "bbox": [g["x"], g["y"], g["w"], g["h"]], "category_id": int(g["class_id"]) + 1,
                             "id": len(anns) + 1})
            for d in dt[(dt["t"] >= ts - time_tol) & (dt["t"] <= ts + time_tol)]:
                res.append({"image_id": im, "category_id": int(d["class_id"]) + 1, "score": float(d["confidence"]),
                            "bbox": [d["x"], d["y"], d["w"], d["h"]]})
    coco = COCO()
    coco.dataset = {"images": images, "annotations": anns,
                    "categories": [{"id": 1, "name": "car"}, {"id": 2, "name": "pedestrian"}]}
    coco.createIndex()
    ev = COCOeval(coco, coco.loadRes(res), "bbox")
    ev.params.imgIds = np.arange(1, len(images) + 1, dtype=int)
    ev.evaluate()
    ev.accumulate()
    ev.summarize()
    return [s if s >= 0 else np.nan for s in ev.stats[:6]]  # COCO's -1 (nothing to score) is our nan


def test_matches_the_toolbox_on_random_recordings(capsys):
    rng = np.random.default_rng(0)
    gts, dts = {}, {}
    for rec in "abc":
        n = 60
        t = np.sort(rng.choice(np.arange(400_000, 3_000_000, 50_000), n))
        xy, wh = rng.uniform(0, 250, (n, 2)), rng.uniform(5, 80, (n, 2))
        gts[rec] = boxes([(t[i], *xy[i], *wh[i], rng.integers(0, 2), 1) for i in range(n)])
        m = 150  # detections: jittered copies of GT boxes and random boxes, with jittered times
        src = rng.integers(0, n, m)
        jit = rng.normal(0, 6, (m, 4)) * (rng.random((m, 1)) < 0.7) + rng.uniform(-100, 100, (m, 4)) * (
            rng.random((m, 1)) < 0.2)
        dts[rec] = boxes([(max(0, t[s] + int(rng.integers(-70_000, 70_000))), xy[s, 0] + j[0], xy[s, 1] + j[1],
                           max(1.0, wh[s, 0] + j[2]), max(1.0, wh[s, 1] + j[3]),
                           gts[rec]["class_id"][s] if rng.random() < 0.9 else 1 - gts[rec]["class_id"][s],
                           rng.random()) for s, j in zip(src, jit)])
        dts[rec] = dts[rec][np.argsort(dts[rec]["t"], kind="stable")]
    want = _toolbox_reference([gts[r] for r in "abc"], [dts[r] for r in "abc"])
    r = evaluate_prophesee(gts, dts)
    got = [r[k] for k in ("AP", "AP50", "AP75", "AP_S", "AP_M", "AP_L")]
    assert 0.05 < want[0] < 0.95  # a case with matches and misses
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-12)
