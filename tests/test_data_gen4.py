"""1Mpx / Gen4 datasets: RVT's label filters, its nearest-exact input halving, its evaluation settings, and
train + val through the CLI on simulated 1280x720 recordings."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import yaml

from spikeyolo.cli import main
from spikeyolo.data import build_dataset, load_data_config
from spikeyolo.data.gen1 import downsample_events
from spikeyolo.data.gen4 import RVT_CLASSES, gen4_protocol, rvt_label_filter
from spikeyolo.demo.simulator import simulate_recording
from spikeyolo.events.io import BBOX_DTYPE, EVENT_DTYPE, read_bbox
from spikeyolo.events.representations import events_to_frames


def _boxes(rows):
    b = np.zeros(len(rows), BBOX_DTYPE)
    for k, name in enumerate(("t", "x", "y", "w", "h", "class_id")):
        b[name] = [r[k] for r in rows]
    return b


def test_rvt_label_filter_by_hand():
    rows = [
        (1, 10, 10, 50, 40, 0),      # kept as is
        (1, 10, 10, 50, 40, 4),      # bus: not one of RVT's 3 classes
        (1, -20, 700, 60, 40, 2),    # cropped to x 0..40, y 700..719
        (1, 100, 100, 4, 40, 1),     # 4 px wide: dropped (min side 5)
        (1, 50, 300, 1200, 80, 2),   # wider than 1152: dropped in train only
        (1, 1279, 5, 30, 30, 0),     # cropped to zero width: dropped
    ]
    train = rvt_label_filter(_boxes(rows), 720, 1280, train=True)
    val = rvt_label_filter(_boxes(rows), 720, 1280, train=False)
    expect = [(10, 10, 50, 40, 0), (0, 700, 40, 19, 2)]
    got = [(float(b["x"]), float(b["y"]), float(b["w"]), float(b["h"]), int(b["class_id"])) for b in train]
    assert got == expect
    assert len(val) == 3 and float(val[2]["w"]) == 1200
    assert len(rvt_label_filter(_boxes(rows), 720, 1280, train=False, keep_classes=None)) == 4


def test_halving_equals_rvt_nearest_exact_interpolation():
    rng = np.random.default_rng(0)
    e = np.zeros(5000, EVENT_DTYPE)
    e["t"], e["x"], e["y"], e["p"] = (np.sort(rng.integers(0, 50_000, 5000)), rng.integers(0, 64, 5000),
                                      rng.integers(0, 36, 5000), rng.integers(0, 2, 5000))
    for kind, opts in (("histogram", {"bins": 3}), ("counts", {})):
        full = events_to_frames(e, 0, 50_000, 2, 36, 64, kind, **opts)
        ref = torch.nn.functional.interpolate(torch.from_numpy(full), scale_factor=0.5, mode="nearest-exact")
        half = events_to_frames(downsample_events(e, 2), 0, 50_000, 2, 18, 32, kind, **opts)
        assert torch.equal(torch.from_numpy(half), ref)


def test_rvt_evaluation_settings():
    assert gen4_protocol(False) == {"min_box_diag": 60, "min_box_side": 20, "skip_us": 500_000}
    assert gen4_protocol(True) == {"min_box_diag": 30, "min_box_side": 10, "skip_us": 500_000}


BOXES = [[100, 100, 400, 300], [600, 200, 700, 400], [800, 450, 1000, 600], [300, 500, 330, 640]]
CLASSES = [0, 4, 2, 1]  # the bus (4) is not one of RVT's classes


@pytest.fixture(scope="module")
def gen4_data(tmp_path_factory):
    """Two simulated 1280x720 recordings (train, val) of bright rectangles, labelled at 10 Hz for 1.1 s."""
    root = tmp_path_factory.mktemp("gen4")
    img = np.full((720, 1280), 60, np.uint8)
    for (x1, y1, x2, y2), v in zip(BOXES, (200, 160, 230, 250)):
        img[y1:y2, x1:x2] = v
    for k, split in enumerate(("train", "val")):
        simulate_recording(img, BOXES, CLASSES, duration_us=1_100_000, fps=20, sensor=(720, 1280), label_hz=10,
                           seed=k, C=0.5, speed=10, zoom_range=(0.9, 1.0), out_dir=root / split, name="rec")
    (root / "data.yaml").write_text(yaml.safe_dump({"type": "gen4", "path": str(root), "train": "train",
                                                    "val": "val", "window_us": 100_000, "T": 1,
                                                    "representation": "histogram",
                                                    "representation_opts": {"bins": 2}}))
    return root


def test_gen4_dataset_applies_rvt_filters(gen4_data):
    cfg = load_data_config(gen4_data / "data.yaml")
    assert cfg["names"] == list(RVT_CLASSES)
    ds = build_dataset(cfg, "val", imgsz=64, augment=False, progress=False)
    assert ds.sensor == {"rec": (360, 640)} and ds.protocol["min_box_diag"] == 30
    raw = read_bbox(gen4_data / "val" / "rec_bbox.npy")
    kept = 0
    for t in np.unique(raw["t"]):  # by hand: RVT's filters, then halved
        r = raw[(raw["t"] == t) & (raw["class_id"] < 3)]
        x1, y1 = np.clip(r["x"], 0, 1279), np.clip(r["y"], 0, 719)
        w, h = np.clip(r["x"] + r["w"], 0, 1279) - x1, np.clip(r["y"] + r["h"], 0, 719) - y1
        kept += int(((w >= 5) & (h >= 5)).sum())
    samples = [ds.ground_truth(i) for i in range(len(ds))]
    assert sum(len(g["cls"]) for g in samples) == kept > 0
    assert all(set(g["cls"].tolist()) <= {0, 1, 2} for g in samples)
    assert max(float(g["boxes_xyxy"][:, 2].max()) for g in samples if len(g["cls"])) <= 640
    item = ds[0]
    assert item["img"].shape == (1, 4, 64, 64) and item["ori_shape"] == (360, 640)
    every = build_dataset(load_data_config({**cfg, "classes": "all", "names": None, "nc": None}), "val", imgsz=64,
                          augment=False, progress=False)
    assert len(every.names) == 7 and every.cache_path != ds.cache_path  # other samples: other cached frames
    assert 4 in {c for i in range(len(every)) for c in every.ground_truth(i)["cls"].tolist()}  # the bus


def test_cli_trains_and_validates_with_the_gen4_protocol(gen4_data, tmp_path, capsys):
    data = str(gen4_data / "data.yaml")
    assert main(["train", "--data", data, "--model", "n", "--width", "0.125", "--epochs", "1", "--imgsz", "64",
                 "--batch", "4", "--workers", "0", "--device", "cpu", "--project", str(tmp_path), "--name", "t",
                 "--json"]) == 0
    weights = json.loads(capsys.readouterr().out.strip().splitlines()[-1])["last"]
    assert main(["val", "--weights", weights, "--data", data, "--workers", "0", "--device", "cpu",
                 "--project", str(tmp_path), "--name", "v", "--json"]) == 0
    printed = capsys.readouterr().out
    out = json.loads(printed.strip().splitlines()[-1])
    p = out["prophesee"]
    assert p["settings"]["min_box_diag"] == 30 and p["settings"]["min_box_side"] == 10
    assert p["settings"]["skip_us"] == 500_000 and p["settings"]["height"] == 360
    assert "min diag 30 / side 10 px" in printed
    # by hand: the val labels after 0.5 s that survive RVT's filters and the halved protocol filters
    raw = read_bbox(gen4_data / "val" / "rec_bbox.npy")
    r = raw[(raw["class_id"] < 3) & (raw["t"] > 500_000)]
    x1, y1 = np.clip(r["x"], 0, 1279), np.clip(r["y"], 0, 719)
    w, h = (np.clip(r["x"] + r["w"], 0, 1279) - x1) / 2, (np.clip(r["y"] + r["h"], 0, 719) - y1) / 2
    ok = (w >= 5 / 2) & (h >= 5 / 2) & (w * w + h * h >= 30 ** 2) & (w >= 10) & (h >= 10)
    assert p["gt_boxes"] == int(ok.sum()) > 0


class _CentreBox(torch.nn.Module):
    """A stand-in detector: one 20x20 box at the input's centre; trained (config) with downsample 2."""

    T, in_channels = 1, 2
    config = {"names": ["a"], "T": 1, "in_channels": 2,
              "events": {"window_us": 100_000, "representation": "counts", "representation_opts": {},
                         "downsample": 2}}

    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(1))
        self.inputs = []

    def forward(self, x):
        self.inputs.append(x.clone())
        B, _, _, H, W = x.shape
        out = torch.zeros(B, 5, 1)
        out[:, 0, 0], out[:, 1, 0], out[:, 2, 0], out[:, 3, 0], out[:, 4, 0] = W / 2, H / 2, 20.0, 20.0, 0.9
        return out


def test_predict_follows_the_models_downsampling_and_writes_sensor_pixels(tmp_path):
    from spikeyolo.engine.recordings import predict_recording
    from spikeyolo.events.io import write_dat

    e = np.zeros(4, EVENT_DTYPE)
    e["t"], e["x"], e["y"] = [10, 20, 30, 150_000], [1, 3, 1278, 5], [1, 2, 719, 7]
    dat = write_dat(tmp_path / "g_td.dat", e, height=720, width=1280)
    model = _CentreBox()
    out = predict_recording(model, dat, tmp_path / "g_bbox.npy", imgsz=640, step_us=100_000, progress=False)
    # halved: 640x360 frames, no resize at 640; of the first window's 3 events only the one at the odd pixel
    # (1, 1) is kept (RVT's nearest-exact halving), at (0, 0): OFF count 1 in row 140 (the letterbox band above)
    x = model.inputs[0][0, 0]
    assert float(x.sum()) == 1.0 and float(x[0, 140, 0]) == 1.0
    # the 20 px box at the input centre (320, 320) is at (320, 180) of the halved sensor: 40 px at (640, 360)
    assert [tuple(round(float(b[k]), 3) for k in ("x", "y", "w", "h")) for b in out] == [(620, 340, 40, 40)]
