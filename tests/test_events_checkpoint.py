"""Event input settings travel with the checkpoint: the trainer records them, save/load keeps them, and
predict_recording / `spikeyolo predict` on a .dat use them unless told otherwise."""

import json

import cv2
import numpy as np
import pytest
import torch
from torch import nn

import spikeyolo
from _event_data import write_gen1
from spikeyolo.cli import main
from spikeyolo.data.gen1 import letterbox_frames
from spikeyolo.engine import recordings as stream
from spikeyolo.engine.recordings import infer_representation, predict_recording
from spikeyolo.events.io import read_bbox
from spikeyolo.events.representations import EventInput, events_to_frames

TRAINED = {"window_us": 120_000, "representation": "counts", "representation_opts": {"norm": "log"}}


def tiny(in_channels=2, T=2, events=None):
    model = spikeyolo.build_model("n", nc=2, width=0.0625, T=T, in_channels=in_channels, imgsz=64,
                                  names=["car", "pedestrian"])
    if events is not None:
        model.config["events"] = events
    return model


@pytest.fixture
def frames_spy(monkeypatch):
    """Every events_to_frames call of predict_recording: (t0, t1, T, kind, opts); the frames are real."""
    calls = []

    def spy(ev, t0, t1, T, h, w, kind="counts", **opts):
        calls.append((t0, t1, T, kind, opts))
        return events_to_frames(ev, t0, t1, T, h, w, kind, **opts)

    monkeypatch.setattr(stream, "events_to_frames", spy)
    return calls


def test_settings_round_trip_and_drive_predict_recording(recording, tmp_path, frames_spy):
    dat, e = recording
    path = spikeyolo.save(tiny(events=TRAINED), tmp_path / "ev.pt")
    assert torch.load(path, weights_only=True)["config"]["events"] == TRAINED  # plain data
    model = spikeyolo.load(path)
    assert model.config["events"] == TRAINED
    # the derived forms keep it (they are rebuilt from the same config)
    assert spikeyolo.fuse(model).config["events"] == TRAINED
    assert spikeyolo.to_spike_driven(model).config["events"] == TRAINED

    seen = []
    model.register_forward_pre_hook(lambda m, args: seen.append(args[0].clone()))
    predict_recording(model, dat, tmp_path / "a_bbox.npy", imgsz=64, conf=0.0, max_det=3, progress=False)
    # trained window 120 ms, default step 50 ms, the model's T and the log norm
    ends = list(range(120_000, 400_000, 50_000))
    assert [c[1] for c in frames_spy] == ends
    assert all(t1 - t0 == 120_000 and T == 2 and kind == "counts" and opts == {"norm": "log"}
               for t0, t1, T, kind, opts in frames_spy)
    assert sorted(set(read_bbox(tmp_path / "a_bbox.npy")["t"].tolist())) == ends
    # the model saw the frames of the explicit settings (window [0, 120 ms) of log1p counts), not raw counts
    x = torch.cat(seen)
    for norm, same in (("log", True), (None, False)):
        want, _, _ = letterbox_frames(events_to_frames(e, 0, 120_000, 2, 240, 304, "counts", norm=norm), 64)
        assert torch.allclose(x[0], torch.from_numpy(want)) is same

    # explicit arguments win over the checkpoint's
    frames_spy.clear()
    predict_recording(model, dat, tmp_path / "b_bbox.npy", window_us=100_000, step_us=100_000, T=1,
                      representation_opts={}, imgsz=64, progress=False)
    assert [(c[0], c[1], c[2], c[4]) for c in frames_spy] == [(te - 100_000, te, 1, {})
                                                             for te in (100_000, 200_000, 300_000)]
    with pytest.raises(ValueError, match="gives 3 channels but the model takes 2"):
        predict_recording(model, dat, tmp_path / "c_bbox.npy", representation="spikeyolo", progress=False)


def test_old_checkpoint_without_settings_keeps_the_defaults(recording, tmp_path, frames_spy):
    dat, _ = recording
    model = spikeyolo.load(spikeyolo.save(tiny(), tmp_path / "old.pt"))
    assert "events" not in model.config
    predict_recording(model, dat, tmp_path / "o_bbox.npy", imgsz=64, progress=False)
    # 250 ms window, 50 ms step, no options; T is the model's (as spikeyolo predict always passed)
    assert [c[1] for c in frames_spy] == [250_000, 300_000, 350_000]
    assert all(t1 - t0 == 250_000 and T == 2 and kind == "counts" and opts == {}
               for t0, t1, T, kind, opts in frames_spy)


def test_infer_representation_from_config():
    m = nn.Module()
    m.in_channels = 20
    m.config = {"events": {"window_us": 50_000, "representation": "histogram", "representation_opts": {"bins": 10,
                                                                                                       "clip": 5}}}
    assert infer_representation(m) == ("histogram", {"bins": 10, "clip": 5})
    assert infer_representation(m, "histogram") == ("histogram", {"bins": 10, "clip": 5})  # same kind: its opts
    assert infer_representation(m, None, {"bins": 10}) == ("histogram", {"bins": 10})  # given opts win
    m.in_channels = 2
    m.config["events"] = dict(TRAINED)
    assert infer_representation(m, "counts", {}) == ("counts", {})  # {} means no options
    with pytest.raises(ValueError, match="gives 3 channels but the model takes 2"):
        infer_representation(m, "spikeyolo")  # another kind: the trained opts do not apply, the check does
    m.config = {"T": 2}  # no events entry: the channel count decides, as before
    assert infer_representation(m) == ("counts", {})


def test_cli_predict_carry_state_window(recording, tmp_path, monkeypatch):
    dat, _ = recording
    weights = spikeyolo.save(tiny(events=TRAINED), tmp_path / "ev.pt")
    carry = []
    real = stream.set_carry_state
    monkeypatch.setattr(stream, "set_carry_state", lambda m, on=True: (carry.append(on), real(m, on)))
    assert main(["predict", "--weights", str(weights), "--source", str(dat), "--imgsz", "64", "--conf", "0",
                 "--max-det", "2", "--no-save", "--carry-state", "--window-us", "130000",
                 "--project", str(tmp_path / "runs"), "--name", "p", "--json"]) == 0
    assert carry == [True, False]
    t = read_bbox(tmp_path / "runs" / "p" / "r_td_bbox.npy")["t"]
    assert sorted(set(t.tolist())) == [130_000, 260_000, 390_000]  # step = window under carry state
    assert not (tmp_path / "runs" / "p" / "r_td.mp4").exists()


def test_cli_event_flags_ignored_for_images(tmp_path, capsys):
    weights = spikeyolo.save(tiny(in_channels=3, T=1), tmp_path / "img.pt")
    cv2.imwrite(str(tmp_path / "a.png"), np.full((48, 64, 3), 90, np.uint8))
    assert main(["predict", "--weights", str(weights), "--source", str(tmp_path / "a.png"), "--imgsz", "64",
                 "--window-us", "1000", "--step-us", "7", "--carry-state", "--project", str(tmp_path / "runs"),
                 "--json"]) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert [s["type"] for s in out["sources"]] == ["image"]


def test_record_event_settings_on_models():
    from spikeyolo.engine.trainer import record_event_settings

    class Events:
        events = EventInput(np.int64(80_000), 2, "histogram", {"bins": 3})

    model = tiny(in_channels=6)
    record_event_settings(model, Events())
    assert model.config["events"] == {"window_us": 80_000, "representation": "histogram",
                                      "representation_opts": {"bins": 3}}
    assert type(model.config["events"]["window_us"]) is int
    record_event_settings(model, object())  # an image dataset: a stale entry goes
    assert "events" not in model.config


# labels at 0.2, 0.3 and 0.4 s
BOXES = [(200_000, 10, 20, 60, 40, 0, 1), (300_000, 12, 22, 60, 40, 0, 1), (300_000, 150, 120, 30, 30, 1, 2),
         (400_000, 14, 24, 60, 40, 0, 1)]


def test_trainer_writes_event_settings_into_checkpoints(tmp_path, frames_spy):
    from spikeyolo.engine.trainer import TrainConfig, Trainer

    data = write_gen1(tmp_path / "gen1", BOXES, np.random.default_rng(1), n=5000, t_max=450_000, window_us=150_000,
                      T=2, representation="counts", representation_opts={"norm": "log"})
    cfg = TrainConfig(data=str(data), model="n", width=0.0625, imgsz=64, epochs=1, batch=2, nbs=4, workers=0,
                      device="cpu", val=False, plots=False, progress=False, verbose=False,
                      project=str(tmp_path / "runs"), name="ev")
    result = Trainer(cfg).train()
    want = {"window_us": 150_000, "representation": "counts", "representation_opts": {"norm": "log"}}
    for key in ("best", "last"):
        ckpt = torch.load(result[key], weights_only=True)
        assert ckpt["config"]["events"] == want and ckpt["config"]["T"] == 2 and ckpt["config"]["in_channels"] == 2

    # and prediction on a .dat with that checkpoint uses them without being told
    frames_spy.clear()
    from spikeyolo.engine.predict_outputs import predict_to_folder

    predict_to_folder(result["best"], data.parent / "val" / "rec_td.dat", imgsz=64, save=False, progress=False,
            project=str(tmp_path / "runs"), name="pred")
    assert frames_spy and all(t1 - t0 == 150_000 and T == 2 and opts == {"norm": "log"}
                              for t0, t1, T, kind, opts in frames_spy)


def test_train_T_overrides_the_data_yaml(tmp_path):
    """--T is not silently replaced by the data YAML's T: the dataset frames and the model both use it."""
    from spikeyolo.engine.trainer import TrainConfig, Trainer

    data = write_gen1(tmp_path / "gen1", BOXES, np.random.default_rng(1), n=2000, t_max=450_000, window_us=150_000,
                      T=2, representation="counts")
    cfg = TrainConfig(data=str(data), model="n", width=0.0625, imgsz=64, epochs=1, batch=2, nbs=2, workers=0,
                      device="cpu", val=False, plots=False, progress=False, verbose=False, T=3,
                      project=str(tmp_path / "runs"), name="ev")
    result = Trainer(cfg).train()
    assert torch.load(result["last"], weights_only=True)["config"]["T"] == 3
