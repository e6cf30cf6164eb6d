"""`spikeyolo train / val / predict` end to end on a tiny dataset; --json is the last stdout line."""

import json
import subprocess
import sys

import pytest

from _train_data import make_dataset
from spikeyolo.cli import main


def last_json(capsys):
    out = capsys.readouterr().out.strip().splitlines()
    return json.loads(out[-1])


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli")
    data = make_dataset(root / "ds", n_train=4, n_val=2)
    argv = ["train", "--data", str(data), "--model", "n", "--width", "0.0625", "--epochs", "1", "--imgsz", "64",
            "--batch", "2", "--device", "cpu", "--workers", "0", "--project", str(root / "runs"), "--name", "t",
            "--no-plots", "--json"]
    return root, data, argv


def test_train_val_predict(trained, capsys):
    root, data, argv = trained
    assert main(argv) == 0
    t = last_json(capsys)
    assert t["weights"].endswith("t/weights/best.pt") and t["epochs"] == 1 and t["stopped"] is None
    assert 0 <= t["map50"] <= 1 and 0 <= t["map"] <= t["map50"] + 1e-9

    assert main(["val", "--weights", t["weights"], "--data", str(data), "--device", "cpu", "--workers", "0",
                 "--save-json", "--project", str(root / "runs"), "--name", "v", "--json"]) == 0
    v = last_json(capsys)
    assert {"map50", "map", "precision", "recall"} <= set(v)
    assert v["images"] == 2 and (root / "runs" / "v" / "predictions.json").is_file()
    # the same weights on the same data at the same size: val reports what training recorded for that epoch
    assert v["map50"] == pytest.approx(t["map50"], abs=1e-9) and v["map"] == pytest.approx(t["map"], abs=1e-9)

    assert main(["predict", "--weights", t["weights"], "--source", str(data.parent / "images" / "val"),
                 "--conf", "0.0001", "--project", str(root / "runs"), "--name", "p", "--json"]) == 0
    p = last_json(capsys)
    assert len(p["sources"]) == 2
    assert sorted(f.name for f in (root / "runs" / "p").glob("*.png")) == ["val000.png", "val001.png"]
    assert len(list((root / "runs" / "p" / "labels").glob("*.txt"))) == 2


def test_train_needs_data(capsys):
    assert main(["train"]) == 2
    assert "--data" in capsys.readouterr().err


def test_help_of_each_command(capsys):
    for cmd in ("train", "val", "predict", "demo"):
        with pytest.raises(SystemExit) as e:
            main([cmd, "--help"])
        assert e.value.code == 0 and "usage: spikeyolo " + cmd in capsys.readouterr().out
    r = subprocess.run([sys.executable, "-m", "spikeyolo", "train", "--help"], capture_output=True, text=True)
    assert r.returncode == 0 and "--resume" in r.stdout  # the module entry point


@pytest.fixture
def train_configs(monkeypatch):
    """The TrainConfig each `spikeyolo train` call builds (the training itself is skipped)."""
    import spikeyolo.cli as cli_mod

    seen = []

    class FakeTrainer:
        def __init__(self, cfg):
            seen.append(cfg)

        def train(self):
            return {"stopped": False}

    monkeypatch.setattr(cli_mod, "Trainer", FakeTrainer)
    return seen


def test_train_augmentation_flags_reach_the_config(train_configs, tmp_path):
    seen = train_configs
    assert main(["train", "--data", str(tmp_path / "d.yaml"), "--scale", "0.3", "--fliplr", "0"]) == 0
    assert main(["train", "--data", str(tmp_path / "d.yaml")]) == 0
    assert seen[0].hyp == {"scale": 0.3, "fliplr": 0.0}  # only what was given: datasets keep their defaults
    assert seen[1].hyp == {}


def test_train_neuron_flags_build_the_official_gen1_neuron(train_configs, tmp_path):
    from spikeyolo.engine.trainer import Trainer
    from spikeyolo.nn.neuron import ILIF, NeuronConfig

    seen = train_configs
    assert main(["train", "--data", str(tmp_path / "d.yaml"), "--decay", "0.5", "--input-gain", "0.5",
                 "--model", "n", "--width", "0.0625"]) == 0
    assert seen[0].neuron == NeuronConfig(decay=0.5, input_gain=0.5)
    model = Trainer(seen[0]).get_model(["car", "pedestrian"])
    assert {(m.decay, m.input_gain) for m in model.modules() if isinstance(m, ILIF)} == {(0.5, 0.5)}


def test_demo_amp_flag_reaches_the_trainer(monkeypatch, tmp_path):
    """`spikeyolo demo --amp` trains with TrainConfig.amp on; without it the demo keeps the default (None: off on
    CPU). The training is skipped: the fake trainer records its config and says it stopped."""
    import spikeyolo.demo as demo_mod

    seen = []

    class FakeTrainer:
        def __init__(self, cfg):
            seen.append(cfg)

        def train(self):
            return {"stopped": "skipped by the test", "best": None}

    monkeypatch.setattr(demo_mod, "Trainer", FakeTrainer)
    assert main(["demo", "--project", str(tmp_path), "--quiet", "--amp"]) == 1  # stopped: no mAP, exit 1
    assert main(["demo", "--project", str(tmp_path), "--quiet"]) == 1
    assert [c.amp for c in seen] == [True, None]
    assert seen[0].device == "cpu" and seen[0].width == demo_mod.DEMO_DEFAULTS["width"]  # the demo's own recipe
