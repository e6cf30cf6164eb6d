"""Whole-recording prediction with a stand-in model: windows, unletterboxed boxes, bbox file, carry, video."""

import cv2
import numpy as np
import pytest
import torch
from torch import nn

from spikeyolo.engine.recordings import predict_recording
from spikeyolo.events.io import EVENT_DTYPE, read_bbox, write_dat
from spikeyolo.nn.neuron import ILIF


class StandIn(nn.Module):
    """Two anchors: a 64x64 box at the input centre with class-1 score 0.9, and a low-score one."""

    config = {"names": ["a", "b"], "in_channels": 2}  # how a stand-in describes itself to InferenceModel

    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.zeros(1))
        self.lif = ILIF(D=4, decay=0.5)
        self.inputs, self.had_state = [], []

    def forward(self, x):
        self.inputs.append(x.clone())
        self.had_state.append(self.lif.residual is not None)
        self.lif(x.transpose(0, 1).mean((2, 3, 4), keepdim=True) + 0.3)
        B, _, _, H, W = x.shape
        out = torch.zeros(B, 6, 2)
        out[:, :4, 0] = torch.tensor([W / 2, H / 2, 64.0, 64.0])
        out[:, 5, 0] = 0.9
        out[:, :4, 1] = torch.tensor([10.0, 10.0, 8.0, 8.0])
        out[:, 4, 1] = 0.01
        return out


def test_predict_writes_valid_bbox(recording, tmp_path):
    dat, e = recording
    model = StandIn()
    out = predict_recording(model, dat, tmp_path / "r_pred_bbox.npy", window_us=100_000, step_us=50_000, T=2,
                            representation="counts", imgsz=320, conf=0.25, iou=0.7, batch=3, progress=False)
    ends = list(range(100_000, 400_000, 50_000))  # last event < 400000
    back = read_bbox(tmp_path / "r_pred_bbox.npy")
    assert back["t"].tolist() == ends and len(out) == len(ends)
    # input box (128, 128)-(192, 192); input = sensor * gain + pad with gain (253/240, 320/304), pad (0, 33)
    gx, gy = 320 / 304, 253 / 240
    np.testing.assert_allclose(back["x"], 128 / gx, rtol=1e-5)
    np.testing.assert_allclose(back["y"], (128 - 33) / gy, rtol=1e-5)
    np.testing.assert_allclose(back["w"], 64 / gx, rtol=1e-5)
    np.testing.assert_allclose(back["h"], 64 / gy, rtol=1e-5)
    assert np.all(back["class_id"] == 1) and np.allclose(back["confidence"], 0.9) and np.all(back["track_id"] == 0)
    assert [tuple(x.shape) for x in model.inputs] == [(3, 2, 2, 320, 320)] * 2  # batches of 3 windows
    assert model.training  # train/eval mode restored


def test_inputs_are_window_frames(recording, tmp_path):
    dat, e = recording
    model = StandIn()
    predict_recording(model, dat, tmp_path / "p_bbox.npy", window_us=100_000, step_us=100_000, T=2,
                      representation="counts", imgsz=304, batch=8, progress=False)
    x = torch.cat(model.inputs)
    assert x.shape == (3, 2, 2, 304, 304)
    for k, te in enumerate((100_000, 200_000, 300_000)):
        for b in range(2):  # bins [te - 100000, te - 50000), [te - 50000, te)
            lo, hi = te - 100_000 + 50_000 * b, te - 50_000 + 50_000 * b
            assert float(x[k, b].sum()) == int(((e["t"] >= lo) & (e["t"] < hi)).sum())
    assert float(x[:, :, :, :32].abs().sum()) == 0  # letterbox rows


def test_carry_state_and_video(recording, tmp_path):
    dat, _ = recording
    model = StandIn()
    with pytest.warns(UserWarning, match="carry_state"):
        predict_recording(model, dat, tmp_path / "c_bbox.npy", window_us=100_000, step_us=50_000, T=1,
                          imgsz=64, carry_state=True, progress=False)
    assert model.had_state[0] is False and all(model.had_state[1:]) and len(model.had_state) == 6
    assert model.lif.carry_state is False and model.training  # restored
    model = StandIn()
    predict_recording(model, dat, tmp_path / "n_bbox.npy", window_us=100_000, step_us=100_000, T=1,
                      imgsz=64, batch=1, progress=False, video_path=tmp_path / "v.mp4", names=["a", "b"])
    assert not any(model.had_state)
    cap = cv2.VideoCapture(str(tmp_path / "v.mp4"))
    frames = 0
    while True:
        ok, fr = cap.read()
        if not ok:
            break
        frames += 1
        assert fr.shape == (480, 608, 3)
    assert frames == 3


class Oracle(nn.Module):
    """Predicts one fixed box (input pixels) with score 0.9, class 0."""

    config = {"names": ["a"], "in_channels": 2}  # how a stand-in describes itself to InferenceModel

    def __init__(self, xywh):
        super().__init__()
        self.xywh = torch.tensor(xywh)

    def forward(self, x):
        out = torch.zeros(x.shape[0], 6, 1)
        out[:, :4, 0] = self.xywh
        out[:, 4, 0] = 0.9
        return out


def test_evaluate_recordings_end_to_end(tmp_path):
    from spikeyolo.data.gen1 import Gen1Dataset
    from spikeyolo.engine.recordings import evaluate_recordings
    from spikeyolo.events.io import BBOX_DTYPE, write_bbox

    rng = np.random.default_rng(0)
    e = np.zeros(500, EVENT_DTYPE)
    e["t"] = np.sort(rng.integers(0, 2_000_000, 500))
    e["x"], e["y"] = rng.integers(0, 304, 500), rng.integers(0, 240, 500)
    write_dat(tmp_path / "d" / "val" / "a_td.dat", e)
    lab = np.zeros(2, BBOX_DTYPE)
    lab["t"] = [1_000_000, 1_500_000]
    lab["x"], lab["y"], lab["w"], lab["h"] = 76, 60, 152, 120  # the sensor's central half
    write_bbox(tmp_path / "d" / "val" / "a_bbox.npy", lab)
    cfg = {"type": "gen1", "path": str(tmp_path / "d"), "val": [str(tmp_path / "d" / "val")], "names": ["x", "y"]}
    ds = Gen1Dataset(cfg, "val", imgsz=304, T=2, window_us=100_000, representation="counts", cache_dir=False)
    # at imgsz 304 the input is the sensor shifted down by 32 rows: centre (152, 152), size 152 x 120
    r = evaluate_recordings(Oracle([152.0, 152.0, 152.0, 120.0]), ds, tmp_path / "pred", step_us=100_000,
                            progress=False)
    assert r["protocol"] == "prophesee" and r["AP"] == pytest.approx(1.0) and r["images"] == 2
    assert (tmp_path / "pred" / "a_bbox.npy").is_file() and r["T"] == 2 and r["representation"] == "counts"
    miss = evaluate_recordings(Oracle([40.0, 60.0, 40.0, 40.0]), ds, tmp_path / "pred2", step_us=100_000,
                               progress=False)
    assert miss["AP"] == pytest.approx(0.0)
    # default: one window ending at each label time
    at = evaluate_recordings(Oracle([152.0, 152.0, 152.0, 120.0]), ds, tmp_path / "pred3", progress=False)
    assert read_bbox(tmp_path / "pred3" / "a_bbox.npy")["t"].tolist() == [1_000_000, 1_500_000]
    assert at["AP"] == pytest.approx(1.0) and at["dt_boxes"] == 2
    # a 50 ms stream pools the windows ending at t - 50 ms, t and t + 50 ms: 3 detections per label,
    # two of them duplicates, counted as false positives
    st = evaluate_recordings(Oracle([152.0, 152.0, 152.0, 120.0]), ds, tmp_path / "pred4", step_us=50_000,
                             progress=False)
    assert st["dt_boxes"] == 6 and st["AP"] < 1.0


def test_infer_representation():
    from spikeyolo.engine.recordings import infer_representation

    m = nn.Module()
    m.config, m.in_channels = {}, 3  # what an InferenceModel describes
    assert infer_representation(m) == ("spikeyolo", {})
    m.in_channels = 2
    assert infer_representation(m) == ("counts", {})
    m.in_channels = 20
    assert infer_representation(m) == ("histogram", {"bins": 10})
    with pytest.raises(ValueError, match="gives 3 channels but the model takes 20"):
        infer_representation(m, "spikeyolo")
    m.in_channels = 3
    assert infer_representation(m, "spikeyolo", {}) == ("spikeyolo", {})
