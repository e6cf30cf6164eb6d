"""Items and batches per docs/internals.md, reproducibility across worker counts, epochs, mosaic switch, DDP."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from spikeyolo.data import build_dataloader, build_dataset, collate

N_IMAGES = 8


@pytest.fixture(scope="module")
def rect_set(tmp_path_factory):
    """Black images, each with one white rectangle and its YOLO label (boxes = drawn pixels exactly)."""
    root = tmp_path_factory.mktemp("rects")
    (root / "images").mkdir()
    (root / "labels").mkdir()
    rng = np.random.default_rng(0)
    for i in range(N_IMAGES):
        h, w = int(rng.integers(60, 120)), int(rng.integers(60, 120))
        x1, y1 = int(rng.integers(0, w - 30)), int(rng.integers(0, h - 30))
        x2, y2 = x1 + int(rng.integers(12, 30)), y1 + int(rng.integers(12, 30))
        img = np.zeros((h, w, 3), np.uint8)
        img[y1:y2, x1:x2] = 255
        cv2.imwrite(str(root / f"images/{i}.png"), img)
        (root / f"labels/{i}.txt").write_text(
            f"0 {(x1 + x2) / 2 / w} {(y1 + y2) / 2 / h} {(x2 - x1) / w} {(y2 - y1) / h}\n"
        )
    y = root / "d.yaml"
    y.write_text("train: images\nval: images\nnames: [box]\n")
    return y


def to_xyxy(bboxes: torch.Tensor, size: int) -> np.ndarray:
    b = bboxes.numpy() * size
    return np.stack([b[:, 0] - b[:, 2] / 2, b[:, 1] - b[:, 3] / 2, b[:, 0] + b[:, 2] / 2, b[:, 1] + b[:, 3] / 2], 1)


def test_val_item_contract_and_ratio_pad_maps_back_to_ground_truth(rect_set):
    ds = build_dataset(rect_set, "val", imgsz=64)
    for i in range(len(ds)):
        it, gt = ds[i], ds.ground_truth(i)
        assert it["img"].dtype == torch.uint8 and it["img"].shape == (3, 64, 64)
        assert it["cls"].shape == (1, 1) and it["bboxes"].shape == (1, 4) and it["batch_idx"].tolist() == [0.0]
        assert it["ori_shape"] == gt["shape"] and it["im_file"] == gt["im_file"]
        (gy, gx), (px, py) = it["ratio_pad"]
        h, w = gt["shape"]
        r = min(64 / h, 64 / w)  # independent letterbox arithmetic
        assert gx == pytest.approx(round(w * r) / w) and gy == pytest.approx(round(h * r) / h)
        assert (px, py) == ((64 - round(w * r)) // 2, (64 - round(h * r)) // 2)
        back = (to_xyxy(it["bboxes"], 64) - [px, py, px, py]) / [gx, gy, gx, gy]  # input = orig * gain + pad
        np.testing.assert_allclose(back, gt["boxes_xyxy"], atol=1e-3)


def test_augmented_boxes_bound_the_drawn_pixels(rect_set):
    ds = build_dataset(rect_set, "train", imgsz=64, hyp={"hsv_h": 0, "hsv_s": 0, "hsv_v": 0}, seed=5)
    n_boxes = 0
    for epoch in range(3):
        ds.set_epoch(epoch)
        for i in range(len(ds)):
            it = ds[i]
            img = it["img"][0].numpy()
            boxes = to_xyxy(it["bboxes"], 64)
            assert ((boxes >= -1e-4) & (boxes <= 64 + 1e-4)).all()
            covered = np.zeros_like(img, bool)
            for x1, y1, x2, y2 in boxes:
                n_boxes += 1
                inside = img[int(np.ceil(y1)) : int(y2), int(np.ceil(x1)) : int(x2)]
                assert inside.size and (inside > 200).mean() > 0.5  # the box is on the drawn rectangle
                covered[max(int(y1) - 1, 0) : int(np.ceil(y2)) + 1, max(int(x1) - 1, 0) : int(np.ceil(x2)) + 1] = True
            # every clearly white pixel lies in some box (1 px margin for interpolation), except what is left
            # of a rectangle cut by the frame or mosaic canvas edge and dropped on purpose: a sliver of <= 3 px,
            # or a corner keeping under 10 % of the largest possible box (30 px * 1.5 scale * 64/60 letterbox)
            _, _, st, _ = cv2.connectedComponentsWithStats(((img > 200) & ~covered).astype(np.uint8))
            for x, y, w, h, _area in st[1:]:
                assert min(w, h) <= 3 or w * h < 0.1 * (30 * 1.5 * 64 / 60) ** 2, (epoch, i, x, y, w, h)
    assert n_boxes > 20


def test_collate_images_and_event_frames():
    items = [
        {"img": torch.zeros(3, 8, 8, dtype=torch.uint8), "cls": torch.tensor([[1.0], [0.0]]),
         "bboxes": torch.rand(2, 4), "batch_idx": torch.zeros(2), "im_file": "a", "ori_shape": (8, 8),
         "ratio_pad": ((1, 1), (0, 0))},
        {"img": torch.ones(3, 8, 8, dtype=torch.uint8), "cls": torch.zeros(0, 1), "bboxes": torch.zeros(0, 4),
         "batch_idx": torch.zeros(0), "im_file": "b", "ori_shape": (8, 8), "ratio_pad": ((1, 1), (0, 0))},
        {"img": torch.ones(3, 8, 8, dtype=torch.uint8), "cls": torch.tensor([[2.0]]), "bboxes": torch.rand(1, 4),
         "batch_idx": torch.zeros(1), "im_file": "c", "ori_shape": (4, 8), "ratio_pad": ((2, 1), (0, 3))},
    ]  # fmt: skip
    b = collate(items)
    assert b["img"].shape == (3, 3, 8, 8) and b["cls"].tolist() == [[1.0], [0.0], [2.0]]
    assert b["batch_idx"].tolist() == [0.0, 0.0, 2.0] and b["bboxes"].shape == (3, 4)
    assert b["im_file"] == ["a", "b", "c"] and b["ori_shape"][2] == (4, 8) and b["ratio_pad"][2] == ((2, 1), (0, 3))
    ev = [dict(it, img=torch.rand(2, 3, 8, 8), t=100 * k, recording="r") for k, it in enumerate(items)]
    be = collate(ev)
    assert be["img"].shape == (3, 2, 3, 8, 8) and be["img"].dtype == torch.float32 and be["t"] == [0, 100, 200]


def batches(loader, epochs=(0, 1)):
    out = []
    for e in epochs:
        loader.set_epoch(e)
        out += [(b["im_file"], b["img"].clone(), b["bboxes"].clone(), b["batch_idx"].clone()) for b in loader]
    return out


def same(a, b) -> bool:
    return all(
        fa == fb and torch.equal(ia, ib) and torch.equal(ba, bb) and torch.equal(xa, xb)
        for (fa, ia, ba, xa), (fb, ib, bb, xb) in zip(a, b)
    ) and len(a) == len(b)


def test_same_seed_same_batches_for_0_and_2_workers(rect_set):
    ds = build_dataset(rect_set, "train", imgsz=64, seed=3)
    ref = batches(build_dataloader(ds, 3, workers=0, shuffle=True, seed=3))
    again = batches(build_dataloader(build_dataset(rect_set, "train", imgsz=64, seed=3), 3, 0, True, 3))
    two = batches(build_dataloader(build_dataset(rect_set, "train", imgsz=64, seed=3), 3, 2, True, 3))
    assert same(ref, again) and same(ref, two)
    other = batches(build_dataloader(build_dataset(rect_set, "train", imgsz=64, seed=4), 3, 0, True, 4))
    assert not same(ref, other)
    epoch0, epoch1 = ref[:3], ref[3:]  # set_epoch changed order and augmentation
    assert not same(epoch0, epoch1)


def test_close_mosaic_reaches_persistent_workers(rect_set):
    still = {"translate": 0, "scale": 0, "fliplr": 0, "hsv_s": 0, "hsv_v": 0, "hsv_h": 0}
    ds = build_dataset(rect_set, "train", imgsz=64, seed=1, hyp=still)
    loader = build_dataloader(ds, N_IMAGES, workers=2, shuffle=False)
    first = next(iter(loader))
    assert (first["batch_idx"].long().bincount(minlength=N_IMAGES) > 1).any()  # mosaic: several boxes in one image
    ds.close_mosaic()
    second = next(iter(loader))
    # no mosaic, no affine change: each image is its letterboxed self with exactly its one box
    assert second["batch_idx"].tolist() == list(range(N_IMAGES))
    val = build_dataset(rect_set, "val", imgsz=64)
    for k in range(N_IMAGES):
        assert torch.equal(second["img"][k], val[k]["img"])


def test_distributed_shards_are_disjoint_and_cover(rect_set):
    ds = build_dataset(rect_set, "val", imgsz=64)
    files = []
    for rank in (0, 1):
        loader = build_dataloader(ds, 2, workers=0, shuffle=True, seed=0, rank=rank, world_size=2)
        loader.set_epoch(0)
        files.append([f for b in loader for f in b["im_file"]])
    assert len(files[0]) == len(files[1]) == N_IMAGES // 2
    assert set(files[0]).isdisjoint(files[1]) and len(set(files[0]) | set(files[1])) == N_IMAGES
