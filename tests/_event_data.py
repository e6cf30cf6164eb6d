"""Random event recordings and tiny Gen1-layout datasets for the event tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import yaml

from spikeyolo.events.io import BBOX_DTYPE, EVENT_DTYPE, write_bbox, write_dat

BOX_FIELDS = ("t", "x", "y", "w", "h", "class_id", "track_id")


def random_events(rng: np.random.Generator, n: int, t_max: int) -> np.ndarray:
    """``n`` uniform random events on the 304x240 sensor in ``[0, t_max)``, sorted by time."""
    e = np.zeros(n, EVENT_DTYPE)
    e["t"], e["x"], e["y"], e["p"] = (np.sort(rng.integers(0, t_max, n)), rng.integers(0, 304, n),
                                      rng.integers(0, 240, n), rng.integers(0, 2, n))
    return e


def write_gen1(root: Path, boxes: list[tuple], rng: np.random.Generator, n: int, t_max: int, **data) -> Path:
    """``root/{train,val}/rec_td.dat`` (random events) + ``rec_bbox.npy`` (``boxes``: rows of ``BOX_FIELDS``) and
    ``root/data.yaml`` (``type: gen1``, two classes, plus ``data``); returns the YAML path."""
    for split in ("train", "val"):
        write_dat(root / split / "rec_td.dat", random_events(rng, n, t_max))
        b = np.zeros(len(boxes), BBOX_DTYPE)
        for k, name in enumerate(BOX_FIELDS):
            b[name] = [r[k] for r in boxes]
        write_bbox(root / split / "rec_bbox.npy", b)
    y = root / "data.yaml"
    y.write_text(yaml.safe_dump({"type": "gen1", "path": str(root), "train": "train", "val": "val",
                                 "names": ["car", "pedestrian"], **data}))
    return y
