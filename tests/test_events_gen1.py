"""Gen1 sampling on a tiny hand-written recording: window bins, last box per track, clipping, letterbox, cache."""

import os

import numpy as np
import pytest
import yaml

from spikeyolo.data.gen1 import Gen1Dataset, labels_at
from spikeyolo.events.io import BBOX_DTYPE, EVENT_DTYPE, write_bbox, write_dat

EV = [  # t, x, y, p
    (49_999, 0, 0, 1),
    (50_000, 1, 2, 1),
    (174_999, 1, 2, 0),
    (175_000, 3, 4, 1),
    (299_999, 303, 239, 0),
    (300_000, 5, 5, 1),
    (399_999, 7, 8, 0),
]
BOXES = [  # t, x, y, w, h, class, track
    (300_000, 10, 20, 30, 40, 0, 1),
    (300_000, -10, 230, 30, 20, 1, 2),
    (300_000, 50, 50, 0, 10, 0, 3),
    (300_000, 12, 22, 30, 40, 0, 1),  # same track again: this row wins
    (400_000, 300, 0, 10, 10, 1, 1),
]


@pytest.fixture
def gen1_cfg(tmp_path):
    root = tmp_path / "gen1"
    for split in ("train", "val"):
        e = np.zeros(len(EV), EVENT_DTYPE)
        for k, name in enumerate("txyp"):
            e[name] = [r[k] for r in EV]
        write_dat(root / split / "rec_td.dat", e)
        b = np.zeros(len(BOXES), BBOX_DTYPE)
        for k, name in enumerate(("t", "x", "y", "w", "h", "class_id", "track_id")):
            b[name] = [r[k] for r in BOXES]
        write_bbox(root / split / "rec_bbox.npy", b, time_field="ts")
    data = {"type": "gen1", "path": str(root), "train": "train", "val": "val", "names": ["car", "pedestrian"],
            "window_us": 250_000, "T": 2, "representation": "counts"}
    (root / "data.yaml").write_text(yaml.safe_dump(data))
    return {**data, "train": [str(root / "train")], "val": [str(root / "val")]}, root


def test_labels_at_by_hand():
    b = np.zeros(len(BOXES) - 1, BBOX_DTYPE)
    for k, name in enumerate(("t", "x", "y", "w", "h", "class_id", "track_id")):
        b[name] = [r[k] for r in BOXES[:-1]]
    cls, xyxy, tid = labels_at(b, 240, 304)
    # track 2 comes before track 1's winning row in the file; real clipping, not a shift
    assert tid.tolist() == [2, 1]
    assert cls.tolist() == [1, 0]
    np.testing.assert_allclose(xyxy, [[0, 230, 20, 240], [12, 22, 42, 62]])


def test_samples_bins_and_labels(gen1_cfg):
    cfg, root = gen1_cfg
    ds = Gen1Dataset(cfg, "train", imgsz=304, cache_dir=False)
    assert len(ds) == 2 and ds.in_channels == 2
    assert [ds.im_file(i) for i in range(2)] == ["rec_300000", "rec_400000"]
    # sample 0: window [50000, 300000), bins [50000, 175000) and [175000, 300000)
    f = ds.frames(0)
    assert f.shape == (2, 2, 240, 304) and f.sum() == 4
    assert f[0, 1, 2, 1] == 1 and f[0, 0, 2, 1] == 1 and f[1, 1, 4, 3] == 1 and f[1, 0, 239, 303] == 1
    # sample 1: window [150000, 400000): bins [150000, 275000), [275000, 400000)
    f = ds.frames(1)
    assert f.sum() == 5 and f[0, 0, 2, 1] == 1 and f[0, 1, 4, 3] == 1
    assert f[1, 0, 239, 303] == 1 and f[1, 1, 5, 5] == 1 and f[1, 0, 8, 7] == 1
    # imgsz 304: no resize, 32 rows of padding on top
    it = ds[0]
    assert it["img"].shape == (2, 2, 304, 304) and it["ratio_pad"] == ((1.0, 1.0), (0.0, 32.0))
    np.testing.assert_array_equal(it["img"][:, :, 32:272].numpy(), ds.frames(0))
    assert float(it["img"][:, :, :32].abs().sum()) == 0
    gt = ds.ground_truth(1)
    assert gt["shape"] == (240, 304) and gt["cls"].tolist() == [1]
    np.testing.assert_allclose(gt["boxes_xyxy"], [[300, 0, 304, 10]])
    assert it["t"] == 300_000 and it["recording"] == "rec" and it["ori_shape"] == (240, 304)


def test_item_boxes_at_320(gen1_cfg):
    cfg, _ = gen1_cfg
    ds = Gen1Dataset(cfg, "train", imgsz=320, cache_dir=False)
    it = ds[0]
    gy, gx = 253 / 240, 320 / 304  # 240 x 304 -> 253 x 320, 33 rows of padding on top
    assert it["ratio_pad"][1] == (0.0, 33.0)
    np.testing.assert_allclose(it["ratio_pad"][0], (gy, gx))
    want = []
    for x1, y1, x2, y2 in [(0, 230, 20, 240), (12, 22, 42, 62)]:
        a, b, c, d = x1 * gx, y1 * gy + 33, x2 * gx, y2 * gy + 33
        want.append([(a + c) / 2 / 320, (b + d) / 2 / 320, (c - a) / 320, (d - b) / 320])
    np.testing.assert_allclose(it["bboxes"].numpy(), want, rtol=1e-5)
    assert it["cls"].flatten().tolist() == [1.0, 0.0] and it["batch_idx"].tolist() == [0.0, 0.0]
    assert it["img"].dtype.is_floating_point and it["img"].shape == (2, 2, 320, 320)


def test_spikeyolo_pad_value_and_flip(gen1_cfg):
    cfg, _ = gen1_cfg
    ds = Gen1Dataset(cfg, "train", imgsz=304, representation="spikeyolo", cache_dir=False, augment=True)
    assert ds.in_channels == 3
    plain = Gen1Dataset(cfg, "train", imgsz=304, representation="spikeyolo", cache_dir=False)
    ref = plain[0]
    flipped = 0
    for epoch in range(8):
        ds.set_epoch(epoch)
        it = ds[0]
        assert float(it["img"][0, 0, 0, 0]) == pytest.approx(127 / 255)  # padding = background
        if not np.array_equal(it["img"].numpy(), ref["img"].numpy()):
            flipped += 1
            np.testing.assert_array_equal(it["img"].numpy(), ref["img"].numpy()[..., ::-1])
            b, r = it["bboxes"].numpy(), ref["bboxes"].numpy()
            np.testing.assert_allclose(b[:, 0], 1 - r[:, 0], atol=1e-6)
            np.testing.assert_allclose(b[:, 1:], r[:, 1:], atol=1e-6)
    assert 0 < flipped < 8


def test_zoom_and_shift_move_frames_and_boxes_together(gen1_cfg, monkeypatch):
    """Frames whose events fill exactly the labelled box: after a random zoom and shift, the events must
    still fill exactly the returned box (to a pixel of resampling), wherever it landed."""
    cfg, _ = gen1_cfg
    ds = Gen1Dataset(cfg, "train", imgsz=160, cache_dir=False, augment=True,
                     hyp={"fliplr": 0.5, "scale": 0.5, "translate": 0.2})
    x1, y1, x2, y2 = ds.samples[0][3][1]  # the (12, 22)-(42, 62) box, sensor pixels
    frames = np.zeros((2, 2, 240, 304), np.float32)
    frames[:, :, int(y1):int(y2), int(x1):int(x2)] = 1.0
    monkeypatch.setattr(ds, "frames", lambda i: frames)
    ds.samples[0] = (*ds.samples[0][:2], ds.samples[0][2][1:], ds.samples[0][3][1:], ds.samples[0][4][1:])
    zooms = set()
    for epoch in range(12):
        ds.set_epoch(epoch)
        it = ds[0]
        img = it["img"].numpy()[0, 0]
        zooms.add(round(it["ratio_pad"][0][1], 3))
        ys, xs = np.nonzero(img > 0.5)
        if len(it["bboxes"]) == 0:  # shifted mostly out of the picture: few or no event pixels remain
            assert len(xs) < 0.1 * (x2 - x1) * (y2 - y1) * it["ratio_pad"][0][1] ** 2 + 1
            continue
        cx, cy, w, h = it["bboxes"].numpy()[0] * 160
        assert abs(xs.min() - (cx - w / 2)) <= 1.5 and abs(xs.max() + 1 - (cx + w / 2)) <= 1.5
        assert abs(ys.min() - (cy - h / 2)) <= 1.5 and abs(ys.max() + 1 - (cy + h / 2)) <= 1.5
    assert len(zooms) > 6  # the zoom really varies


def test_cache_built_once_and_keyed(gen1_cfg, tmp_path, monkeypatch):
    cfg, root = gen1_cfg
    cache = tmp_path / "cache"
    a = Gen1Dataset(cfg, "train", imgsz=304, cache_dir=cache, progress=False)
    assert (a.cache_path / "complete.json").is_file() and len(list(a.cache_path.glob("*.npz"))) == 2
    ref = a.frames(0)

    def boom(self, i):
        raise AssertionError("recomputed although cached")

    monkeypatch.setattr(Gen1Dataset, "_compute_frames", boom)
    b = Gen1Dataset(cfg, "train", imgsz=304, cache_dir=cache, progress=False)
    assert b.cache_path == a.cache_path
    np.testing.assert_array_equal(b.frames(0), ref)
    monkeypatch.undo()
    c = Gen1Dataset(cfg, "train", imgsz=304, T=4, cache_dir=cache, progress=False)
    assert c.cache_path != a.cache_path and c.frames(0).shape[0] == 4
    st = os.stat(root / "train" / "rec_td.dat")
    os.utime(root / "train" / "rec_td.dat", ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    d = Gen1Dataset(cfg, "train", imgsz=304, cache_dir=cache, progress=False)
    assert d.cache_path != a.cache_path


def test_build_dataset_dispatch_and_protocol_labels(gen1_cfg):
    from spikeyolo.data import build_dataset, collate

    _, root = gen1_cfg
    ds = build_dataset(str(root / "data.yaml"), "val", imgsz=320, cache_dir=False)
    assert isinstance(ds, Gen1Dataset) and ds.T == 2 and ds.representation == "counts"
    batch = collate([ds[0], ds[1]])
    assert batch["img"].shape == (2, 2, 2, 320, 320) and batch["batch_idx"].tolist() == [0, 0, 1]
    # issue 11.13: the protocol scores the raw rows, as the Prophesee toolbox (duplicate track rows, a box
    # crossing the border and a zero-width one included); RVT's variant clips to the sensor
    lab = ds.prophesee_ground_truth()["rec"]
    assert lab.dtype == BBOX_DTYPE and lab["t"].tolist() == [300_000] * 4 + [400_000]
    assert lab["x"].tolist() == [10, -10, 50, 12, 300] and lab["w"].tolist() == [30, 30, 0, 30, 10]
    clipped = ds.prophesee_ground_truth(clip_to_sensor=True)["rec"]
    assert clipped["track_id"].tolist() == [1, 2, 1, 1]
    np.testing.assert_array_equal(np.stack([clipped[k] for k in "xywh"], 1),
                                  [[10, 20, 30, 40], [0, 230, 20, 10], [12, 22, 30, 40], [300, 0, 4, 10]])


def test_pickles_without_memory_maps(gen1_cfg):
    import pickle

    cfg, _ = gen1_cfg
    ds = Gen1Dataset(cfg, "train", imgsz=304, cache_dir=False)
    ref = ds[0]["img"]
    blob = pickle.dumps(ds)
    assert len(blob) < 100_000
    np.testing.assert_array_equal(pickle.loads(blob)[0]["img"].numpy(), ref.numpy())


def test_letterbox_many_channels_shrinking():
    from spikeyolo.data.gen1 import letterbox_frames

    f = np.zeros((2, 20, 240, 304), np.float32)
    f += np.arange(40, dtype=np.float32).reshape(2, 20, 1, 1)  # each plane constant
    out, gain, pad = letterbox_frames(f, 128, pad_value=-1)
    # 240 x 304 -> 101 x 128 (round(240 * 128 / 304)), 13 rows of padding on top, 14 below
    assert out.shape == (2, 20, 128, 128) and pad == (0.0, 13.0)
    np.testing.assert_allclose(gain, (101 / 240, 128 / 304))
    assert np.all(out[:, :, :13] == -1) and np.all(out[:, :, 114:] == -1)
    np.testing.assert_allclose(out[:, :, 13:114], np.broadcast_to(f[:, :, :1, :1], (2, 20, 101, 128)), atol=1e-5)
