"""Data YAML loading and its errors."""

from __future__ import annotations

import pytest

from spikeyolo.data import DataConfigError, build_dataset, load_data_config


def test_relative_root_names_dict_and_list_file(tmp_path):
    root = tmp_path / "set"
    (root / "images" / "train").mkdir(parents=True)
    (root / "val.txt").write_text("images/train/a.jpg\n")
    (tmp_path / "cfg").mkdir()
    y = tmp_path / "cfg" / "d.yaml"
    y.write_text("path: ../set\ntrain: images/train\nval: val.txt\nnames: {1: dog, 0: cat}\n")
    cfg = load_data_config(y)
    assert cfg["path"] == str(root.resolve())
    assert cfg["train"] == [str(root / "images" / "train")] and cfg["val"] == [str(root / "val.txt")]
    assert cfg["names"] == ["cat", "dog"] and cfg["nc"] == 2 and cfg["type"] == "yolo"
    assert "test" not in cfg
    assert load_data_config(cfg) == cfg  # a loaded config loads again unchanged


def test_missing_folder_names_yaml_and_key(tmp_path):
    (tmp_path / "images").mkdir()
    y = tmp_path / "d.yaml"
    y.write_text("train: images\nval: images/nope\nnames: [a]\n")
    with pytest.raises(DataConfigError) as e:
        load_data_config(y)
    assert str(y) in str(e.value) and "'val'" in str(e.value) and "nope" in str(e.value)


@pytest.mark.parametrize(
    "text, key",
    [
        ("path: nowhere\ntrain: .\nnames: [a]\n", "'path'"),
        ("train: .\nnames: [a, b]\nnc: 3\n", "'nc'"),
        ("train: .\n", "'names'"),
        ("train: .\nnames: {0: a, 2: b}\n", "'names'"),
        ("type: pascal\ntrain: .\nnames: [a]\n", "'type'"),
        ("type: coco\ntrain: .\nnames: [a]\n", "'train'"),
        ("type: coco\ntrain: {images: ., annotations: none.json}\n", "'train.annotations'"),
        ("names: [a]\n", "no split"),
    ],
)
def test_config_errors(tmp_path, text, key):
    y = tmp_path / "d.yaml"
    y.write_text(text)
    with pytest.raises(DataConfigError, match=key.replace("(", r"\(")) as e:
        load_data_config(y)
    assert str(y) in str(e.value)


def test_missing_yaml_and_missing_split(tmp_path):
    with pytest.raises(DataConfigError, match="not found"):
        load_data_config(tmp_path / "none.yaml")
    y = tmp_path / "d.yaml"
    y.write_text("train: .\nnames: [a]\n")
    with pytest.raises(DataConfigError, match="'val'") as e:
        build_dataset(y, "val")
    assert str(y) in str(e.value)
    with pytest.raises(DataConfigError, match="'val'") as e:
        build_dataset(load_data_config(y), "val")  # a loaded config still names its YAML
    assert str(y) in str(e.value)


def test_nc_only_and_dict_input(tmp_path):
    cfg = load_data_config({"path": str(tmp_path), "train": ".", "nc": 2})
    assert cfg["names"] == ["class0", "class1"] and cfg["yaml_file"] is None


def test_gen1_dispatch(tmp_path, monkeypatch):
    from spikeyolo.data import dataset as dataset_module

    calls = []
    fake = lambda cfg, split, imgsz, **kw: calls.append((cfg["type"], split, imgsz, kw)) or "ds"  # noqa: E731
    monkeypatch.setitem(dataset_module.EVENT_DATASETS, "gen1", fake)
    y = tmp_path / "g.yaml"
    (tmp_path / "test").mkdir()
    y.write_text("type: gen1\ntrain: test\nval: test\nnames: [car, pedestrian]\n")
    assert build_dataset(y, "val", 320, T=2) == "ds"
    assert build_dataset(y, "train", 320, seed=3, hyp={"scale": 0.3}) == "ds"
    assert calls == [("gen1", "val", 320, {"augment": False, "seed": 0, "hyp": None, "progress": True, "T": 2}),
                     ("gen1", "train", 320, {"augment": True, "seed": 3, "hyp": {"scale": 0.3}, "progress": True})]
