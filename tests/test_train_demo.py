"""`spikeyolo demo` end to end at toy size (the real run takes ~10 minutes): tiles, train, held-out val, drawing."""

import json

import pytest

from spikeyolo.cli import main


@pytest.mark.slow  # a whole demo run end to end (79 s in `pytest --durations` on the shared 2-core machine)
def test_demo_flow_tiny(tmp_path, capsys):
    argv = ["demo", "--project", str(tmp_path), "--epochs", "1", "--imgsz", "64", "--width", "0.0625", "--batch", "8",
            "--quiet", "--json", "--scale", "0.3", "--no-hsv"]
    assert main(argv) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert out["weights"].endswith("trees/weights/best.pt") and 0 <= out["map50"] <= 1 and 0 <= out["map"] <= 1
    assert out["images"] > 0 and out["instances"] > 0 and out["settings"]["imgsz"] == 64
    assert out["settings"]["hyp"] == {"scale": 0.3, "hsv_h": 0.0, "hsv_s": 0.0, "hsv_v": 0.0}
    # the reported numbers are the test region's; the validation region (which picked best.pt) is reported too
    assert out["reported_on"] == "test" and out["map50"] == out["test"]["map50"]
    assert out["val"]["images"] > 0 and out["val"]["dir"].endswith("trees/val")
    assert json.loads((tmp_path / "trees" / "demo.json").read_text()) == out
    held = tmp_path / "trees" / "test"
    for f in ("predictions.json", "PR_curve.png", "confusion_matrix.png", "F1_curve.png", "energy_layers.csv",
              "firing_rates.png", "energy_by_stage.png"):
        assert (held / f).is_file(), f
    assert (tmp_path / "trees" / "results.csv").is_file() and (tmp_path / "trees" / "labels.jpg").is_file()
    drawn = sorted((held / "predictions").glob("*.png"))
    assert len(drawn) == out["images"]  # every test tile drawn
    # the held-out tiles come from the right part of each photo, never from the training part; val and test
    # tiles never overlap either
    tiles = tmp_path / "trees_data" / "images"
    train, val = ({p.name for p in (tiles / s).iterdir()} for s in ("train", "val"))
    assert not train & {p.name for p in drawn} and not val & {p.name for p in drawn}


@pytest.mark.slow  # simulates recordings, then a whole event demo run (43 s there)
def test_event_demo_flow_tiny(tmp_path, capsys, monkeypatch):
    """`spikeyolo demo --events` at toy size: simulated recordings (short ones here), train, held-out val under
    both protocols, and the simulated data reused until its settings change."""
    import yaml

    from spikeyolo import demo
    from spikeyolo.models.checkpoint import read_checkpoint

    tiny = {"recordings_per_image": {"train": 1, "val": 1}, "scale_range": [0.6, 0.9], "fps": 200,
            "duration_us": {"train": 300_000, "val": 400_000}}
    monkeypatch.setattr(demo, "EVENT_SIMULATION", tiny)
    argv = ["demo", "--events", "--project", str(tmp_path), "--epochs", "1", "--imgsz", "64", "--width", "0.0625",
            "--batch", "4", "--quiet", "--json"]
    assert main(argv) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert out["events"] and 0 <= out["map50"] <= 1 and out["images"] > 0
    assert out["prophesee"]["protocol"] == "prophesee"
    data = tmp_path / "trees_events_data"
    cfg = yaml.safe_load((data / "data.yaml").read_text())
    assert cfg["type"] == "gen1" and cfg["T"] == 2 and cfg["simulation"]["scale_range"] == [0.6, 0.9]
    assert len(list((data / "train").glob("*_td.dat"))) == 3 and len(list((data / "val").glob("*_td.dat"))) == 3
    from spikeyolo.events import read_bbox

    assert {int(read_bbox(f)["t"].max()) for f in (data / "val").glob("*_bbox.npy")} == {400_000}  # per split
    assert {int(read_bbox(f)["t"].max()) for f in (data / "train").glob("*_bbox.npy")} == {300_000}
    events = read_checkpoint(out["weights"])["config"]["events"]
    assert events["window_us"] == cfg["window_us"] and events["representation"] == cfg["representation"]

    stamp = (data / "train").stat().st_mtime_ns, sorted(p.stat().st_mtime_ns for p in data.rglob("*_td.dat"))
    assert demo.prepare_event_data(data, progress=False) == data / "data.yaml"  # same settings: reused
    assert sorted(p.stat().st_mtime_ns for p in data.rglob("*_td.dat")) == stamp[1]
    monkeypatch.setattr(demo, "EVENT_SIMULATION", {**tiny, "recordings_per_image": {"train": 2, "val": 1}})
    demo.prepare_event_data(data, progress=False)  # changed settings: simulated again
    assert len(list((data / "train").glob("*_td.dat"))) == 6
    monkeypatch.setattr(demo, "EVENT_SIMULATION", {**tiny, "fps": 100})
    demo.prepare_event_data(data, progress=False)  # back to one recording per photo: the extra ones are gone
    assert len(list((data / "train").glob("*_td.dat"))) == 3 and len(list((data / "train").glob("*.npy"))) == 3
    assert not (data / "cache").exists()
