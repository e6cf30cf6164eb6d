"""The bundled demo data: three aerial photos (NEON imagery, DeepForest annotations, MIT licence in
``assets/trees/LICENSE.deepforest``) with tree-crown boxes in Pascal VOC XML.

All classes (``Tree``, ``Alive``, ``Dead``) merge into one class ``Tree``. The split is spatial: every photo is
cut by one vertical line, the left part (``1 - val_fraction`` of the width) is for training, the right part
is held out, so no held-out pixel is ever seen in training. The held-out part is cut once more, horizontally:
its top half is the validation region (it picks ``best.pt``), its bottom half the test region (used for
nothing but the final report, so the reported number is not flattered by the choice of epoch). A box crossing
a line is clipped to each side and kept on the side that holds at least ``min_visibility`` of its area (with
the default 0.5 a box is kept on at least one side, on both only when it is split exactly in half). Each part
is then cut into tiles.

The event demo reuses the same split through :func:`tree_split` (regions in full-image pixels).
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import torch
import yaml

from ..data.labels import Record, Report, read_image, read_voc
from ..data.tiling import clip_boxes_to_region, partition_grid, split_regions, tile_grid
from ..utils.boxes import xyxy2cxcywh

ASSET_DIR = Path(__file__).resolve().parent.parent / "assets" / "trees"
NAMES = ["Tree"]
CLASS_MAP = {"Alive": "Tree", "Dead": "Tree"}


def load_tree_records() -> list[Record]:
    """The three photos with their boxes (one class, id 0), original pixels, in file-name order."""
    images = sorted(str(p) for p in ASSET_DIR.glob("*.png"))
    report = Report()
    records = read_voc(images, str(ASSET_DIR), NAMES, report, CLASS_MAP)
    if report.warnings or len(records) != len(images):
        raise RuntimeError(f"bundled tree data is damaged: {report.warnings}")
    return records


def tree_split(val_fraction: float = 0.3, test: bool = False) -> dict[str, dict[str, tuple[int, int, int, int]]]:
    """``{image stem: {"train": region, "val": region}}``, regions ``(x0, y0, x1, y1)`` of the full photo;
    ``test=True``: the held-out region's top half is ``val``, its bottom half ``test``."""
    out = {}
    for r in load_tree_records():
        train, held = split_regions(r.shape[0], r.shape[1], val_fraction, axis="x")
        out[Path(r.im_file).stem] = {"train": train, **(_val_test(held) if test else {"val": held})}
    return out


def _val_test(held: tuple[int, int, int, int]) -> dict[str, tuple[int, int, int, int]]:
    x0, y0, x1, y1 = held
    mid = (y0 + y1) // 2
    return {"val": (x0, y0, x1, mid), "test": (x0, mid, x1, y1)}


def _tiles(record: Record, part, tile_size: int, overlap: float | None, min_visibility: float):
    """Tiles of one part of a photo: ``(name, region in full-image pixels, boxes [n, 4], cls [n])``.

    ``overlap=None``: disjoint pieces (:func:`partition_grid`), else overlapping tiles (:func:`tile_grid`).
    """
    px0, py0, px1, py1 = part
    h, w = py1 - py0, px1 - px0
    grid = partition_grid(h, w, tile_size) if overlap is None else tile_grid(h, w, tile_size, overlap)
    for x0, y0, x1, y1 in grid:
        region = (px0 + x0, py0 + y0, px0 + x1, py0 + y1)
        # Visibility is measured against the original box, so a box mostly on the other side of the split
        # line never enters this part's tiles.
        boxes, cls = clip_boxes_to_region(record.boxes, record.cls, region, min_visibility)
        yield f"{Path(record.im_file).stem}_{region[0]}_{region[1]}", region, boxes, cls


def _label_text(boxes: np.ndarray, cls: np.ndarray, h: int, w: int) -> str:
    """YOLO txt lines ``cls cx cy w h`` (normalized) for xyxy pixel boxes."""
    xywh = (xyxy2cxcywh(torch.as_tensor(boxes)) / torch.tensor([w, h, w, h], dtype=torch.float32)).tolist()
    return "".join(f"{c} {cx:.6f} {cy:.6f} {bw:.6f} {bh:.6f}\n" for c, (cx, cy, bw, bh) in zip(cls.tolist(), xywh))


def prepare_tree_dataset(
    out_dir: str | Path,
    tile_size: int = 320,
    overlap: float = 0.2,
    val_fraction: float = 0.3,
    min_visibility: float = 0.5,
    test: bool = True,
) -> Path:
    """Write the demo as a YOLO dataset and return the path of its ``data.yaml``.

    Layout: ``images/{train,val,test}/<stem>_<x0>_<y0>.png``, ``labels/{train,val,test}/*.txt``, ``data.yaml``
    (with the split regions under ``split``); ``test=False``: the whole held-out part is ``val`` (no test).
    Training tiles (``tile_size`` squares) overlap by ``overlap``; the validation and test parts are split into
    disjoint near-equal pieces of at most ``tile_size``, so each tree is scored once.
    Existing identical files are reused; any other file in the way (different content, or extra images or
    labels from other settings) raises FileExistsError, so nothing a user had is overwritten or mixed in.
    """
    out = Path(out_dir)
    files: dict[Path, np.ndarray | str] = {}
    regions = {}
    split = tree_split(val_fraction, test)
    for r in load_tree_records():
        full = read_image(r.im_file)
        parts = split[Path(r.im_file).stem]
        regions[Path(r.im_file).stem] = {k: list(v) for k, v in parts.items()}
        for split_name, part in parts.items():
            ov = overlap if split_name == "train" else None
            for name, (x0, y0, x1, y1), boxes, cls in _tiles(r, part, tile_size, ov, min_visibility):
                files[out / "images" / split_name / f"{name}.png"] = full[y0:y1, x0:x1]
                files[out / "labels" / split_name / f"{name}.txt"] = _label_text(boxes, cls, y1 - y0, x1 - x0)
    meta = {
        "path": ".",
        "train": "images/train",
        "val": "images/val",
        **({"test": "images/test"} if test else {}),
        "names": {0: NAMES[0]},
        "nc": 1,
        "source": "spikeyolo bundled DeepForest/NEON tree photos (MIT, see LICENSE.deepforest)",
        "settings": {
            "tile_size": tile_size,
            "overlap": overlap,
            "val_fraction": val_fraction,
            "min_visibility": min_visibility,
            "test": test,
        },
        "split": regions,
    }
    files[out / "data.yaml"] = yaml.safe_dump(meta, sort_keys=False)
    files[out / "LICENSE.deepforest"] = (ASSET_DIR / "LICENSE.deepforest").read_text(encoding="utf-8")
    _check_free(out, files)
    for path, content in files.items():
        if path.exists():
            continue  # identical, checked above
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, str):
            path.write_text(content, encoding="utf-8")
        elif not cv2.imwrite(str(path), content):
            raise OSError(f"cannot write {path}")
    return out / "data.yaml"


def _same(path: Path, content) -> bool:
    if isinstance(content, str):
        return path.read_text(encoding="utf-8") == content
    im = read_image(path)
    return im is not None and im.shape == content.shape and np.array_equal(im, content)


def _check_free(out: Path, files: dict) -> None:
    """Raise FileExistsError when ``out`` holds anything other than exactly these files' content."""
    conflicts = [str(p) for p, c in files.items() if p.exists() and not (p.is_file() and _same(p, c))]
    for sub in (f"{kind}/{split}" for kind in ("images", "labels") for split in ("train", "val", "test")):
        d = out / sub
        if d.is_dir():
            ext = ".txt" if sub.startswith("labels") else ".png"
            conflicts += [str(p) for p in d.iterdir() if p.suffix != ".cache" and (p.suffix != ext or p not in files)]
    if conflicts:
        raise FileExistsError(
            f"{out} already holds other files ({len(conflicts)}, e.g. {conflicts[:3]}); "
            "nothing was written: choose an empty or new folder"
        )


def tree_event_splits(val_fraction: float = 0.3) -> dict:
    """The bundled tree photos cut spatially: the left ``1 - val_fraction`` of every photo for ``train``, the
    right part split in a top half (``val``) and bottom half (``test``), so validation and test pixels are
    never seen in training. Returns ``{split: [(name, image crop, boxes_xyxy, cls)]}`` (boxes clipped to the
    crop, kept when at least half visible). All tree classes are already merged into ``Tree``."""
    regions = tree_split(val_fraction, test=True)
    out = {"train": [], "val": [], "test": []}
    for rec in load_tree_records():
        stem = Path(rec.im_file).stem
        img = read_image(rec.im_file)
        for split, (x0, y0, x1, y1) in regions[stem].items():
            b = rec.boxes.astype(np.float64)
            c = np.stack((b[:, 0].clip(x0, x1), b[:, 1].clip(y0, y1), b[:, 2].clip(x0, x1), b[:, 3].clip(y0, y1)), 1)
            area = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
            vis = (c[:, 2] - c[:, 0]) * (c[:, 3] - c[:, 1])
            keep = (vis > 0) & (vis >= 0.5 * area)
            boxes = c[keep] - np.array([x0, y0, x0, y0])
            out[split].append((f"{stem}_{split}", img[y0:y1, x0:x1], boxes, rec.cls[keep]))
    return out
