"""Validator: mAP equals pycocotools on predictions.json against a ground truth built here from the label files."""

import json

import cv2
import numpy as np
import pytest
import torch
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval
from torch import nn

from _train_data import NAMES, make_dataset, read_labels
from spikeyolo.data import build_dataloader, build_dataset
from spikeyolo.engine.results import fitness
from spikeyolo.engine.validator import Validator

IMGSZ = 64
ANCHORS = 12


class ScriptedDetector(nn.Module):
    """Stands in for a model: returns prepared eval outputs ``[B, 4 + nc, A]`` batch after batch."""

    def __init__(self, outputs):
        super().__init__()
        self.outputs, self.config = list(outputs), {"names": NAMES}

    def forward(self, x):
        out = self.outputs.pop(0)
        assert out.shape[0] == x.shape[0]
        return out


def scripted_outputs(dataset, batch_size, rng, jitter=0.0, false_pos=0, wrong_cls=0.0, miss=0.0):
    """Per batch of the unshuffled loader: one prediction per label (input pixels, jittered), plus noise."""
    outs = []
    for start in range(0, len(dataset), batch_size):
        items = [dataset[i] for i in range(start, min(start + batch_size, len(dataset)))]
        out = torch.zeros(len(items), 4 + len(NAMES), ANCHORS)
        for b, it in enumerate(items):
            preds = []
            for (cx, cy, w, h), c in zip(it["bboxes"].tolist(), it["cls"].reshape(-1).tolist()):
                if rng.random() < miss:
                    continue
                box = np.array([cx, cy, w, h]) * IMGSZ
                box[:2] += rng.normal(0, jitter * box[2:].mean(), 2)
                box[2:] *= np.exp(rng.normal(0, jitter, 2))
                c = int(c) if rng.random() >= wrong_cls else 1 - int(c)
                preds.append((box, c, rng.uniform(0.3, 1.0) if jitter else 0.9))
            for _ in range(false_pos):
                wh = rng.uniform(6, 30, 2)
                preds.append((np.r_[rng.uniform(10, 54, 2), wh], int(rng.integers(0, 2)), rng.uniform(0.01, 0.6)))
            assert len(preds) <= ANCHORS
            for a, (box, c, s) in enumerate(preds):
                out[b, :4, a] = torch.tensor(box, dtype=torch.float32)
                out[b, 4 + c, a] = s
        outs.append(out)
    return outs


def coco_from_labels(labels):
    images, anns = [], []
    for g in labels:
        images.append({"id": g["stem"], "height": g["shape"][0], "width": g["shape"][1]})
        for (x1, y1, x2, y2), c in zip(g["boxes"], g["cls"]):
            anns.append({"id": len(anns) + 1, "image_id": g["stem"], "category_id": int(c), "iscrowd": 0,
                         "bbox": [x1, y1, x2 - x1, y2 - y1], "area": (x2 - x1) * (y2 - y1)})
    return {"images": images, "annotations": anns, "categories": [{"id": i, "name": n} for i, n in enumerate(NAMES)]}


def pycocotools_map(gt_dict, pred_json):
    gt = COCO()
    gt.dataset = gt_dict
    gt.createIndex()
    dt = gt.loadRes(json.loads(pred_json.read_text()))
    ev = COCOeval(gt, dt, "bbox")  # the standard protocol (maxDets 1, 10, 100)
    ev.evaluate()
    ev.accumulate()
    ev.summarize()
    return ev.stats[0], ev.stats[1]


def run_validator(tmp_path, **noise):
    data = make_dataset(tmp_path / "ds", n_train=2, n_val=6)
    ds = build_dataset(data, "val", imgsz=IMGSZ)
    loader = build_dataloader(ds, batch_size=4, workers=0, shuffle=False)
    model = ScriptedDetector(scripted_outputs(ds, 4, np.random.default_rng(1), **noise))
    v = Validator(loader, device="cpu", save_dir=tmp_path / "val", save_json=True, compute_loss=False,
                  progress=False, plots=True)
    return v(model), tmp_path


def test_perfect_predictions_give_map_one(tmp_path):
    m, root = run_validator(tmp_path)
    labels = read_labels(root / "ds")
    assert m["images"] == 6 and m["instances"] == sum(len(g["cls"]) for g in labels)
    assert m["map"] == pytest.approx(1.0) and m["map50"] == pytest.approx(1.0)
    assert m["precision"] == pytest.approx(1.0) and m["recall"] == pytest.approx(1.0)
    # boxes in predictions.json are back in original pixels: each GT box has an exact twin
    preds = json.loads((root / "val" / "predictions.json").read_text())
    for g in labels:
        mine = np.array([p["bbox"] for p in preds if p["image_id"] == g["stem"]])
        for x1, y1, x2, y2 in g["boxes"]:
            assert np.abs(mine - [x1, y1, x2 - x1, y2 - y1]).max(1).min() < 0.05
    assert pycocotools_map(coco_from_labels(labels), root / "val" / "predictions.json") == pytest.approx((1, 1))
    for f in ("PR_curve.png", "val_batch0_labels.jpg", "val_batch0_pred.jpg"):
        assert (root / "val" / f).stat().st_size > 1000


def test_noisy_predictions_match_pycocotools(tmp_path):
    m, root = run_validator(tmp_path, jitter=0.12, false_pos=3, wrong_cls=0.15, miss=0.1)
    ref_map, ref_map50 = pycocotools_map(coco_from_labels(read_labels(root / "ds")), root / "val" / "predictions.json")
    assert 0.05 < ref_map < 0.95  # a non-trivial case
    assert m["map"] == pytest.approx(ref_map, abs=1e-4)
    assert m["map50"] == pytest.approx(ref_map50, abs=1e-4)
    assert m["fitness"] == pytest.approx(0.1 * ref_map50 + 0.9 * ref_map, abs=1e-4)


def test_fitness():
    assert fitness({"map50": 0.5, "map": 0.3}) == pytest.approx(0.32)
    assert fitness({"map50": float("nan"), "map": 0.3}) == pytest.approx(0.27)


# ---------------------------------------------------------------- image identity (issue 11.1)


def _two_cameras(root, fmt):
    """cam1/0001.png and cam2/0001.png (same stem), one box each at different places; YOLO or COCO JSON."""
    boxes = {"cam1": (4, 4, 24, 28), "cam2": (36, 30, 60, 58)}  # xyxy pixels of 64x64 images
    images, anns = [], []
    for k, (cam, (x1, y1, x2, y2)) in enumerate(boxes.items()):
        d = root / "images" / "val" / cam
        d.mkdir(parents=True)
        cv2.imwrite(str(d / "0001.png"), np.full((64, 64, 3), 40, np.uint8))
        lab = root / "labels" / "val" / cam
        lab.mkdir(parents=True)
        cx, cy, w, h = (x1 + x2) / 128, (y1 + y2) / 128, (x2 - x1) / 64, (y2 - y1) / 64
        lab.joinpath("0001.txt").write_text(f"1 {cx} {cy} {w} {h}\n")
        images.append({"id": 17 - 13 * k, "file_name": f"{cam}/0001.png", "height": 64, "width": 64})
        anns.append({"id": k + 1, "image_id": 17 - 13 * k, "category_id": 9, "iscrowd": 0,
                     "bbox": [x1, y1, x2 - x1, y2 - y1], "area": (x2 - x1) * (y2 - y1)})
    if fmt == "coco":  # non-contiguous image ids (17, 4) and category ids (3, 9)
        ann = root / "val.json"
        ann.write_text(json.dumps({"images": images, "annotations": anns,
                                   "categories": [{"id": 3, "name": "box"}, {"id": 9, "name": "disc"}]}))
        return {"type": "coco", "path": str(root), "names": NAMES,
                "val": {"images": [str(root / "images" / "val")], "annotations": str(ann)}}, boxes, ann
    return {"path": str(root), "val": "images/val", "names": NAMES}, boxes, None


def _predict_boxes(ds, boxes_by_cam):
    """Scripted output for one batch: per image, the given box (input pixels) of the given camera, class 1."""
    out = torch.zeros(len(ds), 4 + len(NAMES), ANCHORS)
    for i in range(len(ds)):
        cam = boxes_by_cam[ds.ground_truth(i)["im_file"].split("/")[-2]]
        (gy, gx), (px, py) = ds[i]["ratio_pad"]
        x1, y1, x2, y2 = cam
        out[i, :4, 0] = torch.tensor([(x1 + x2) / 2 * gx + px, (y1 + y2) / 2 * gy + py, (x2 - x1) * gx,
                                      (y2 - y1) * gy])
        out[i, 5, 0] = 0.9
    return out


def test_images_with_the_same_stem_stay_apart(tmp_path):
    data, boxes, _ = _two_cameras(tmp_path / "ds", "yolo")
    ds = build_dataset(data, "val", imgsz=IMGSZ)
    # each camera's image gets the OTHER camera's box: every detection is wrong (merging images by stem would
    # pair each with the other image's ground truth and score mAP 1)
    swapped = {"cam1": boxes["cam2"], "cam2": boxes["cam1"]}
    loader = build_dataloader(ds, batch_size=2, workers=0, shuffle=False)
    v = Validator(loader, device="cpu", save_dir=tmp_path / "val", save_json=True, compute_loss=False,
                  progress=False)
    m = v(ScriptedDetector([_predict_boxes(ds, swapped)]))
    assert m["map50"] == 0.0 and m["map"] == 0.0 and m["precision"] == 0.0 and m["recall"] == 0.0
    ids = sorted(p["image_id"] for p in json.loads((tmp_path / "val" / "predictions.json").read_text()))
    assert ids == ["cam1/0001", "cam2/0001"]


def test_coco_json_predictions_load_against_the_source_annotations(tmp_path):
    data, boxes, ann = _two_cameras(tmp_path / "ds", "coco")
    ds = build_dataset(data, "val", imgsz=IMGSZ)
    loader = build_dataloader(ds, batch_size=2, workers=0, shuffle=False)
    v = Validator(loader, device="cpu", save_dir=tmp_path / "val", save_json=True, compute_loss=False,
                  progress=False)
    m = v(ScriptedDetector([_predict_boxes(ds, boxes)]))
    preds = json.loads((tmp_path / "val" / "predictions.json").read_text())
    assert sorted(p["image_id"] for p in preds) == [4, 17] and {p["category_id"] for p in preds} == {9}
    gt = COCO(str(ann))  # pycocotools on the user's own annotation file accepts the file as it is
    ev = COCOeval(gt, gt.loadRes(str(tmp_path / "val" / "predictions.json")), "bbox")
    ev.evaluate()
    ev.accumulate()
    ev.summarize()
    assert ev.stats[0] == pytest.approx(1.0) and m["map"] == pytest.approx(1.0)
