"""Validator: mAP equals pycocotools on predictions.json against a ground truth built here from the label files."""

import json

import numpy as np
import pytest
import torch
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval
from torch import nn

from _train_data import NAMES, make_dataset, read_labels
from spikeyolo.data import build_dataloader, build_dataset
from spikeyolo.engine.report import fitness
from spikeyolo.engine.validator import Validator

IMGSZ = 64
ANCHORS = 12


class ScriptedDetector(nn.Module):
    """Stands in for a model: returns prepared eval outputs ``[B, 4 + nc, A]`` batch after batch."""

    def __init__(self, outputs):
        super().__init__()
        self.outputs, self.nc, self.names = list(outputs), len(NAMES), NAMES

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
