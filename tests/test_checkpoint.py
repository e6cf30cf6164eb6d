"""Checkpoints: round trip, plain-data config, safe loading, clear errors on foreign files."""

import pickle

import pytest
import torch

import spikeyolo


def test_round_trip_keeps_weights_config_and_outputs(tmp_path):
    torch.manual_seed(0)
    model = spikeyolo.build_model("n", nc=2, width=0.125, T=2, D=2, names=["tree", "car"], decay=0.5,
                                  input_gain=0.5).eval()
    path = spikeyolo.save(model, tmp_path / "m.pt", metrics={"map50": 0.5})
    raw = torch.load(path, weights_only=True)  # plain tensors and data only
    assert raw["format"] == "spikeyolo" and raw["metrics"] == {"map50": 0.5}
    cfg = raw["config"]
    assert (cfg["scale"], cfg["nc"], cfg["names"], cfg["T"], cfg["D"]) == ("n", 2, ["tree", "car"], 2, 2)
    assert (cfg["decay"], cfg["input_gain"], cfg["detach_reset"]) == (0.5, 0.5, True)
    loaded = spikeyolo.load(path)
    x = torch.rand(1, 3, 64, 64)
    assert torch.equal(loaded(x), model(x))
    assert [m.decay for m in loaded.modules() if isinstance(m, spikeyolo.ILIF)][0] == 0.5
    assert not list(tmp_path.glob(".*tmp*"))  # the atomic write left no temporary file


class Foreign:  # a pickled object, as in the official checkpoints: must not be unpickled
    pass


def test_foreign_files_give_clear_errors(tmp_path):
    plain = tmp_path / "state.pt"
    torch.save({"weight": torch.zeros(1)}, plain)
    with pytest.raises(ValueError, match="not a spikeyolo checkpoint"):
        spikeyolo.load(plain)

    pickled = tmp_path / "obj.pt"
    with open(pickled, "wb") as f:
        pickle.dump({"model": Foreign()}, f)
    with pytest.raises(ValueError, match="not a spikeyolo checkpoint"):
        spikeyolo.load(pickled)
    text = tmp_path / "notes.txt"
    text.write_text("hello")
    with pytest.raises(ValueError, match="notes.txt"):
        spikeyolo.load(text)
    with pytest.raises(FileNotFoundError, match="missing.pt"):
        spikeyolo.load(tmp_path / "missing.pt")


def test_only_the_train_form_is_saved(tmp_path):
    model = spikeyolo.build_model("n", nc=2, width=0.125)
    with pytest.raises(ValueError, match="train form"):
        spikeyolo.save(spikeyolo.fuse(model), tmp_path / "f.pt")
