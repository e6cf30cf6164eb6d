import contextlib
import io
import json

import numpy as np
import pytest
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from spikeyolo.metrics.coco import coco_evaluate, write_coco_json
from spikeyolo.metrics.detection import DetectionMetrics, match_predictions, pr_curves, precision_recall


def random_case(seed=0, n_img=6, nc=3):
    rng = np.random.default_rng(seed)
    gts, preds = [], []
    for k in range(n_img):
        n = int(rng.integers(0, 6))
        xy = rng.uniform(0, 200, (n, 2))
        wh = rng.uniform(8, 120, (n, 2))
        boxes = np.concatenate((xy, xy + wh), 1)
        cls = rng.integers(0, nc, n)
        gts.append({"image_id": f"/data/images/img_{k:03d}.jpg", "shape": (360, 400), "boxes_xyxy": boxes,
                    "cls": cls})
        # noisy copies of the GT, some with the wrong class, plus random false positives
        jit = boxes + rng.normal(0, 6, boxes.shape)
        pcls = np.where(rng.random(n) < 0.8, cls, (cls + 1) % nc)
        fp_xy = rng.uniform(0, 250, (3, 2))
        fp = np.concatenate((fp_xy, fp_xy + rng.uniform(5, 60, (3, 2))), 1)
        pb = np.concatenate((jit, fp))
        preds.append((gts[-1]["image_id"], pb, rng.random(len(pb)), np.concatenate((pcls, rng.integers(0, nc, 3)))))
    return gts, preds


def test_coco_evaluate_equals_pycocotools_on_written_json(tmp_path):
    gts, preds = random_case()
    names = ["a", "b", "c"]
    res = coco_evaluate(gts, preds, names)
    # independent ground-truth json with string image ids (file stems), category ids 1..3
    images, anns = [], []
    for g in gts:
        stem = g["image_id"].split("/")[-1].rsplit(".", 1)[0]
        images.append({"id": stem, "height": 360, "width": 400})
        for b, c in zip(g["boxes_xyxy"], g["cls"]):
            w, h = b[2] - b[0], b[3] - b[1]
            anns.append({"id": len(anns) + 1, "image_id": stem, "category_id": int(c) + 1, "iscrowd": 0,
                         "bbox": [float(b[0]), float(b[1]), float(w), float(h)], "area": float(w * h)})
    gt_path = tmp_path / "gt.json"
    gt_path.write_text(json.dumps({"images": images, "annotations": anns,
                                   "categories": [{"id": i + 1, "name": n} for i, n in enumerate(names)]}))
    pred_path = write_coco_json(preds, tmp_path / "pred.json", class_ids=[1, 2, 3])
    written = json.loads(pred_path.read_text())
    assert written[0]["image_id"] == "img_000" and set(written[0]) == {"image_id", "category_id", "bbox", "score"}
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO(str(gt_path))
        ev = COCOeval(coco_gt, coco_gt.loadRes(str(pred_path)), "bbox")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    assert 0.05 < ev.stats[0] < 0.95  # a non-trivial case
    for key, k in (("map", 0), ("map50", 1), ("map75", 2), ("map_small", 3), ("map_medium", 4), ("map_large", 5)):
        ref = ev.stats[k]
        assert (np.isnan(res[key]) and ref < 0) or res[key] == pytest.approx(ref, abs=2e-4), key
    # per-class AP from the precision table (area all, maxDets 100)
    p = ev.eval["precision"][:, :, :, 0, -1]
    for c in range(3):
        pc = p[:, :, c]
        assert res["ap_per_class"][c] == pytest.approx(pc[pc > -1].mean(), abs=2e-4)
        assert res["ap50_per_class"][c] == pytest.approx(pc[0][pc[0] > -1].mean(), abs=2e-4)


def test_pycocotools_fallback_same_numbers(monkeypatch):
    import spikeyolo.metrics.coco as coco_mod

    gts, preds = random_case(seed=1)
    fast = coco_evaluate(gts, preds, ["a", "b", "c"])
    monkeypatch.setattr(coco_mod, "_backend", lambda: (COCO, COCOeval, "pycocotools"))
    slow = coco_evaluate(gts, preds, ["a", "b", "c"])
    assert slow["backend"] == "pycocotools"
    np.testing.assert_allclose(fast["stats"], slow["stats"], atol=2e-4)
    np.testing.assert_allclose(fast["ap_per_class"], slow["ap_per_class"], atol=2e-4)


def _one_class_case():
    gts = [{"image_id": "x", "shape": (100, 100), "boxes_xyxy": [[10, 10, 40, 40], [50, 50, 90, 90]], "cls": [0, 0]}]
    preds = [("x", [[10, 10, 40, 40], [60, 0, 70, 20], [50, 50, 90, 90]], [0.9, 0.8, 0.7], [0, 0, 0])]
    return gts, preds


def test_coco_hand_cases(tmp_path):
    gts = [{"image_id": "x", "shape": (100, 100), "boxes_xyxy": [[10, 10, 40, 40], [50, 50, 90, 90]], "cls": [0, 1]},
           {"image_id": "y", "shape": (100, 100), "boxes_xyxy": np.zeros((0, 4)), "cls": []}]
    perfect = [("x", np.array([[10, 10, 40, 40], [50, 50, 90, 90]]), [0.9, 0.8], [0, 1])]
    r = coco_evaluate(gts, perfect, ["a", "b"])
    assert r["map"] == pytest.approx(1.0) and r["map50"] == pytest.approx(1.0)
    assert r["ap_per_class"] == pytest.approx([1.0, 1.0])
    # a false positive in image y ranked above the class-0 TP: precision 1/2 at every recall -> AP 0.5
    r = coco_evaluate(gts, perfect + [("y", [[0, 0, 20, 20]], [0.95], [0])], ["a", "b"])
    assert r["ap_per_class"] == pytest.approx([0.5, 1.0]) and r["map"] == pytest.approx(0.75)
    # TP 0.9, FP 0.8, TP 0.7 of two GT: interpolated precision 1 up to recall 0.5, then 2/3 -> 101-point AP
    g1, p1 = _one_class_case()
    ap = (51 * 1.0 + 50 * 2 / 3) / 101
    assert coco_evaluate(g1, p1, ["a"])["map50"] == pytest.approx(ap, abs=1e-6)
    # numeric stems as ints for the official COCO annotation files
    path = write_coco_json([("/x/000000000139.jpg", [[0, 0, 2, 3]], [0.5], [2])], tmp_path / "p.json",
                           class_ids=[1, 2, 3], numeric_ids=True)
    assert json.loads(path.read_text()) == [{"image_id": 139, "category_id": 3, "bbox": [0, 0, 2, 3], "score": 0.5}]
    # no predictions at all
    assert coco_evaluate(gts, [], ["a", "b"])["map"] == 0.0


def test_match_predictions_hand():
    gt = [[0, 0, 10, 10]]
    pb = [[0, 0, 10, 10], [0, 0, 10, 9], [0, 0, 10, 10]]
    tp = match_predictions(pb, [0.5, 0.9, 0.8], [0, 0, 1], gt, [0], iou_thresholds=(0.5, 0.95))
    # the 0.9 box (IoU 0.9) takes the GT at 0.5; at 0.95 it misses and the 0.5 box (IoU 1) takes it
    assert tp.tolist() == [[False, True], [True, False], [False, False]]


def test_precision_recall_and_pr_curve_hand():
    g1, p1 = _one_class_case()
    m = DetectionMetrics(nc=1)
    pred = np.concatenate((np.array(p1[0][1], float), np.array(p1[0][2])[:, None], np.zeros((3, 1))), 1)
    m.update(pred, g1[0]["boxes_xyxy"], g1[0]["cls"])
    # thresholds <= 0.7: P 2/3 R 1 (F1 0.8) is the best; with no smoothing the first such grid point wins
    r = m.compute(smooth=0.0)
    assert r["precision"] == pytest.approx(2 / 3) and r["recall"] == pytest.approx(1.0)
    assert r["conf"] <= 0.7 and r["f1"] == pytest.approx(0.8)
    assert r["map"] == pytest.approx((51 + 50 * 2 / 3) / 101)
    grid, prec = m.pr_curves(n_points=5)[:2]
    assert grid.tolist() == [0, 0.25, 0.5, 0.75, 1.0] and prec[0] == pytest.approx([1, 1, 1, 2 / 3, 2 / 3])


def test_precision_recall_two_classes_mean_f1():
    # class 0: TP@0.9, FP@0.6 (1 GT); class 1: FP@0.8, TP@0.3 (1 GT); class 2 has predictions but no GT
    tp = np.array([1, 0, 0, 1, 0], bool)
    conf = np.array([0.9, 0.6, 0.8, 0.3, 0.95])
    cls = np.array([0, 0, 1, 1, 2])
    r = precision_recall(tp, conf, cls, gt_cls=[0, 1], nc=3, n_conf=101, smooth=0.0)
    # t in (0.8, 0.9]: c0 P1 R1 (F1 1), c1 no detections P1 R0 (F1 0) -> 0.5; (0.6, 0.8]: c1 P0 -> 0.5
    # t in (0.3, 0.6]: c0 P.5 R1 (2/3); c1 P0 R0 (0)  -> 1/3
    # t <= 0.3:        c0 2/3, c1 P.5 R1 2/3          -> 2/3 (best)
    assert r["conf"] <= 0.3 and r["precision"] == pytest.approx(0.5) and r["recall"] == pytest.approx(1.0)
    assert np.isnan(r["p_per_class"][2])
    _, prec, ap = pr_curves(tp, conf, cls, [0, 1], nc=3)
    assert np.isnan(ap[2]) and ap[0] == pytest.approx(1.0) and ap[1] == pytest.approx(0.5)


def test_precision_is_zero_for_a_class_with_ground_truth_and_no_predictions():
    # issue 11.2: class 1 has 1 GT and no detections; class 0 one TP. Per class P: c0 1, c1 0 -> mean 0.5
    m = DetectionMetrics(nc=2)
    m.update(np.array([[0, 0, 10, 10, 0.9, 0]]), np.array([[0, 0, 10, 10], [20, 20, 30, 30]]), np.array([0, 1]))
    r = m.compute(smooth=0.0)
    assert r["p_per_class"].tolist() == [1.0, 0.0] and r["precision"] == pytest.approx(0.5)
    assert r["r_per_class"].tolist() == [1.0, 0.0]
    # no predictions at all: nothing is credited
    empty = DetectionMetrics(nc=1)
    empty.update(np.zeros((0, 6)), np.array([[0, 0, 10, 10]]), np.array([0]))
    assert empty.compute()["precision"] == 0.0 and empty.compute()["recall"] == 0.0
