"""Predictor: boxes back in original pixels, YOLO txt / JSON / drawn outputs for images and a video."""

import json

import cv2
import numpy as np
import pytest
import torch
from torch import nn

from spikeyolo.engine.predict_outputs import predict_source
from spikeyolo.engine.predictor import Predictor
from spikeyolo.engine.sources import resolve_sources


class FixedDetector(nn.Module):
    """Always 'detects' one box given in network-input pixels (xywh) with class 1, score 0.8, plus a box
    scored below the confidence threshold."""

    def __init__(self, xywh):
        super().__init__()
        self.xywh, self.nc, self.names, self.calls = xywh, 2, ["a", "b"], 0
        self.config = {"names": self.names}  # how a stand-in describes itself to InferenceModel

    def forward(self, x):
        self.calls += 1
        out = torch.zeros(x.shape[0], 6, 4)
        out[:, :4, 0] = torch.tensor(self.xywh)
        out[:, 5, 0] = 0.8
        out[:, :4, 1] = torch.tensor([5.0, 5.0, 4.0, 4.0])
        out[:, 4, 1] = 0.1  # below conf 0.25
        return out


def test_image_outputs_in_original_pixels(tmp_path):
    # a 48x64 (h x w) image letterboxed to 64: gain 1, 8 pixels of padding on top
    src = tmp_path / "src"
    src.mkdir()
    cv2.imwrite(str(src / "a.png"), np.full((48, 64, 3), 50, np.uint8))
    cv2.imwrite(str(src / "b.jpg"), np.full((96, 128, 3), 90, np.uint8))  # gain 0.5, then 8 px padding on top
    pred = Predictor(FixedDetector([20.0, 28.0, 20.0, 20.0]), imgsz=64, conf=0.25)  # input box (10,18)-(30,38)
    out = predict_source(pred, src, tmp_path / "out", progress=False)
    assert [o["detections"] for o in out] == [1, 1]

    rows_a = np.loadtxt(tmp_path / "out" / "labels" / "a.txt", ndmin=2)
    np.testing.assert_allclose(rows_a, [[1, 20 / 64, 20 / 48, 20 / 64, 20 / 48, 0.8]], atol=1e-5)
    rows_b = np.loadtxt(tmp_path / "out" / "labels" / "b.txt", ndmin=2)  # original (20,20)-(60,60) of 128x96
    np.testing.assert_allclose(rows_b, [[1, 40 / 128, 40 / 96, 40 / 128, 40 / 96, 0.8]], atol=1e-5)

    js = json.loads((tmp_path / "out" / "b.json").read_text())
    assert js["shape"] == [96, 128] and len(js["detections"]) == 1
    d = js["detections"][0]
    assert d["name"] == "b" and d["confidence"] == pytest.approx(0.8)
    np.testing.assert_allclose(d["box_xyxy"], [20, 20, 60, 60], atol=0.01)
    drawn = cv2.imread(str(tmp_path / "out" / "b.jpg"))
    assert drawn.shape == (96, 128, 3) and (drawn != 90).any()  # same size as the source, with a box on it


def test_video_frame_by_frame(tmp_path):
    path = tmp_path / "clip.mp4"
    w = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 10.0, (64, 48))
    for i in range(5):
        w.write(np.full((48, 64, 3), 40 * i, np.uint8))
    w.release()
    model = FixedDetector([20.0, 28.0, 20.0, 20.0])
    out = predict_source(Predictor(model, imgsz=64), path, tmp_path / "out", progress=False)
    assert out[0]["frames"] == 5 and model.calls == 5  # one forward per frame
    cap = cv2.VideoCapture(str(tmp_path / "out" / "clip.mp4"))
    n = 0
    while cap.read()[0]:
        n += 1
    assert n == 5
    assert len(json.loads((tmp_path / "out" / "clip.json").read_text())["frames"]) == 5
    rows = np.loadtxt(tmp_path / "out" / "labels" / "clip_4.txt", ndmin=2)
    np.testing.assert_allclose(rows[0, 1:5], [20 / 64, 20 / 48, 20 / 64, 20 / 48], atol=1e-5)


def test_bad_sources(tmp_path):
    with pytest.raises(FileNotFoundError):
        resolve_sources(tmp_path / "missing.png")
    (tmp_path / "notes.csv").write_text("x")
    with pytest.raises(ValueError):
        resolve_sources(tmp_path / "notes.csv")
    with pytest.raises(FileNotFoundError):
        resolve_sources(tmp_path)  # a folder without images
