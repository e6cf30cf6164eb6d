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
    for split in ("train", "val"):
        files = sorted((out / "images" / split).glob("*.png"))
        assert files
        for f in files:
            stem, x0, y0 = f.stem.rsplit("_", 2)
            x0, y0 = int(x0), int(y0)
            lo, _, hi, _ = meta["split"][stem][split]
            h, w = read_image(f).shape[:2]
            assert w <= 320 and h <= 320
            assert lo <= x0 and x0 + w <= hi, (f, lo, hi)  # never crosses the split line


def test_val_counts_each_tree_once_and_loads(prepared):
    out, data_yaml = prepared
    val = build_dataset(data_yaml, "val", imgsz=64)
    # independent count: boxes with at least half their area right of the line, from the original VOC boxes
    expected = 0
    for r in load_tree_records():
        cut = tree_split(0.3)[Path(r.im_file).stem]["val"][0]
        inside = np.clip(r.boxes[:, 2], cut, None) - np.clip(r.boxes[:, 0], cut, None)
        expected += int((inside >= 0.5 * (r.boxes[:, 2] - r.boxes[:, 0])).sum())
    # the partition cuts can split a tree once more; a tree cut exactly in half counts in both pieces
    assert abs(val.stats["boxes"] - expected) <= 3 and val.stats["skipped"] == 0
    assert val.stats["warnings"] == []


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
