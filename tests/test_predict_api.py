"""The Python prediction API (spikeyolo.predict -> Result) and predict's sources: globs, .txt lists, webcam
indices and stream URLs (a file:// URL of a local video stands in for a network stream), --classes, --batch,
--vid-stride through the CLI."""

import json

import cv2
import numpy as np
import pytest

import spikeyolo
from spikeyolo.cli import main
from spikeyolo.engine.sources import Source, open_capture, resolve_sources
from test_predict import FixedDetector


@pytest.fixture
def photos(tmp_path):
    d = tmp_path / "photos"
    d.mkdir()
    cv2.imwrite(str(d / "a.png"), np.full((48, 64, 3), 50, np.uint8))
    cv2.imwrite(str(d / "b.jpg"), np.full((96, 128, 3), 90, np.uint8))
    cv2.imwrite(str(d / "c.png"), np.full((64, 64, 3), 20, np.uint8))
    return d


def write_video(path, n=7):
    w = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 10.0, (64, 48))
    for i in range(n):
        w.write(np.full((48, 64, 3), 30 * i, np.uint8))
    w.release()
    return path


def test_predict_api_results_in_original_pixels(photos):
    model = FixedDetector([20.0, 28.0, 20.0, 20.0])  # input box (10,18)-(30,38) of a 64 input
    results = spikeyolo.predict(model, str(photos / "*.jpg"), imgsz=64)
    assert len(results) == 1
    r = results[0]
    assert r.path.endswith("b.jpg") and r.frame is None and r.shape == (96, 128) and len(r) == 1
    # 128x96 letterboxed to 64: gain 0.5, 8 px padding on top -> (20, 20)-(60, 60) in the photo
    np.testing.assert_allclose(r.boxes, [[20, 20, 60, 60]], atol=0.01)
    assert r.scores.tolist() == pytest.approx([0.8]) and r.classes.tolist() == [1] and r.labels == ["b"]
    assert r.to_dict()["detections"][0]["name"] == "b"
    # classes filter; numpy images; a generator with stream=True
    assert len(spikeyolo.predict(model, str(photos), imgsz=64, classes=[0])[0]) == 0
    arrays = spikeyolo.predict(model, [np.zeros((48, 64, 3), np.uint8)] * 3, imgsz=64, batch=2)
    assert [a.path for a in arrays] == ["image0", "image1", "image2"] and model.calls == 1 + 3 + 2
    gen = spikeyolo.predict(model, str(photos), imgsz=64, stream=True)
    assert not isinstance(gen, list) and len(list(gen)) == 3


def test_sources_glob_txt_list_and_streams(photos, tmp_path):
    assert [s.kind for s in resolve_sources(str(photos / "*.png"))] == ["image", "image"]
    lst = tmp_path / "list.txt"
    lst.write_text("# my photos\nphotos/c.png\n\n" + str(photos / "a.png") + "\n")
    assert [s.path for s in resolve_sources(lst)] == [str(photos / "c.png"), str(photos / "a.png")]
    lst.write_text("photos/a.png\nphotos/missing.png\n")
    with pytest.raises(FileNotFoundError, match=r"list.txt:2: photos/missing.png"):
        resolve_sources(lst)
    with pytest.raises(FileNotFoundError, match="no image"):
        resolve_sources(str(tmp_path / "*.gif"))
    assert resolve_sources(0) == resolve_sources("0") == [Source("stream", "0")]
    assert resolve_sources("0")[0].name == "webcam0"
    url = resolve_sources("rtsp://camera.local:554/live/front")[0]
    assert url.kind == "stream" and url.name == "front"
    with pytest.raises(OSError, match="cannot open stream"):
        open_capture(Source("stream", "file:///nonexistent/clip.mp4"))


def test_stream_url_with_batch_and_stride(tmp_path):
    video = write_video(tmp_path / "clip.mp4", n=7)
    model = FixedDetector([20.0, 28.0, 20.0, 20.0])
    results = spikeyolo.predict(model, f"file://{video}", imgsz=64, batch=3, vid_stride=2)
    assert [r.frame for r in results] == [0, 2, 4, 6] and model.calls == 2  # 4 frames in batches of 3
    assert results[0].fps == pytest.approx(5.0)


def test_cli_predict_glob_classes_batch_and_video_stride(photos, tmp_path, capsys):
    model = spikeyolo.build_model("n", nc=2, width=0.0625, names=["a", "b"])
    weights = spikeyolo.save(model, tmp_path / "m.pt")
    video = write_video(tmp_path / "clip.mp4", n=6)
    lst = tmp_path / "all.txt"
    lst.write_text(f"{photos / 'a.png'}\n{video}\n")
    args = ["predict", "--weights", str(weights), "--imgsz", "64", "--conf", "0.0", "--device", "cpu",
            "--project", str(tmp_path / "runs"), "--json", "--batch", "2", "--vid-stride", "3"]
    assert main([*args, "--source", str(lst), "--name", "list", "--classes", "0"]) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    kinds = [(s["type"], s.get("frames")) for s in out["sources"]]
    assert kinds == [("image", None), ("video", 2)]  # frames 0 and 3 of 6
    run = tmp_path / "runs" / "list"
    rows = [np.loadtxt(f, ndmin=2) for f in sorted((run / "labels").glob("*.txt"))]
    assert sorted(p.name for p in (run / "labels").glob("*.txt")) == ["a.txt", "clip_0.txt", "clip_3.txt"]
    assert sum(len(r) for r in rows) > 0 and all((r[:, 0] == 0).all() for r in rows)
    # the untrained model's best class is 0 everywhere: keeping class 1 only leaves nothing
    assert main([*args, "--source", str(photos / "*.png"), "--name", "glob", "--classes", "1"]) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert [s["source"] for s in out["sources"]] == [str(photos / "a.png"), str(photos / "c.png")]
    assert [s["detections"] for s in out["sources"]] == [0, 0]
