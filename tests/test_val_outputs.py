"""What val writes besides mAP: confusion matrix, per-class P/R/images/instances, P/R/F1 curves and their plots.

Each is checked against a brute-force computation from the written predictions.json and the label files.
"""

import json

import numpy as np
import pytest

from _train_data import NAMES, read_labels
from spikeyolo.engine.results import summary_table
from spikeyolo.metrics.detection import confusion_matrix
from spikeyolo.utils.plots import normalize_columns
from test_val import run_validator


def _iou(a, b):
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = w * h
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


def brute_confusion(dets, gts, nc, conf=0.25, iou=0.45):
    """dets: [(box, score, cls)], gts: [(box, cls)]; pair the globally best remaining IoU until none >= iou."""
    dets = [d for d in dets if d[1] >= conf]
    m = np.zeros((nc + 1, nc + 1), int)
    free_d, free_g = set(range(len(dets))), set(range(len(gts)))
    while True:
        best = max(((_iou(dets[i][0], gts[j][0]), i, j) for i in free_d for j in free_g), default=None)
        if best is None or best[0] < iou:
            break
        _, i, j = best
        m[dets[i][2], gts[j][1]] += 1
        free_d.remove(i)
        free_g.remove(j)
    for j in free_g:
        m[nc, gts[j][1]] += 1
    for i in free_d:
        m[dets[i][2], nc] += 1
    return m


def test_confusion_matrix_hand():
    gt = [[0, 0, 10, 10], [20, 20, 30, 30], [50, 50, 60, 60]]
    gc = [0, 1, 1]
    pb = [[0, 0, 10, 10], [21, 21, 30, 30], [100, 100, 110, 110], [50, 50, 60, 60]]
    # right class on gt0; class 0 on the class-1 gt1 (IoU 0.81); a background detection; gt2's only
    # detection is below the 0.25 confidence, so gt2 is missed
    m = confusion_matrix(pb, [0.9, 0.8, 0.5, 0.1], [0, 0, 1, 1], gt, gc, nc=2)
    assert m.tolist() == [[1, 1, 0], [0, 0, 1], [0, 1, 0]]
    n = normalize_columns(m)
    assert n[:, 1].tolist() == [0.5, 0.0, 0.5] and n[:, 2].tolist() == [0.0, 1.0, 0.0]


def test_confusion_matrix_random_against_brute_force():
    rng = np.random.default_rng(3)
    for _ in range(30):
        ng, nd = rng.integers(0, 6), rng.integers(0, 8)
        xy = rng.uniform(0, 40, (ng + nd, 2))
        wh = rng.uniform(5, 20, (ng + nd, 2))
        boxes = np.concatenate((xy, xy + wh), 1)
        gb, db = boxes[:ng], boxes[ng:]
        gc, dc, ds = rng.integers(0, 3, ng), rng.integers(0, 3, nd), rng.uniform(0, 1, nd)
        mine = confusion_matrix(db, ds, dc, gb, gc, nc=3)
        ref = brute_confusion(list(zip(db, ds, dc)), list(zip(gb, gc)), nc=3)
        assert mine.tolist() == ref.tolist()


def _per_image(root):
    preds = json.loads((root / "val" / "predictions.json").read_text())
    out = {}
    for g in read_labels(root / "ds"):
        dets = [(np.array(p["bbox"][:2] + [p["bbox"][0] + p["bbox"][2], p["bbox"][1] + p["bbox"][3]]),
                 p["score"], p["category_id"]) for p in preds if p["image_id"] == g["stem"]]
        out[g["stem"]] = (dets, list(zip(np.asarray(g["boxes"]), np.asarray(g["cls"]).astype(int))))
    return out


def brute_pr(per_image, c, thr):
    """P and R of class c counting detections with score >= thr, greedy by score at IoU 0.5 (P is 1 when the
    class has detections but none reach thr, 0 when it has none at all)."""
    tp = n_det = n_gt = 0
    any_det = any(d[2] == c for dets, _ in per_image.values() for d in dets)
    for dets, gts in per_image.values():
        mine = sorted((d for d in dets if d[2] == c and d[1] >= thr), key=lambda d: -d[1])
        free = [g for g in gts if g[1] == c]
        n_gt += len(free)
        n_det += len(mine)
        for box, _, _ in mine:
            ious = [_iou(box, g[0]) for g in free]
            if ious and max(ious) >= 0.5:
                free.pop(int(np.argmax(ious)))
                tp += 1
    return (tp / n_det if n_det else float(any_det)), tp / n_gt


def test_validator_per_class_outputs_match_brute_force(tmp_path):
    m, root = run_validator(tmp_path, jitter=0.12, false_pos=3, wrong_cls=0.15, miss=0.1)
    per_image = _per_image(root)
    labels = read_labels(root / "ds")
    assert m["instances_per_class"] == [sum(int((np.asarray(g["cls"]) == c).sum()) for g in labels)
                                        for c in range(len(NAMES))]
    assert m["images_per_class"] == [sum(int(c in np.asarray(g["cls"])) for g in labels) for c in range(len(NAMES))]
    for c in range(len(NAMES)):
        p, r = brute_pr(per_image, c, m["conf_best_f1"])
        assert m["p_per_class"][c] == pytest.approx(p, abs=1e-9) and m["r_per_class"][c] == pytest.approx(r)
    assert m["precision"] == pytest.approx(np.mean(m["p_per_class"]))
    ref = sum(brute_confusion(d, g, len(NAMES)) for d, g in per_image.values())
    assert np.array(m["confusion_matrix"]).tolist() == ref.tolist()
    assert 0 < ref[:-1, :-1].trace() < ref.sum()  # a non-trivial case: hits, confusions and misses
    for f in ("PR_curve.png", "P_curve.png", "R_curve.png", "F1_curve.png", "confusion_matrix.png",
              "confusion_matrix_normalized.png"):
        assert (root / "val" / f).stat().st_size > 5000, f
    table = summary_table(m, NAMES)
    row = next(line for line in table.splitlines() if line.split()[0] == NAMES[1])
    cells = row.split()
    assert int(cells[1]) == m["images_per_class"][1] and int(cells[2]) == m["instances_per_class"][1]
    assert float(cells[3]) == pytest.approx(m["p_per_class"][1], abs=6e-4)
    assert float(cells[4]) == pytest.approx(m["r_per_class"][1], abs=6e-4)
