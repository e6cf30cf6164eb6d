"""The bundled tree photos: merged classes, a spatial split with no shared pixel, safe writing."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml

from spikeyolo.data import build_dataset
from spikeyolo.data.labels import read_image
from spikeyolo.demo.trees import ASSET_DIR, load_tree_records, prepare_tree_dataset, tree_split


def count_objects(xml: Path) -> int:
    return xml.read_text().count("<object>")


def test_records_merge_all_classes_into_tree():
    recs = load_tree_records()
    assert len(recs) == 3 and (ASSET_DIR / "LICENSE.deepforest").is_file()
    for r in recs:
        assert len(r.cls) == count_objects(ASSET_DIR / (Path(r.im_file).stem + ".xml"))  # Alive/Dead included
        assert (r.cls == 0).all()
        h, w = r.shape
        assert (r.boxes[:, [0, 2]] <= w).all() and (r.boxes[:, [1, 3]] <= h).all()


def test_split_regions_are_disjoint_and_cover_each_photo():
    for stem, parts in tree_split(0.3).items():
        (tx0, ty0, tx1, ty1), (vx0, vy0, vx1, vy1) = parts["train"], parts["val"]
        assert tx1 == vx0 and tx0 == 0 and ty0 == vy0 == 0 and ty1 == vy1, stem
        assert (vx1 - vx0) / vx1 == pytest.approx(0.3, abs=0.01)


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    out = tmp_path_factory.mktemp("trees") / "demo"
    return out, prepare_tree_dataset(out, tile_size=320)


def test_prepared_dataset_tiles_stay_on_their_side(prepared):
    out, data_yaml = prepared
    meta = yaml.safe_load(data_yaml.read_text())
    assert meta["names"] == {0: "Tree"} and (out / "LICENSE.deepforest").is_file()
    assert meta["test"] == "images/test"
    for split in ("train", "val", "test"):
        files = sorted((out / "images" / split).glob("*.png"))
        assert files
        for f in files:
            stem, x0, y0 = f.stem.rsplit("_", 2)
            x0, y0 = int(x0), int(y0)
            lo, top, hi, bottom = meta["split"][stem][split]
            h, w = read_image(f).shape[:2]
            assert w <= 320 and h <= 320
            assert lo <= x0 and x0 + w <= hi and top <= y0 and y0 + h <= bottom, (f, split)  # never crosses a line


def test_validation_and_test_regions_split_the_held_out_part():
    for stem, parts in tree_split(0.3, test=True).items():
        held = tree_split(0.3)[stem]["val"]
        v, t = parts["val"], parts["test"]
        assert parts["train"] == tree_split(0.3)[stem]["train"]  # training region unchanged
        assert v[0] == t[0] == held[0] and v[2] == t[2] == held[2]
        assert v[1] == held[1] and v[3] == t[1] and t[3] == held[3] and abs((v[3] - v[1]) - (t[3] - t[1])) <= 1


def _boxes_mostly_inside(region) -> int:
    """Independent count from the original VOC boxes: boxes with at least half their area in ``region``."""
    n = 0
    x0, y0, x1, y1 = region[1]
    for r in load_tree_records():
        if Path(r.im_file).stem != region[0]:
            continue
        b = r.boxes
        iw = np.clip(b[:, 2], x0, x1) - np.clip(b[:, 0], x0, x1)
        ih = np.clip(b[:, 3], y0, y1) - np.clip(b[:, 1], y0, y1)
        n += int((iw * ih >= 0.5 * (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])).sum())
    return n


def test_val_and_test_count_each_tree_once_and_load(prepared):
    out, data_yaml = prepared
    for split in ("val", "test"):
        ds = build_dataset(data_yaml, split, imgsz=64)
        expected = sum(_boxes_mostly_inside((stem, parts[split])) for stem, parts in tree_split(0.3, True).items())
        # the partition cuts can split a tree once more; a tree cut exactly in half counts in both pieces
        assert abs(ds.stats["boxes"] - expected) <= 3 and ds.stats["skipped"] == 0, split
        assert ds.stats["warnings"] == [] and expected > 30


def test_reuse_and_refuse_to_overwrite(prepared):
    out, data_yaml = prepared
    assert prepare_tree_dataset(out, tile_size=320) == data_yaml  # same content: reused
    with pytest.raises(FileExistsError):
        prepare_tree_dataset(out, tile_size=256)  # other tiles would mix into the folder
    label = next((out / "labels" / "train").glob("*.txt"))
    before = label.read_text()
    label.write_text(before + "0 0.5 0.5 0.1 0.1\n")
    try:
        with pytest.raises(FileExistsError):
            prepare_tree_dataset(out, tile_size=320)
        assert label.read_text().endswith("0 0.5 0.5 0.1 0.1\n")  # the user's edit is kept
    finally:
        label.write_text(before)
