"""The enlarged held-out evaluation of benchmarks/precision.py: dihedral views, spike flip counts, the whole
comparison (per-image AP and the bootstrap: tests/test_metrics_per_image.py)."""

import sys
from pathlib import Path

import cv2
import numpy as np
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import spikeyolo  # noqa: E402
from _train_data import make_dataset  # noqa: E402
from precision_eval import (  # noqa: E402
    VIEWS,
    compare_forms,
    dihedral_boxes,
    dihedral_image,
    source_of,
    spike_flip_counts,
    write_dihedral_dataset,
)
from spikeyolo.data import build_dataset, load_data_config  # noqa: E402
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
