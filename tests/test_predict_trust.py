"""predict and val on bad input: one unreadable file never stops a folder, same-stem sources keep their own
outputs, a model given the wrong kind of source fails before any run folder, non-finite input is refused."""

import json

import cv2
import numpy as np
import pytest
import torch

import spikeyolo
from spikeyolo.cli import main
from spikeyolo.engine.predict_outputs import predict_source
from spikeyolo.engine.predictor import Predictor
from spikeyolo.engine.validator import Validator
from spikeyolo.utils.errors import InputError
from test_predict import FixedDetector


def test_one_bad_file_is_skipped_not_the_folder(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    cv2.imwrite(str(src / "a.png"), np.full((48, 64, 3), 50, np.uint8))
    (src / "b.jpg").write_bytes(b"not an image")
    (src / "c.mp4").write_bytes(b"not a video")
    cv2.imwrite(str(src / "d.png"), np.full((48, 64, 3), 90, np.uint8))
    with pytest.warns(UserWarning, match="b.jpg"):
        out = predict_source(Predictor(FixedDetector([20.0, 28.0, 20.0, 20.0]), imgsz=64), src, tmp_path / "out",
                             progress=False)
    done = {o["source"].split("/")[-1] for o in out if "skipped" not in o}
    skipped = {o["source"].split("/")[-1] for o in out if "skipped" in o}
    assert done == {"a.png", "d.png"} and skipped == {"b.jpg", "c.mp4"}
    assert sorted(p.name for p in (tmp_path / "out" / "labels").iterdir()) == ["a.txt", "d.txt"]


def test_same_stem_sources_get_distinct_outputs(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    cv2.imwrite(str(src / "x.png"), np.full((48, 64, 3), 50, np.uint8))  # 48 high
    cv2.imwrite(str(src / "x.jpg"), np.full((64, 32, 3), 50, np.uint8))  # 64 high
    cv2.imwrite(str(src / "y.png"), np.full((64, 64, 3), 50, np.uint8))
    predict_source(Predictor(FixedDetector([20.0, 28.0, 20.0, 20.0]), imgsz=64), src, tmp_path / "out",
                   progress=False)
    out = tmp_path / "out"
    assert sorted(p.name for p in (out / "labels").iterdir()) == ["x_jpg.txt", "x_png.txt", "y.txt"]
    assert json.loads((out / "x_png.json").read_text())["shape"] == [48, 64]
    assert json.loads((out / "x_jpg.json").read_text())["shape"] == [64, 32]
    assert {p.name for p in out.glob("*.*g")} == {"x.png", "x.jpg", "y.png"}


def test_model_and_source_kinds_must_match_before_a_run_folder(tmp_path, capsys):
    image_model = spikeyolo.build_model("n", nc=1, width=0.0625)
    event_model = spikeyolo.build_model("n", nc=1, width=0.0625, in_channels=2, T=2)
    spikeyolo.save(image_model, tmp_path / "img.pt")
    spikeyolo.save(event_model, tmp_path / "ev.pt")
    cv2.imwrite(str(tmp_path / "p.png"), np.full((32, 32, 3), 50, np.uint8))
    (tmp_path / "r_td.dat").write_bytes(b"% Height 240\n% Width 304\n")
    runs = tmp_path / "runs"
    assert main(["predict", "--weights", str(tmp_path / "ev.pt"), "--source", str(tmp_path / "p.png"),
                 "--project", str(runs)]) == 1
    err = capsys.readouterr().err
    assert "p.png" in err and "event recordings" in err and len(err.strip().splitlines()) == 1
    assert main(["predict", "--weights", str(tmp_path / "img.pt"), "--source", str(tmp_path / "r_td.dat"),
                 "--project", str(runs)]) == 1
    assert "trained on images" in capsys.readouterr().err
    assert not runs.exists()


def test_predictor_refuses_non_finite_frames():
    pred = Predictor(FixedDetector([20.0, 28.0, 20.0, 20.0]), imgsz=64)
    frame = np.full((48, 64, 3), 50.0, np.float32)
    frame[3, 4, 1] = np.nan
    with pytest.raises(InputError, match="NaN or infinite"):
        pred([frame])
    frame[3, 4, 1] = np.inf
    with pytest.raises(InputError, match="NaN or infinite"):
        pred([frame])


def test_validator_refuses_non_finite_input():
    img = torch.rand(2, 2, 2, 64, 64)  # event frames [B, T, C, H, W] arrive as floats
    img[1, 0, 1, 5, 5] = float("nan")
    batch = {"img": img, "cls": torch.zeros(0, 1), "bboxes": torch.zeros(0, 4), "batch_idx": torch.zeros(0),
             "im_file": ["rec_a@100", "rec_b@200"], "ori_shape": [(64, 64)] * 2,
             "ratio_pad": [((1.0, 1.0), (0.0, 0.0))] * 2}
    model = spikeyolo.build_model("n", nc=1, width=0.0625, in_channels=2, T=2)
    with pytest.raises(InputError, match="rec_a@100, rec_b@200"):
        Validator([batch], progress=False, compute_loss=False)(model)
