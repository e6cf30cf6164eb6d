"""The loader's speed-ups keep outputs identical: each fast path against the plain computation it replaced, and
cached datasets (RAM, disk) against uncached ones with the same seed. The label cache round-trips exactly."""

from __future__ import annotations

import os

import cv2
import numpy as np
import pytest
import torch

from spikeyolo.data import augment as A
from spikeyolo.data import build_dataloader, build_dataset
from spikeyolo.data.dataset import arrays_to_records, records_to_arrays
from spikeyolo.data.image_cache import MARKER
from spikeyolo.data.labels import Record, read_image

IMG = np.random.default_rng(0).integers(0, 256, (37, 53, 3), dtype=np.uint8)


def test_rgb_chw_and_flip_equal_plain_indexing():
    want = np.empty((3, 37, 53), np.uint8)
    for c in range(3):
        want[c] = IMG[:, :, 2 - c]  # RGB planes from BGR
    np.testing.assert_array_equal(A.bgr_to_rgb_chw(IMG), want)
    flipped, _ = A.hflip(IMG, np.zeros((0, 4)))
    np.testing.assert_array_equal(flipped, IMG[:, ::-1])


def test_hsv_jitter_equals_split_lut_merge_of_the_formula():
    class Fixed:
        def __init__(self):
            self.v = [0.7, np.array([-0.4, 0.9])]

        def uniform(self, low, high, size=None):
            return self.v.pop(0)

    out = A.hsv_jitter(IMG, Fixed(), 0.015, 0.7, 0.4)
    x = np.arange(256, dtype=np.float32)  # our rule: hue shifted, saturation / value scaled, all rounded
    luts = (np.mod(np.round(x + 0.7 * 0.015 * 180), 180), np.clip(np.round(x * (1 - 0.4 * 0.7)), 0, 255),
            np.clip(np.round(x * (1 + 0.9 * 0.4)), 0, 255))
    planes = cv2.split(cv2.cvtColor(IMG, cv2.COLOR_BGR2HSV))
    hsv = cv2.merge([cv2.LUT(p, lut.astype(np.uint8)) for p, lut in zip(planes, luts)])
    np.testing.assert_array_equal(out, cv2.cvtColor(hsv, cv2.COLOR_HSV2BGR))


@pytest.mark.parametrize("seed", range(6))
def test_affine_via_bgra_equals_three_channel_warp(seed):
    rng = np.random.default_rng(seed)
    img = rng.integers(0, 256, (int(rng.integers(40, 200)), int(rng.integers(40, 200)), 3), dtype=np.uint8)
    s, tx, ty = rng.uniform(0.5, 1.5), *rng.uniform(-0.1, 0.1, 2)

    class Fixed:
        def __init__(self):
            self.v = [s, np.array([tx, ty])]

        def uniform(self, low, high, size=None):
            return self.v.pop(0)

    out, _, _ = A.random_affine(img, np.zeros((0, 4)), np.zeros(0), (96, 96), Fixed())
    h, w = img.shape[:2]  # centre, scale, move to the output centre + shift
    m = np.array([[s, 0, 48 * (1 + 2 * tx) - s * w / 2], [0, s, 48 * (1 + 2 * ty) - s * h / 2]])
    np.testing.assert_array_equal(out, cv2.warpAffine(img, m, (96, 96), borderValue=(114, 114, 114)))
    # a BGRA mosaic canvas (channels=4) gives the same pixels as the BGR one
    pieces = [(img, np.zeros((0, 4)), np.zeros(0))] * 4
    c3, _, _ = A.mosaic4(pieces, 96, np.random.default_rng(seed))
    c4, _, _ = A.mosaic4(pieces, 96, np.random.default_rng(seed), channels=4)
    np.testing.assert_array_equal(c4[..., :3], c3)


@pytest.fixture(scope="module")
def jpegs(tmp_path_factory):
    """6 JPEGs of mixed sizes (larger and smaller than imgsz 64), 1-3 boxes each."""
    root = tmp_path_factory.mktemp("jpegs")
    (root / "images").mkdir()
    (root / "labels").mkdir()
    rng = np.random.default_rng(1)
    for i, (h, w) in enumerate([(90, 120), (40, 30), (64, 64), (150, 70), (50, 100), (33, 47)]):
        cv2.imwrite(str(root / f"images/{i}.jpg"), rng.integers(0, 256, (h, w, 3), dtype=np.uint8))
        lines = ["0 0.5 0.5 0.5 0.4", "1 0.3 0.6 0.2 0.3", "1 0.8 0.2 0.3 0.3"][: 1 + i % 3]
        (root / f"labels/{i}.txt").write_text("\n".join(lines) + "\n")
    y = root / "d.yaml"
    y.write_text("train: images\nval: images\nnames: [a, b]\n")
    return y


def batches(ds, n_epochs=2):
    loader = build_dataloader(ds, 3, workers=0, shuffle=True, seed=4)
    out = []
    for e in range(n_epochs):
        loader.set_epoch(e)
        out += [{k: b[k] for k in ("img", "cls", "bboxes", "batch_idx")} for b in loader]
    return out


@pytest.mark.parametrize("pipeline", ["spikeyolo", "official"])
def test_ram_and_disk_cache_give_the_same_batches(jpegs, pipeline):
    plain = batches(build_dataset(jpegs, "train", imgsz=64, seed=2, pipeline=pipeline))
    for kw in ({"cache_ram": True}, {"cache_disk": True}, {"cache_disk": True}):  # disk: written, then read
        cached = batches(build_dataset(jpegs, "train", imgsz=64, seed=2, pipeline=pipeline, **kw))
        for a, b in zip(plain, cached, strict=True):
            for k in a:
                torch.testing.assert_close(a[k], b[k], rtol=0, atol=0)


def test_val_items_equal_letterboxing_the_decoded_file(jpegs):
    ds = build_dataset(jpegs, "val", imgsz=64)
    for i in range(len(ds)):
        img, _, _ = A.letterbox(read_image(ds.samples[i].im_file), 64)  # the original, letterboxed directly
        np.testing.assert_array_equal(ds[i]["img"].numpy(), img[..., ::-1].transpose(2, 0, 1))


def test_disk_cache_never_writes_into_a_folder_that_is_not_ours(jpegs):
    ds = build_dataset(jpegs, "train", imgsz=48, cache_disk=True)
    assert (ds.images.folder / MARKER).is_file() and len(list(ds.images.folder.glob("*.npy"))) == 6
    users = ds.images.folder.with_name(ds.images.folder.name.replace("48", "40"))
    users.mkdir()
    (users / "mine.txt").write_text("keep")
    ds2 = build_dataset(jpegs, "train", imgsz=40, cache_disk=True)
    assert os.listdir(users) == ["mine.txt"] and str(ds2.images.folder).startswith(os.environ["SPIKEYOLO_CACHE_DIR"])


def test_label_arrays_round_trip():
    recs = [Record("/d/ü ñ.jpg", (10, 20), np.array([1, 0]), np.array([[0, 0, 5, 5], [1, 2, 3, 4]], np.float32),
                   np.array([False, True])),
            Record("/d/empty.png", (7, 9), np.zeros(0, np.int64), np.zeros((0, 4), np.float32)),
            Record("/d/b.png", (3, 4), np.array([2]), np.array([[0, 0, 1, 1]], np.float32))]
    back = arrays_to_records(records_to_arrays(recs))
    assert [r.im_file for r in back] == [r.im_file for r in recs] and [r.shape for r in back] == [(10, 20), (7, 9),
                                                                                                    (3, 4)]
    for a, b in zip(recs, back):
        np.testing.assert_array_equal(a.cls, b.cls)
        np.testing.assert_array_equal(a.boxes, b.boxes)
        assert (a.crowd is None and b.crowd is None) or np.array_equal(a.crowd, b.crowd)
    assert arrays_to_records(records_to_arrays([])) == []


def test_list_images_walks_like_rglob(tmp_path):
    from pathlib import Path

    from spikeyolo.data.labels import IMG_EXTS, list_images

    for rel in ("b.JPG", "a.png", "sub/c.jpeg", "sub/deeper/d.webp", "notes.txt", "sub/e.npy", "sub/.f.png"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(b"x")
    want = sorted(str(q) for q in Path(tmp_path).rglob("*") if q.is_file() and q.suffix.lower() in IMG_EXTS)
    assert list_images([str(tmp_path)]) == want and len(want) == 5
