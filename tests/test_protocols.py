"""Evaluation protocols: the ultralytics AP against an independent implementation written here from the protocol's
definition (brute-force matching per IoU threshold, 101-point interpolation by hand), rectangular batches against
hand-computed shapes, and a crafted COCO-JSON case on which ``coco`` and ``ultralytics`` give different numbers,
each equal to its own reference (pycocotools on the annotation file for ``coco``)."""

import json

import cv2
import numpy as np
import pytest
import torch
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval
from torch import nn

from spikeyolo.data import build_dataset
from spikeyolo.data.rect import rect_batch_shapes
from spikeyolo.engine.validator import Validator, protocol_loader
from spikeyolo.metrics.ultralytics_ap import UltralyticsAP, match_detections

THRESHOLDS = [0.5 + 0.05 * k for k in range(10)]


# ---------------------------------------------------------------- the reference, from the protocol's definition


def ref_iou(a, b) -> float:
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union


def ref_true_positives(dets, gts, thr) -> list[bool]:
    """``dets`` [(box, score, cls)] in NMS order, ``gts`` [(box, cls)]: each detection picks its best same-class
    box with IoU >= thr; a box picked by several detections is a hit for the first of them only."""
    picks = []
    for box, _, c in dets:
        best, best_iou = None, -1.0
        for j, (g, gc) in enumerate(gts):
            v = ref_iou(box, g) if gc == c else 0.0
            if v >= thr and v > best_iou:
                best, best_iou = j, v
        picks.append(best)
    taken, tp = set(), []
    for j in picks:
        tp.append(j is not None and j not in taken)
        if j is not None:
            taken.add(j)
    return tp


def ref_interp(x, xs, ys) -> float:
    """Piecewise-linear through (xs, ys) (xs non-decreasing): the last point at or below x starts the segment;
    at or beyond the final point, its value."""
    j = max(k for k in range(len(xs)) if xs[k] <= x)
    if j == len(xs) - 1 or xs[j] == x:
        return ys[j]
    return ys[j] + (ys[j + 1] - ys[j]) * (x - xs[j]) / (xs[j + 1] - xs[j])


def ref_ap(hits: list[tuple[float, bool]], n_gt: int) -> float:
    """101-point interpolated trapezoid AP of one class from (score, hit) pairs."""
    hits = sorted(hits, key=lambda h: -h[0])
    recall, precision, tp = [0.0], [1.0], 0
    for k, (_, hit) in enumerate(hits, 1):
        tp += hit
        recall.append(tp / n_gt)
        precision.append(tp / k)
    recall.append(1.0)
    precision.append(0.0)
    env = list(precision)
    for k in range(len(env) - 2, -1, -1):
        env[k] = max(env[k], env[k + 1])
    xs = [k / 100 for k in range(101)]
    ys = [ref_interp(x, recall, env) for x in xs]
    return sum((ys[k] + ys[k + 1]) / 2 * (xs[k + 1] - xs[k]) for k in range(100))


def ref_ultralytics(images) -> dict:
    """``images``: [(dets [(box, score, cls)] in NMS order, gts [(box, cls)])] -> AP per class and threshold."""
    classes = sorted({c for _, gts in images for _, c in gts})
    ap = {}
    for c in classes:
        n_gt = sum(gc == c for _, gts in images for _, gc in gts)
        per_thr = []
        for thr in THRESHOLDS:
            hits = []
            for dets, gts in images:
                tp = ref_true_positives(dets, gts, thr)
                hits += [(d[1], t) for d, t in zip(dets, tp) if d[2] == c]
            per_thr.append(ref_ap(hits, n_gt) if hits else 0.0)
        ap[c] = per_thr
    return {"ap": ap, "map50": np.mean([v[0] for v in ap.values()]), "map": np.mean(list(ap.values()))}


def as_pred(dets) -> torch.Tensor:
    return torch.tensor([[*b, s, c] for b, s, c in dets], dtype=torch.float64).reshape(-1, 6)


def random_image(rng, nc=3, n_gt=6, n_det=14):
    gts = []
    for _ in range(n_gt):
        x, y = rng.uniform(0, 80, 2)
        gts.append(((x, y, x + rng.uniform(8, 30), y + rng.uniform(8, 30)), int(rng.integers(0, nc))))
    dets = []
    for _ in range(n_det):
        if gts and rng.random() < 0.7:  # near a ground-truth box (possibly another class), jittered
            (x1, y1, x2, y2), c = gts[int(rng.integers(0, len(gts)))]
            j = rng.normal(0, 2.5, 4)
            box, c = (x1 + j[0], y1 + j[1], x2 + j[2], y2 + j[3]), (c if rng.random() < 0.85 else (c + 1) % nc)
        else:
            x, y = rng.uniform(0, 80, 2)
            box, c = (x, y, x + rng.uniform(8, 30), y + rng.uniform(8, 30)), int(rng.integers(0, nc))
        dets.append((tuple(float(v) for v in box), float(rng.uniform(0.01, 1.0)), c))
    dets.sort(key=lambda d: -d[1])  # NMS order
    return dets, [(tuple(float(v) for v in b), c) for b, c in gts]


# ---------------------------------------------------------------- the ultralytics AP


def test_matching_equals_brute_force():
    rng = np.random.default_rng(0)
    for _ in range(30):
        dets, gts = random_image(rng)
        tp = match_detections(as_pred(dets)[:, :4], [d[2] for d in dets], [g[0] for g in gts], [g[1] for g in gts],
                              THRESHOLDS)
        for t, thr in enumerate(THRESHOLDS):
            assert tp[:, t].tolist() == ref_true_positives(dets, gts, thr)


def test_a_box_taken_by_an_earlier_detection_is_not_replaced():
    # detection 0 (higher score) and 1 both overlap box A best; box B overlaps detection 1 too, less: the
    # protocol gives detection 1 no second choice, so it is a false positive
    gts = [((0, 0, 10, 10), 0), ((4, 0, 14, 10), 0)]
    dets = [((0, 0, 10, 10), 0.9, 0), ((1, 0, 11, 10), 0.8, 0)]
    tp = match_detections(as_pred(dets)[:, :4], [0, 0], [g[0] for g in gts], [0, 0], [0.5])
    assert tp[:, 0].tolist() == [True, False] == ref_true_positives(dets, gts, 0.5)


def test_ap_by_hand():
    # one class, two boxes; detections hit (0.9), miss (0.8), hit (0.7): recall .5 .5 1, precision 1 .5 .667;
    # envelope 1 up to recall .5 (exclusive), 2/3 from .5 to .99, 0 at recall 1 (the closing sentinel):
    # 49 * .01 * 1 + .01 * (1 + 2/3) / 2 + 49 * .01 * 2/3 + .01 * (2/3) / 2 = .8283333...
    gts = [((0, 0, 10, 10), 0), ((20, 20, 30, 30), 0)]
    dets = [((0, 0, 10, 10), 0.9, 0), ((40, 40, 50, 50), 0.8, 0), ((20, 20, 30, 30), 0.7, 0)]
    acc = UltralyticsAP(1)
    acc.update(as_pred(dets), [g[0] for g in gts], [0, 0])
    m = acc.compute()
    expected = 0.49 + 0.01 * (1 + 2 / 3) / 2 + 0.49 * 2 / 3 + 0.01 * (2 / 3) / 2
    assert m["map50"] == pytest.approx(expected, abs=1e-12) and m["map"] == pytest.approx(expected, abs=1e-12)
    perfect = UltralyticsAP(1)
    perfect.update(as_pred(dets[:1]), [gts[0][0]], [0])
    assert perfect.compute()["map"] == pytest.approx(0.995, abs=1e-12)  # the protocol's known ceiling


def test_ultralytics_ap_equals_the_reference_on_random_images():
    rng = np.random.default_rng(3)
    images = [random_image(rng, nc=4, n_gt=int(rng.integers(0, 9)), n_det=int(rng.integers(0, 25)))
              for _ in range(25)]
    acc = UltralyticsAP(5)  # class 4 never appears: no AP for it
    for dets, gts in images:
        acc.update(as_pred(dets), [g[0] for g in gts], [g[1] for g in gts])
    m, ref = acc.compute(), ref_ultralytics(images)
    assert 0.05 < ref["map"] < ref["map50"] < 0.95  # a non-trivial case
    assert m["map50"] == pytest.approx(ref["map50"], abs=1e-12) and m["map"] == pytest.approx(ref["map"], abs=1e-12)
    for c in range(5):
        if c in ref["ap"]:
            assert m["ap50_per_class"][c] == pytest.approx(ref["ap"][c][0], abs=1e-12)
            assert m["ap_per_class"][c] == pytest.approx(np.mean(ref["ap"][c]), abs=1e-12)
        else:
            assert np.isnan(m["ap_per_class"][c])


# ---------------------------------------------------------------- rectangular batches


def test_rect_batch_shapes_by_hand():
    # (h, w): 4:3 landscape x2, a portrait 640x427 and a square; batch 2 at 640, stride 32, pad 0.5.
    # sorted by h / w: the two landscapes (.75), then the square (1) and the portrait (1.499)
    # landscape batch: h = ceil(.75 * 640 / 32 + .5) * 32 = ceil(15.5) * 32 = 512, w = ceil(20.5) * 32 = 672
    # mixed batch (1 and > 1): 672 x 672
    order, shapes = rect_batch_shapes([(480, 640), (640, 427), (640, 640), (960, 1280)], 2, 640)
    assert order.tolist() == [0, 3, 2, 1]
    assert shapes.tolist() == [[512, 672], [672, 672]]
    # all portrait: w = ceil(427 / 640 * 20 + .5) * 32 = ceil(13.84) * 32 = 448
    assert rect_batch_shapes([(640, 427)], 1, 640)[1].tolist() == [[672, 448]]


def _write_image_dataset(root, sizes):
    (root / "images").mkdir(parents=True)
    (root / "labels").mkdir(parents=True)
    for k, (h, w) in enumerate(sizes):
        cv2.imwrite(str(root / "images" / f"im{k}.png"), np.full((h, w, 3), 60, np.uint8))
        (root / "labels" / f"im{k}.txt").write_text("0 0.5 0.5 0.25 0.25\n")
    return {"path": str(root), "val": "images", "names": ["thing"]}


def test_rect_loader_letterboxes_each_batch_to_its_shape(tmp_path):
    data = _write_image_dataset(tmp_path, [(96, 128), (128, 96), (96, 128), (128, 128)])
    ds = build_dataset(data, "val", imgsz=64)
    batches = list(protocol_loader(ds, 2, 0, "ultralytics"))
    # landscape pair: long side 64 -> 48 x 64, in ceil(.75 * 2 + .5) * 32 = 64 by ceil(2.5) * 32 = 96, pad (16, 8)
    assert tuple(batches[0]["img"].shape) == (2, 3, 64, 96)
    assert [f.split("/")[-1] for f in batches[0]["im_file"]] == ["im0.png", "im2.png"]
    assert batches[0]["ratio_pad"][0] == ((0.5, 0.5), (16.0, 8.0))
    # square + portrait: 96 x 96; the portrait 64 x 48 at pad (24, 16)
    assert tuple(batches[1]["img"].shape) == (2, 3, 96, 96)
    assert batches[1]["ratio_pad"][1] == ((0.5, 0.5), (24.0, 16.0))
    # the coco protocol keeps square 64 x 64 batches in dataset order
    square = list(protocol_loader(ds, 2, 0, "coco"))
    assert tuple(square[0]["img"].shape) == (2, 3, 64, 64) and square[0]["im_file"][1].endswith("im1.png")


# ---------------------------------------------------------------- a crafted case: the protocols differ


NAMES = ["a", "b", "c"]
ANCHORS = 140


def _crafted_coco(root):
    """Two 96x128 images. im1: an `a` box, a `b` box, a `c` and an `a` crowd region. im2: 120 small `a` boxes."""
    (root / "images").mkdir(parents=True)
    anns = []

    def ann(image_id, cat, x1, y1, x2, y2, crowd=0):
        anns.append({"id": len(anns) + 1, "image_id": image_id, "category_id": cat, "iscrowd": crowd,
                     "bbox": [x1, y1, x2 - x1, y2 - y1], "area": (x2 - x1) * (y2 - y1)})

    ann(1, 1, 10, 10, 50, 50)
    ann(1, 2, 60, 20, 100, 70)
    ann(1, 3, 0, 60, 40, 96, crowd=1)
    ann(1, 1, 70, 75, 120, 95, crowd=1)
    for k in range(120):
        x, y = 10 * (k % 12) + 2, 9 * (k // 12) + 2
        ann(2, 1, x, y, x + 6, y + 6)
    for k in (1, 2):
        cv2.imwrite(str(root / "images" / f"im{k}.png"), np.full((96, 128, 3), 70, np.uint8))
    images = [{"id": k, "file_name": f"im{k}.png", "height": 96, "width": 128} for k in (1, 2)]
    cats = [{"id": i + 1, "name": n} for i, n in enumerate(NAMES)]
    path = root / "val.json"
    path.write_text(json.dumps({"images": images, "annotations": anns, "categories": cats}))
    data = {"type": "coco", "path": str(root), "names": NAMES,
            "val": {"images": [str(root / "images")], "annotations": str(path)}}
    return data, path


def _crafted_detections():
    """Raw per-image candidates in original pixels: (box, {class: score})."""
    im1 = [((10, 10, 50, 50), {0: 0.9, 1: 0.6}),  # the `a` box, scoring for `b` too
           ((60, 21, 100, 70), {1: 0.5}),  # the `b` box
           ((1, 60, 40, 95), {2: 0.8}),  # on the `c` crowd region
           ((70, 75, 120, 95), {0: 0.97})]  # on the `a` crowd region, the best-scored `a` detection
    im2 = []
    for k in range(120):
        x, y = 10 * (k % 12) + 2, 9 * (k // 12) + 2
        shift = 0.0 if k % 3 else 1.0  # every third box a little off (IoU .56): hit at low thresholds only
        if k % 7 == 3:  # a miss: nowhere near a box
            x, y = x + 5, y + 5
        im2.append(((x + shift, y, x + 6 + shift, y + 6), {0: 0.951 - 0.0071 * k}))
    return {"im1.png": im1, "im2.png": im2}


class ScriptedDetector(nn.Module):
    """Returns, batch after batch, eval outputs ``[B, 4 + nc, A]`` holding the candidates of each image."""

    def __init__(self, loader, candidates):
        super().__init__()
        self.outputs, self.config = [], {"names": NAMES}
        for batch in loader:
            h, w = batch["img"].shape[-2:]
            out = torch.zeros(len(batch["im_file"]), 4 + len(NAMES), ANCHORS)
            for i, f in enumerate(batch["im_file"]):
                (gy, gx), (px, py) = batch["ratio_pad"][i]
                for a, ((x1, y1, x2, y2), scores) in enumerate(candidates[f.split("/")[-1]]):
                    out[i, :4, a] = torch.tensor([(x1 + x2) / 2 * gx + px, (y1 + y2) / 2 * gy + py,
                                                  (x2 - x1) * gx, (y2 - y1) * gy])
                    for c, s in scores.items():
                        out[i, 4 + c, a] = s
            self.outputs.append(out)

    def forward(self, x):
        out = self.outputs.pop(0)
        assert out.shape[0] == x.shape[0]
        return out


def _run(tmp_path, protocol):
    data, ann = _crafted_coco(tmp_path / "ds")
    ds = build_dataset(data, "val", imgsz=64)
    loader = protocol_loader(ds, 2, 0, protocol)
    model = ScriptedDetector(loader, _crafted_detections())
    v = Validator(loader, names=NAMES, save_dir=tmp_path / protocol, save_json=True, compute_loss=False,
                  progress=False, protocol=protocol)
    return v(model), v, ann


def test_coco_protocol_is_pycocotools_with_the_crowd_region_ignored(tmp_path):
    m, v, ann = _run(tmp_path, "coco")
    assert m["protocol"] == "coco"
    assert sorted(len(p[1]) for p in v.predictions) == [4, 120]  # one class per box; NMS keeps 300, COCO 100
    gt = COCO(str(ann))  # the annotation file as it is, crowd region included (iscrowd 1)
    ev = COCOeval(gt, gt.loadRes(str(tmp_path / "coco" / "predictions.json")), "bbox")
    ev.evaluate()
    ev.accumulate()
    ev.summarize()
    assert m["map"] == pytest.approx(ev.stats[0], abs=1e-12) and m["map50"] == pytest.approx(ev.stats[1], abs=1e-12)
    assert np.isnan(m["ap_per_class"][2])  # `c` has only a crowd region: nothing to find, the detection ignored
    assert m["instances"] == 122
    # dropping the crowd regions instead (the old behaviour) would make the top `a` detection a false positive
    data = json.loads(ann.read_text())
    data["annotations"] = [a for a in data["annotations"] if not a["iscrowd"]]
    dropped = COCO()
    dropped.dataset = data
    dropped.createIndex()
    ev = COCOeval(dropped, dropped.loadRes(str(tmp_path / "coco" / "predictions.json")), "bbox")
    ev.evaluate()
    ev.accumulate()
    assert m["ap_per_class"][0] > float(ev.eval["precision"][:, :, 0, 0, -1].mean()) + 0.01


def test_ultralytics_protocol_differs_and_equals_its_reference(tmp_path):
    m, v, _ = _run(tmp_path, "ultralytics")
    coco, _, _ = _run(tmp_path / "again", "coco")
    assert m["protocol"] == "ultralytics"
    assert sorted(len(p[1]) for p in v.predictions) == [5, 120]  # the two-class box is kept once per class
    # the reference: every (box, class) candidate above conf 0.001 (no boxes of a class overlap), best first;
    # ground truth = the annotation boxes with the crowd region as an ordinary `c` box
    gts = {"im1.png": [((10, 10, 50, 50), 0), ((60, 20, 100, 70), 1), ((0, 60, 40, 96), 2), ((70, 75, 120, 95), 0)],
           "im2.png": [((10 * (k % 12) + 2, 9 * (k // 12) + 2, 10 * (k % 12) + 8, 9 * (k // 12) + 8), 0)
                       for k in range(120)]}
    images = []
    for f, cands in _crafted_detections().items():
        dets = sorted(((b, s, c) for b, scores in cands for c, s in scores.items()), key=lambda d: -d[1])
        images.append((dets, gts[f]))
    ref = ref_ultralytics(images)
    assert m["map50"] == pytest.approx(ref["map50"], abs=1e-6) and m["map"] == pytest.approx(ref["map"], abs=1e-6)
    for c in range(3):
        assert m["ap_per_class"][c] == pytest.approx(np.mean(ref["ap"][c]), abs=1e-6)
    # the crowd region is an object, and it was found (IoU 39 * 35 / (40 * 36) = .948: a hit at 9 of 10 thresholds)
    assert m["ap_per_class"][2] == pytest.approx(0.9 * 0.995)
    assert m["instances"] == 124
    # each difference shows: `a` loses the boxes past the 100th under COCO, `b` gets the second-class false
    # positive only under ultralytics, `c` has no AP under COCO
    assert abs(m["map"] - coco["map"]) > 0.02 and abs(m["map50"] - coco["map50"]) > 0.02
    assert m["ap50_per_class"][1] < coco["ap50_per_class"][1] and np.isnan(coco["ap_per_class"][2])
