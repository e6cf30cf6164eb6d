"""Tiling and region crops against hand-computed grids and boxes."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from spikeyolo.data import build_dataset, crop_region, split_regions, tile_grid, tile_image
from spikeyolo.data.tiling import partition_grid


def test_tile_grid_hand_computed():
    # stride 80: x starts 0, 80 and the edge-aligned 150; one row since h == tile
    assert tile_grid(100, 250, 100, overlap=0.2) == [(0, 0, 100, 100), (80, 0, 180, 100), (150, 0, 250, 100)]
    assert tile_grid(60, 50, 100) == [(0, 0, 50, 60)]  # smaller than a tile: one tile, the whole image
    with pytest.raises(ValueError):
        tile_grid(10, 10, 5, overlap=1.0)


def test_tile_image_clips_and_drops_boxes():
    img = np.arange(100 * 250 * 3, dtype=np.int64).reshape(100, 250, 3) % 251
    boxes = np.array([[90, 10, 110, 30], [10, 40, 20, 50], [170, 0, 200, 20]], np.float32)
    tiles = tile_image(img, boxes, np.array([0, 1, 2]), 100, overlap=0.2, min_visibility=0.5)
    t0, t1, t2 = tiles
    np.testing.assert_array_equal(t0["img"], img[:, :100])
    # box 0 is half inside tile 0 (x 90..100 of 90..110): kept at exactly 0.5, clipped
    np.testing.assert_allclose(t0["boxes_xyxy"], [[90, 10, 100, 30], [10, 40, 20, 50]])
    np.testing.assert_array_equal(t0["cls"], [0, 1])
    # box 2 (x 170..200) keeps only 10 of its 30 px in tile 1 (x 80..180): dropped there
    np.testing.assert_allclose(t1["boxes_xyxy"], [[10, 10, 30, 30]])
    np.testing.assert_array_equal(t1["cls"], [0])
    assert t1["region"] == (80, 0, 180, 100)
    np.testing.assert_allclose(t2["boxes_xyxy"], [[20, 0, 50, 20]])
    np.testing.assert_array_equal(t2["cls"], [2])


def test_min_visibility_threshold():
    boxes = np.array([[90, 0, 110, 10]], np.float32)
    img = np.zeros((10, 200, 3), np.uint8)
    assert len(crop_region(img, boxes, np.array([0]), (0, 0, 100, 10), 0.5)[1]) == 1
    assert len(crop_region(img, boxes, np.array([0]), (0, 0, 100, 10), 0.6)[1]) == 0
    assert len(crop_region(img, boxes, np.array([0]), (0, 0, 95, 10), 0.0)[1]) == 1


def test_partition_grid_is_disjoint_cover():
    regions = partition_grid(1035, 375, 320)
    assert len(regions) == 4 * 2
    mask = np.zeros((1035, 375), np.int32)
    for x0, y0, x1, y1 in regions:
        assert x1 - x0 <= 320 and y1 - y0 <= 320
        mask[y0:y1, x0:x1] += 1
    assert (mask == 1).all()


def test_split_regions_share_no_pixel():
    tr, va = split_regions(400, 400, 0.3, "x")
    assert tr == (0, 0, 280, 400) and va == (280, 0, 400, 400)
    assert split_regions(100, 50, 0.25, "y") == ((0, 0, 50, 75), (0, 75, 50, 100))


def test_dataset_tile_option_ground_truth_per_tile(tmp_path):
    (tmp_path / "images").mkdir()
    (tmp_path / "labels").mkdir()
    img = np.zeros((100, 250, 3), np.uint8)
    img[10:30, 90:110] = 255
    cv2.imwrite(str(tmp_path / "images/big.png"), img)
    # box x 90..110, y 10..30 of 250 x 100
    (tmp_path / "labels/big.txt").write_text("0 0.4 0.2 0.08 0.2\n")
    y = tmp_path / "d.yaml"
    y.write_text("train: images\nval: images\nnames: [t]\n")
    ds = build_dataset(y, "val", imgsz=64, tile_size=100, overlap=0.2)
    assert len(ds) == 3 and ds.stats["images"] == 1 and ds.stats["samples"] == 3
    gts = [ds.ground_truth(i) for i in range(3)]
    assert [g["image_id"] for g in gts] == ["big__0_0", "big__80_0", "big__150_0"]
    assert all(g["shape"] == (100, 100) for g in gts)
    np.testing.assert_allclose(gts[0]["boxes_xyxy"], [[90, 10, 100, 30]], atol=1e-4)
    np.testing.assert_allclose(gts[1]["boxes_xyxy"], [[10, 10, 30, 30]], atol=1e-4)
    assert len(gts[2]["cls"]) == 0
    item = ds[1]
    assert item["im_file"].endswith("big__80_0.png") and item["ori_shape"] == (100, 100)
    chw = item["img"].numpy()
    # tile 80..180 letterboxed 100 -> 64: bright square at x,y 10..30 -> 6.4..19.2
    ys, xs = np.nonzero(chw[0] > 128)
    assert abs(xs.min() - 6.4) <= 1 and abs(xs.max() + 1 - 19.2) <= 1 and abs(ys.min() - 6.4) <= 1
