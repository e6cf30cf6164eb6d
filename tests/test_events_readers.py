"""Camera formats through faery: Metavision .raw (EVT 2.0 / 3.0) and .aedat4 files written by faery's own
encoder, read back by spikeyolo's readers, streamed with bounded memory, and predicted on through the CLI."""

from __future__ import annotations

import argparse
import json

import numpy as np
import pytest
import torch

import spikeyolo
from spikeyolo.cli import add_predict_args, run_predict
from spikeyolo.events.io import DatReader, read_bbox, write_dat
from spikeyolo.events.readers import StreamedRecording, open_recording

faery = pytest.importorskip("faery")

SENSOR_WH = (320, 200)  # not Gen1's 304x240: the size must come from the file
FORMATS = [("evt2.raw", "evt2"), ("evt3.raw", "evt3"), ("rec.aedat4", None)]


def _faery_events(n: int, t0: int, t1: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    ev = np.zeros(n, faery.EVENTS_DTYPE)
    ev["t"] = np.sort(rng.integers(t0, t1, n))
    ev["x"], ev["y"] = rng.integers(0, SENSOR_WH[0], n), rng.integers(0, SENSOR_WH[1], n)
    ev["on"] = rng.random(n) < 0.5
    return ev


def _write_with_faery(path, ev, version):
    """faery's own writer (not spikeyolo's): the file is what a camera tool would produce."""
    faery.events_stream_from_array(ev, SENSOR_WH).to_file(path, version=version)
    return path


@pytest.mark.parametrize("name,version", FORMATS)
def test_round_trip_through_faery_writer(tmp_path, name, version):
    ev = _faery_events(5000, 1_000_000, 3_000_000)  # a camera clock that does not start at 0
    rec = open_recording(_write_with_faery(tmp_path / name, ev, version))
    assert isinstance(rec, StreamedRecording)
    assert (rec.width, rec.height) == SENSOR_WH
    assert rec.t_first == int(ev["t"][0]) and rec.t_last == int(ev["t"][-1])
    got = rec.read()
    assert got["t"].tolist() == ev["t"].tolist() and got["x"].tolist() == ev["x"].tolist()
    assert got["y"].tolist() == ev["y"].tolist() and got["p"].tolist() == ev["on"].astype(int).tolist()
    for t0, t1 in [(1_200_000, 1_300_000), (1_250_000, 2_000_000), (2_900_000, 4_000_000), (1_100_000, 1_150_000)]:
        w = rec.read(t0, t1)  # the last window goes backwards: decoding restarts, results stay right
        mask = (ev["t"] >= t0) & (ev["t"] < t1)
        assert w["t"].tolist() == ev["t"][mask].tolist() and w["x"].tolist() == ev["x"][mask].tolist()


def test_dat_stays_on_the_memory_mapped_reader(tmp_path):
    write_dat(tmp_path / "a_td.dat", {"t": [1, 2], "x": [0, 1], "y": [0, 1], "p": [0, 1]})
    assert isinstance(open_recording(tmp_path / "a_td.dat"), DatReader)
    with pytest.raises(ValueError, match="not an event recording"):
        open_recording(tmp_path / "a.bin")
    (tmp_path / "bad.aedat4").write_bytes(b"not an aedat file")
    with pytest.raises(ValueError, match="bad.aedat4"):
        open_recording(tmp_path / "bad.aedat4")


def test_sliding_windows_hold_one_window_plus_one_chunk(tmp_path):
    ev = _faery_events(200_000, 0, 10_000_000, seed=1)  # 10 s, 2000 events per 100 ms window
    rec = open_recording(_write_with_faery(tmp_path / "long.raw", ev, "evt3"))
    chunk = max(len(c) for c in faery.events_stream_from_file(tmp_path / "long.raw"))
    for end in range(100_000, 10_000_001, 50_000):
        w = rec.read(end - 100_000, end)
        assert len(w) == int(((ev["t"] >= end - 100_000) & (ev["t"] < end)).sum())
    assert rec.peak_buffered <= 2_500 + chunk  # not the 200k of the whole file


class _FirstEventBox(torch.nn.Module):
    """A stand-in detector that reports one box whose size encodes the number of events in its window."""

    T, in_channels, config = 1, 2, {"names": ["thing"], "T": 1, "in_channels": 2}

    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(1))

    def forward(self, x):
        B, _, _, H, W = x.shape
        out = torch.zeros(B, 5, 1)
        count = x.sum((1, 2, 3, 4))
        out[:, 0], out[:, 1] = W / 2, H / 2
        out[:, 2, 0], out[:, 3, 0] = count / 10, 20.0
        out[:, 4] = 0.9
        return out


def test_raw_recording_predicts_like_the_same_events_in_dat(tmp_path):
    from spikeyolo.engine.recordings import predict_recording

    ev = _faery_events(6000, 0, 600_000, seed=2)
    raw = _write_with_faery(tmp_path / "cam.raw", ev, "evt3")
    e = np.zeros(len(ev), [("t", "<i8"), ("x", "<u2"), ("y", "<u2"), ("p", "u1")])
    e["t"], e["x"], e["y"], e["p"] = ev["t"], ev["x"], ev["y"], ev["on"]
    dat = write_dat(tmp_path / "cam_td.dat", e, height=SENSOR_WH[1], width=SENSOR_WH[0])
    kw = dict(window_us=100_000, step_us=50_000, T=1, representation="counts", imgsz=320, progress=False)
    a = predict_recording(_FirstEventBox(), raw, tmp_path / "a_bbox.npy", **kw)
    b = predict_recording(_FirstEventBox(), dat, tmp_path / "b_bbox.npy", **kw)
    assert len(a) == len(range(100_000, int(ev["t"][-1]) + 2, 50_000)) > 5
    assert a.tobytes() == b.tobytes()
    # window k's box width is (events in the window) / 10 in input pixels = sensor pixels here (gain 1)
    counts = [int(((ev["t"] >= t - 100_000) & (ev["t"] < t)).sum()) for t in a["t"]]
    np.testing.assert_allclose(a["w"], np.asarray(counts) / 10, rtol=1e-5)


@pytest.mark.parametrize("name,version", [("evt3.raw", "evt3"), ("rec.aedat4", None)])
def test_cli_predict_on_camera_files(tmp_path, capsys, name, version):
    model = spikeyolo.build_model("s", nc=1, T=1, in_channels=2, width=0.125, imgsz=64, names=["thing"])
    model.config["events"] = {"window_us": 100_000, "representation": "counts", "representation_opts": {}}
    spikeyolo.save(model, tmp_path / "w.pt")
    ev = _faery_events(3000, 10_000_000, 10_400_000)
    src = _write_with_faery(tmp_path / name, ev, version)
    p = argparse.ArgumentParser()
    add_predict_args(p)
    args = p.parse_args(["--weights", str(tmp_path / "w.pt"), "--source", str(src), "--imgsz", "64",
                         "--step-us", "100000", "--conf", "0.0", "--project", str(tmp_path), "--name", "p",
                         "--no-save", "--json"])
    assert run_predict(args) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    boxes = read_bbox(out["sources"][0]["boxes"])
    # windows from the first one holding an event (10.0 s), not from t = 0
    assert sorted(set(boxes["t"].tolist())) == list(range(10_100_000, int(ev["t"][-1]) + 2, 100_000))
    assert (boxes["x"] >= 0).all() and (boxes["x"] + boxes["w"] <= SENSOR_WH[0] + 1e-3).all()
    assert (boxes["y"] + boxes["h"] <= SENSOR_WH[1] + 1e-3).all()
