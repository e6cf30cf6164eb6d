"""Label cache: reuse, invalidation by a changed file, never overwriting a user's file."""

from __future__ import annotations

import json
import os

import cv2
import numpy as np

from spikeyolo.data import build_dataset
from spikeyolo.data.cache import MAGIC, cached, files_hash


def make_set(root):
    (root / "images/train").mkdir(parents=True)
    (root / "labels/train").mkdir(parents=True)
    for name in ("a", "b"):
        cv2.imwrite(str(root / f"images/train/{name}.png"), np.zeros((20, 20, 3), np.uint8))
        (root / f"labels/train/{name}.txt").write_text("0 0.5 0.5 0.5 0.5\n")
    y = root / "d.yaml"
    y.write_text("train: images/train\nnames: [a, b]\n")
    return y


def test_second_run_loads_cache_and_changed_file_invalidates(tmp_path):
    y = make_set(tmp_path)
    ds1 = build_dataset(y, "train")
    assert not ds1.stats["cache_hit"] and ds1.stats["cache"] == str(tmp_path / "labels" / "train.cache")
    with np.load(tmp_path / "labels/train.cache", allow_pickle=False) as z:  # plain arrays, no pickle
        meta = json.loads(bytes(z["meta"]).decode())
        assert meta["magic"] == MAGIC and z["counts"].tolist() == [1, 1] and z["boxes"].shape == (2, 4)
    ds2 = build_dataset(y, "train")
    assert ds2.stats["cache_hit"] and ds2.stats["boxes"] == 2

    lf = tmp_path / "labels/train/b.txt"
    lf.write_text("0 0.5 0.5 0.5 0.5\n1 0.25 0.25 0.1 0.1\n")
    os.utime(lf, ns=(1, 1))  # a different mtime even on coarse file systems
    ds3 = build_dataset(y, "train")
    assert not ds3.stats["cache_hit"] and ds3.stats["boxes"] == 3

    (tmp_path / "labels/train/a.txt").unlink()  # a removed label file also counts as a change
    ds4 = build_dataset(y, "train")
    assert not ds4.stats["cache_hit"] and ds4.stats["boxes"] == 2 and ds4.stats["background"] == 1


def test_user_file_at_cache_path_is_never_overwritten(tmp_path):
    y = make_set(tmp_path)
    user = tmp_path / "labels" / "train.cache"
    user.write_text("my own notes")
    ds = build_dataset(y, "train")
    assert user.read_text() == "my own notes"
    assert ds.stats["cache"] != str(user) and ds.stats["cache"].startswith(os.environ["SPIKEYOLO_CACHE_DIR"])
    assert build_dataset(y, "train").stats["cache_hit"]  # found again in the fallback folder


def test_cached_builds_once_per_key(tmp_path):
    calls = []
    build = lambda: calls.append(1) or {"x": 1}
    f = tmp_path / "f.txt"
    f.write_text("1")
    key = files_hash([str(f)])
    assert cached(tmp_path / "c.cache", key, build)[2] is False
    assert cached(tmp_path / "c.cache", key, build)[2] is True
    assert cached(tmp_path / "c.cache", files_hash([str(f)], extra="other"), build)[2] is False
    assert len(calls) == 2
