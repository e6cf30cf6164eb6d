"""The enlarged held-out evaluation of benchmarks/precision.py: dihedral views, cached-match AP, paired bootstrap,
spike flip counts."""

import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import spikeyolo  # noqa: E402
from _train_data import make_dataset  # noqa: E402
from precision_eval import (  # noqa: E402
    VIEWS,
    ImageScores,
    average_precision,
    compare_forms,
    dihedral_boxes,
    dihedral_image,
    paired_bootstrap,
    score_image,
    score_images,
    source_of,
    spike_flip_counts,
    write_dihedral_dataset,
)
from spikeyolo.data import build_dataset, load_data_config  # noqa: E402
from spikeyolo.metrics.coco import coco_evaluate  # noqa: E402
from spikeyolo.models.checkpoint import save  # noqa: E402
from spikeyolo.nn.neuron import ILIF  # noqa: E402


def test_dihedral_boxes_hand_example():
    # a 2x4 image (h, w) whose left column (x 0..1, y 0..2) is the box
    box = np.array([[0.0, 0.0, 1.0, 2.0]])
    # a counter-clockwise quarter turn puts the left column at the bottom of a 4x2 image
    assert dihedral_boxes(box, (2, 4), 1, False).tolist() == [[0.0, 3.0, 2.0, 4.0]]
    # a flip puts it at the right; a half turn too; a flip and a half turn back at the left
    assert dihedral_boxes(box, (2, 4), 0, True).tolist() == [[3.0, 0.0, 4.0, 2.0]]
    assert dihedral_boxes(box, (2, 4), 2, False).tolist() == [[3.0, 0.0, 4.0, 2.0]]
    assert dihedral_boxes(box, (2, 4), 2, True).tolist() == [[0.0, 0.0, 1.0, 2.0]]
    # three quarter turns: the top of a 4x2 image
    assert dihedral_boxes(box, (2, 4), 3, False).tolist() == [[0.0, 0.0, 2.0, 1.0]]


def _extent(mask: np.ndarray) -> list[float]:
    ys, xs = np.nonzero(mask)
    return [float(xs.min()), float(ys.min()), float(xs.max() + 1), float(ys.max() + 1)]


def test_dihedral_boxes_follow_the_pixels_brute_force():
    rng = np.random.default_rng(0)
    for _ in range(20):
        h, w = rng.integers(3, 12, size=2)
        x1, x2 = np.sort(rng.choice(w + 1, 2, replace=False))
        y1, y2 = np.sort(rng.choice(h + 1, 2, replace=False))
        mask = np.zeros((h, w), np.uint8)
        mask[y1:y2, x1:x2] = 1
        for k, flip in VIEWS:
            got = dihedral_boxes(np.array([[x1, y1, x2, y2]]), (h, w), k, flip)[0].tolist()
            assert got == _extent(dihedral_image(mask, k, flip)), (h, w, x1, y1, x2, y2, k, flip)
    assert len(set(VIEWS)) == 8 and VIEWS[0] == (0, False)


def test_written_views_read_back_with_the_transformed_boxes(tmp_path):
    rng = np.random.default_rng(1)
    root = tmp_path / "src"
    (root / "images" / "val").mkdir(parents=True)
    (root / "labels" / "val").mkdir(parents=True)
    img = rng.integers(0, 255, (30, 50, 3), dtype=np.uint8)
    cv2.imwrite(str(root / "images" / "val" / "a.png"), img)
    boxes = np.array([[5.0, 4.0, 20.0, 16.0], [30.0, 10.0, 48.0, 29.0]])
    (root / "labels" / "val" / "a.txt").write_text("".join(
        f"{c} {(b[0] + b[2]) / 100} {(b[1] + b[3]) / 60} {(b[2] - b[0]) / 50} {(b[3] - b[1]) / 30}\n"
        for c, b in zip((0, 1), boxes)))
    (root / "data.yaml").write_text(f"path: {root}\nval: images/val\nnames: {{0: a, 1: b}}\n")
    yaml_path = write_dihedral_dataset(root / "data.yaml", ["val"], tmp_path / "views", imgsz=64)
    ds = build_dataset(load_data_config(yaml_path), "val", imgsz=64, augment=False, progress=False)
    assert len(ds) == 8
    for i in range(len(ds)):
        gt = ds.ground_truth(i)
        v = int(Path(gt["im_file"]).stem[-1])
        k, flip = VIEWS[v]
        assert source_of(gt["im_file"]) == "a"
        assert np.array_equal(ds.load(i), dihedral_image(img, k, flip))
        np.testing.assert_allclose(gt["boxes_xyxy"], dihedral_boxes(boxes, (30, 50), k, flip), atol=1e-4)
        assert gt["cls"].tolist() == [0, 1]


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


class _TwoLIF(nn.Module):
    def __init__(self, gain: float):
        super().__init__()
        self.gain, self.a, self.b = gain, ILIF(), ILIF()

    def forward(self, x):
        return self.b(self.a(x * self.gain) * 0.5)


def test_spike_flip_counts_hand_case():
    x = torch.tensor([[[0.4, 0.6, 1.4]]])  # [T=1, B=1, 3]
    # gain 1: a -> 0, 1, 1 and b (halves, round half to even) -> 0, 0, 0; gain 1.1: a -> 0, 1, 2, b -> 0, 0, 1
    counts = spike_flip_counts(_TwoLIF(1.0), _TwoLIF(1.1), [{"img": x}, {"img": x}])
    assert counts == {"a": (2, 6), "b": (2, 6)}
    assert spike_flip_counts(_TwoLIF(1.0), _TwoLIF(1.0), [{"img": x}]) == {"a": (0, 3), "b": (0, 3)}


def test_compare_forms_end_to_end_on_a_tiny_model(tmp_path):
    data = make_dataset(tmp_path / "data", n_train=1, n_val=3)
    torch.manual_seed(0)
    weights = save(spikeyolo.build_model("n", nc=2, width=0.125).eval(), tmp_path / "m.pt")
    res = compare_forms(weights, data, splits=("val",), forms=("deploy-fp32",), views=(0, 5), imgsz=64,
                        batch=4, resamples=20)
    assert res["forms"] == ["train", "deploy-fp32"]
    assert res["sizes"] == {"val": {"source_images": 3, "images": 6, "boxes": res["sizes"]["val"]["boxes"]}}
    assert res["coco_gap"]["val"] < 1e-9  # cached-match AP is COCOeval's on the whole set
    assert set(res["sets"]) == {"val", "pooled"} and res["sets"]["pooled"]["train"]["d_map50_ci"] == (0.0, 0.0)
    flips = res["flips"]["pooled"]["deploy-fp32"]
    assert 0 <= flips["rate"] <= 1 and flips["outputs"] > 0 and len(flips["worst"]) == 5


def test_only_the_100_best_detections_per_image_count_as_in_cocoeval():
    gt = np.array([[0.0, 0.0, 10.0, 10.0]])
    misses = np.tile([[50.0, 50.0, 60.0, 60.0]], (100, 1))
    boxes = np.concatenate((misses, gt))  # the one hit is the 101st by score
    scores = np.concatenate((np.full(100, 0.9), [0.5]))
    coco = coco_evaluate([{"image_id": "a", "shape": (100, 100), "boxes_xyxy": gt, "cls": [0]}],
                         [("a", boxes, scores, np.zeros(101))], ["a"])
    ours = average_precision([score_image(boxes, scores, np.zeros(101), gt, [0])], 1)
    assert coco["map50"] == 0 and ours == (0.0, 0.0)
