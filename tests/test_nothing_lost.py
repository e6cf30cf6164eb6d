"""Nothing lost, nothing left behind: writes go to a temporary beside the target and are renamed when complete
(a full disk keeps the old file and names it), same-stem sources keep their own outputs, a run that wrote
nothing leaves no folder, an image without detections gets no label file."""

import errno
import json

import cv2
import numpy as np
import pytest

import spikeyolo
from spikeyolo.cli import main
from spikeyolo.engine.predict_outputs import predict_source
from spikeyolo.engine.predictor import Predictor
from spikeyolo.utils import runs
from spikeyolo.utils.runs import atomic_path, atomic_write
from test_predict import FixedDetector


def test_a_complete_write_replaces_the_file_and_leaves_no_temporary(tmp_path):
    target = tmp_path / "sub" / "model.onnx"
    atomic_write(target, b"old")
    atomic_write(target, "new text")
    assert target.read_bytes() == b"new text"
    assert sorted(p.name for p in target.parent.iterdir()) == ["model.onnx"]


def test_a_full_disk_midway_keeps_the_old_file_and_names_it(tmp_path, monkeypatch):
    target = tmp_path / "model.onnx"
    target.write_bytes(b"good old model")

    with pytest.raises(OSError) as info, atomic_path(target) as tmp:
        assert tmp.parent == target.parent and tmp.suffix == ".onnx" and tmp != target
        with open(tmp, "wb") as f:
            f.write(b"half of the new ")
            f.flush()
            raise OSError(errno.ENOSPC, "No space left on device")  # the disk fills midway
    assert info.value.errno == errno.ENOSPC and info.value.filename == str(target)
    assert target.read_bytes() == b"good old model"
    assert [p.name for p in tmp_path.iterdir()] == ["model.onnx"]


def test_any_failure_keeps_the_old_file(tmp_path):
    target = tmp_path / "labels.txt"
    target.write_text("0 0.5 0.5 0.1 0.1\n")
    with pytest.raises(KeyboardInterrupt), atomic_path(target) as tmp:
        tmp.write_text("torn")
        raise KeyboardInterrupt
    assert target.read_text() == "0 0.5 0.5 0.1 0.1\n"
    assert [p.name for p in tmp_path.iterdir()] == ["labels.txt"]


class FullDiskFile:
    """A file whose disk fills after ``room`` bytes: the write raises ENOSPC midway, as the kernel does."""

    def __init__(self, path, room):
        self.f, self.room = open(path, "wb"), room

    def write(self, data):
        self.f.write(bytes(data[: self.room]))
        self.f.flush()
        raise OSError(errno.ENOSPC, "No space left on device")

    def flush(self):
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.f.close()


def fill_disk(monkeypatch, room=100):
    monkeypatch.setattr(runs, "open", lambda path, mode="r": FullDiskFile(path, room), raising=False)


def test_export_on_a_full_disk_keeps_the_old_onnx_and_names_it(tmp_path, monkeypatch, capsys):
    pytest.importorskip("onnx")
    weights = spikeyolo.save(spikeyolo.build_model("n", nc=1, width=0.0625), tmp_path / "m.pt")
    argv = ["export", "--weights", str(weights), "--imgsz", "64"]
    assert main(argv) == 0
    good = (tmp_path / "m.onnx").read_bytes()
    assert len(good) > 1000
    capsys.readouterr()
    fill_disk(monkeypatch)
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert "no space left" in err.lower() and "m.onnx" in err and "Traceback" not in err
    assert (tmp_path / "m.onnx").read_bytes() == good  # the old export survives whole
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx", "m.pt"]  # no temporary left


def _image(path, shape=(48, 64), value=50):
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), np.full((*shape, 3), value, np.uint8))


def test_predict_on_a_full_disk_leaves_no_empty_label_file(tmp_path, monkeypatch):
    _image(tmp_path / "src" / "a.png")
    fill_disk(monkeypatch, room=0)
    with pytest.raises(OSError) as info:
        predict_source(Predictor(FixedDetector([20.0, 28.0, 20.0, 20.0]), imgsz=64), tmp_path / "src",
                       tmp_path / "out", save=False, progress=False)
    assert info.value.errno == errno.ENOSPC and "a.txt" in info.value.filename
    assert [p for p in (tmp_path / "out").rglob("*") if p.is_file()] == []  # no 0-byte (or torn) file


def test_same_stem_in_two_folders_keeps_both_pictures_and_json(tmp_path):
    _image(tmp_path / "a" / "x.png", (48, 64))
    _image(tmp_path / "b" / "x.png", (64, 32))
    _image(tmp_path / "c" / "y.png", (64, 64))
    sources = [str(tmp_path / d / n) for d, n in (("a", "x.png"), ("b", "x.png"), ("c", "y.png"))]
    out = tmp_path / "out"
    summaries = predict_source(Predictor(FixedDetector([20.0, 28.0, 20.0, 20.0]), imgsz=64), sources, out,
                               progress=False)
    assert sorted(p.name for p in (out / "labels").iterdir()) == ["a_x_png.txt", "b_x_png.txt", "y.txt"]
    for stem, shape, source in (("a_x_png", [48, 64], sources[0]), ("b_x_png", [64, 32], sources[1])):
        js = json.loads((out / f"{stem}.json").read_text())
        assert js["shape"] == shape and js["source"] == source
        assert cv2.imread(str(out / f"{stem}.png")).shape[:2] == tuple(shape)  # each its own picture
    assert (out / "y.png").exists()
    assert [s["saved"] for s in summaries] == [str(out / "a_x_png.png"), str(out / "b_x_png.png"),
                                               str(out / "y.png")]


def test_an_image_without_detections_gets_no_label_file(tmp_path):
    _image(tmp_path / "src" / "a.png")
    out = tmp_path / "out"
    predict_source(Predictor(FixedDetector([20.0, 28.0, 20.0, 20.0]), imgsz=64, conf=0.9), tmp_path / "src", out,
                   progress=False)  # the only box scores 0.8
    assert list((out / "labels").iterdir()) == []
    assert json.loads((out / "a.json").read_text())["detections"] == []


@pytest.mark.parametrize("source", ["99", "broken.mp4"])
def test_a_failed_camera_or_video_leaves_no_run_folder(source, tmp_path, capsys):
    weights = spikeyolo.save(spikeyolo.build_model("n", nc=1, width=0.0625), tmp_path / "m.pt")
    (tmp_path / "broken.mp4").write_bytes(b"not a video at all")
    src = str(tmp_path / source) if source.endswith(".mp4") else source
    with pytest.warns(UserWarning, match="cannot open"):
        rc = main(["predict", "--weights", str(weights), "--source", src, "--imgsz", "64", "--device", "cpu",
                   "--project", str(tmp_path / "runs")])
    assert rc == 1
    assert "nothing written" in capsys.readouterr().out
    assert list((tmp_path / "runs").iterdir()) == []  # no empty predict/ folder
