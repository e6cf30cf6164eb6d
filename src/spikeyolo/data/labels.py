"""Label readers: YOLO txt, COCO JSON, Pascal VOC XML -> :class:`Record` lists in original pixel coordinates.

Policy for bad input (every problem is a warning naming the file, and the line where there is one):

- unreadable or missing image: the image is skipped;
- YOLO txt: any bad line (wrong column count, not a number, NaN or infinite, class id outside 0..nc-1,
  non-positive size, coordinates outside [0, 1] by more than ``TOL``) skips the whole image, because a label
  file with one broken line is not trusted to list every object (training on it would teach "background" where
  objects are);
- COCO / VOC: a bad annotation (unknown class, non-positive size, NaN or infinite values) is dropped on its own,
  the image is kept; these formats are structured, so one bad entry says nothing about the others;
- COCO: a JSON without a required key (``images[].id`` / ``file_name``, ``annotations[].image_id``,
  ``categories[].id`` / ``name``) raises :class:`LabelFileError` naming the file and entry; categories whose
  names are not the data YAML's ``names`` raise it too (classes are matched by name, never by position);
- a missing label file (YOLO) or annotation file (VOC), or an image without annotations (COCO): background;
  a split with no box at all is a warning (and an error for training, see ``spikeyolo train --allow-no-boxes``).

Boxes a little outside the image (``TOL`` normalized, 1 px for pixel formats) are clipped silently; further
outside is a warning and then clipped (COCO/VOC) or a skip (YOLO).
"""

from __future__ import annotations

import json
import math
import os
import xml.parsers.expat
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import torch

from ..utils.boxes import cxcywh2xyxy
from ..utils.errors import FileFormatError

IMG_EXTS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
TOL = 1e-3  # normalized tolerance before a coordinate counts as outside [0, 1]
PX_TOL = 1.0  # pixel tolerance for COCO / VOC boxes


class LabelFileError(FileFormatError):
    """An annotation file that cannot be used as a whole; the message names the file and the entry."""


@dataclass
class Record:
    """One usable image: ``cls [n]`` int64, ``boxes [n, 4]`` float32 xyxy pixels of the full image, and which of
    them are COCO crowd regions (``iscrowd``): the dataset makes them targets or keeps them apart as regions the
    COCO protocol ignores detections on (see ``DetectionDataset``'s ``crowd_targets``)."""

    im_file: str
    shape: tuple[int, int]  # (h, w)
    cls: np.ndarray
    boxes: np.ndarray
    crowd: np.ndarray | None = None  # [n] bool: COCO iscrowd boxes (None: no crowd box)


@dataclass
class Report:
    """Warnings and counts gathered while reading one split."""

    warnings: list[str] = field(default_factory=list)
    skipped: int = 0
    crowd: int = 0  # COCO iscrowd annotations (kept, flagged in Record.crowd)

    def warn(self, file, msg: str, line: int | None = None) -> None:
        self.warnings.append(f"{file}:{line}: {msg}" if line is not None else f"{file}: {msg}")

    def skip(self, file, msg: str, line: int | None = None) -> None:
        self.warn(file, msg + "; image skipped", line)
        self.skipped += 1


def read_image(path: str | Path) -> np.ndarray | None:
    """BGR uint8 ``[H, W, 3]`` or None when the file is missing or does not decode (unicode paths work)."""
    try:
        buf = np.fromfile(str(path), dtype=np.uint8)
    except OSError:
        return None
    if buf.size == 0:
        return None
    return cv2.imdecode(buf, cv2.IMREAD_COLOR)


def image_shape(path: str | Path) -> tuple[int, int] | None:
    """(h, w) of a decodable image, else None. Decodes the whole file: a header alone misses truncation."""
    im = read_image(path)
    return None if im is None else im.shape[:2]


def image_shapes(paths: list[str | None]) -> list[tuple[int, int] | None]:
    """:func:`image_shape` of many files on a few threads (OpenCV decodes without holding the GIL)."""
    workers = min(8, os.cpu_count() or 1, max(1, len(paths)))
    with ThreadPoolExecutor(workers) as pool:
        return list(pool.map(lambda p: image_shape(p) if p else None, paths))


def list_images(sources: list[str]) -> list[str]:
    """Image files from folders (recursive, sorted) and .txt lists (lines relative to the list's folder)."""
    files: list[str] = []
    for src in sources:
        p = Path(src)
        if p.is_dir():
            files += sorted(_walk_images(str(p)))
        elif p.suffix.lower() == ".txt":
            for line in p.read_text(encoding="utf-8").splitlines():
                line = line.strip()
                if line and not line.startswith("#"):
                    q = Path(line)
                    files.append(str(q if q.is_absolute() else (p.parent / q).resolve()))
        else:
            files.append(str(p))
    return files


def _walk_images(folder: str) -> list[str]:
    """Image files under ``folder`` (not through links to folders): os.walk lists 118k names in about a
    quarter of the time Path.rglob takes."""
    out = []
    for root, _dirs, names in os.walk(folder):
        out += [os.path.join(root, n) for n in names if os.path.splitext(n)[1].lower() in IMG_EXTS]
    return out


def yolo_label_path(im_file: str) -> str:
    """``.../images/.../x.jpg`` -> ``.../labels/.../x.txt`` (last ``images`` folder); else ``x.txt`` beside it."""
    parts = list(Path(im_file).parts)
    for i in range(len(parts) - 2, -1, -1):
        if parts[i] == "images":
            parts[i] = "labels"
            return str(Path(*parts).with_suffix(".txt"))
    return str(Path(im_file).with_suffix(".txt"))


def _empty() -> tuple[np.ndarray, np.ndarray]:
    return np.zeros(0, np.int64), np.zeros((0, 4), np.float32)


def parse_yolo_txt(text: str, nc: int, file: str, report: Report) -> tuple[np.ndarray, np.ndarray] | None:
    """``cls cx cy w h`` lines -> (cls [n], normalized xyxy [n, 4] clipped to [0, 1]); None if any line is bad."""
    cls, boxes, bad = [], [], False
    for ln, line in enumerate(text.splitlines(), 1):
        parts = line.split()
        if not parts:
            continue
        if len(parts) != 5:
            report.warn(file, f"expected 5 columns (cls cx cy w h), got {len(parts)}", ln)
            bad = True
            continue
        try:
            c, cx, cy, w, h = (float(v) for v in parts)
        except ValueError:
            report.warn(file, f"not a number in {line.strip()!r}", ln)
            bad = True
            continue
        if not all(map(math.isfinite, (c, cx, cy, w, h))):
            report.warn(file, f"not a finite number in {line.strip()!r}", ln)
            bad = True
            continue
        if c != int(c) or not 0 <= c < nc:
            report.warn(file, f"class id {parts[0]} outside 0..{nc - 1}", ln)
            bad = True
        elif w <= 0 or h <= 0:
            report.warn(file, f"non-positive box size w={w:g} h={h:g}", ln)
            bad = True
        elif min(cx, cy, w, h) < -TOL or max(cx, cy, w, h) > 1 + TOL:
            report.warn(file, f"coordinates outside [0, 1]: {cx:g} {cy:g} {w:g} {h:g}", ln)
            bad = True
        else:
            cls.append(int(c))
            boxes.append((cx, cy, w, h))
    if bad:
        return None
    if not cls:
        return _empty()
    b = np.clip(cxcywh2xyxy(torch.tensor(boxes, dtype=torch.float32)).numpy(), 0.0, 1.0)
    keep = (b[:, 2] > b[:, 0]) & (b[:, 3] > b[:, 1])
    return np.asarray(cls, np.int64)[keep], b[keep]


def read_yolo(image_files: list[str], nc: int, report: Report) -> list[Record]:
    """YOLO txt labels for ``image_files`` (see :func:`yolo_label_path`)."""
    records = []
    for f, shape in zip(image_files, image_shapes(image_files)):
        if shape is None:
            report.skip(f, "cannot read image")
            continue
        lf = yolo_label_path(f)
        if not os.path.isfile(lf):
            cls, boxes = _empty()
        else:
            try:
                text = Path(lf).read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError) as e:
                report.skip(lf, f"cannot read label file ({e.__class__.__name__})")
                continue
            parsed = parse_yolo_txt(text, nc, lf, report)
            if parsed is None:
                report.skip(lf, "bad label lines (see above)")
                continue
            cls, boxes = parsed
            h, w = shape
            boxes = boxes * np.array([w, h, w, h], np.float32)
        records.append(Record(f, shape, cls, boxes))
    return records


def _clip_px(box, shape, file, report: Report, where: str, line: int | None = None) -> np.ndarray:
    h, w = shape
    x1, y1, x2, y2 = box
    if x1 < -PX_TOL or y1 < -PX_TOL or x2 > w + PX_TOL or y2 > h + PX_TOL:
        report.warn(file, f"{where} box {[round(float(v), 2) for v in box]} outside image {w}x{h}; clipped", line)
    return np.clip(np.asarray(box, np.float32), 0, [w, h, w, h])


def _finish(cls: list, boxes: list, crowd: list | None = None) -> tuple:
    """(cls, boxes) arrays without boxes that clipping left empty; with ``crowd``, also its flags (or None when
    no box is a crowd box)."""
    if not cls:
        return (*_empty(), None) if crowd is not None else _empty()
    b = np.asarray(boxes, np.float32).reshape(-1, 4)
    keep = (b[:, 2] > b[:, 0]) & (b[:, 3] > b[:, 1])
    out = np.asarray(cls, np.int64)[keep], b[keep]
    if crowd is None:
        return out
    flags = np.asarray(crowd, bool)[keep]
    return (*out, flags if flags.any() else None)


def read_coco(image_dirs: list[str], ann_file: str, report: Report, names: list[str] | None = None) -> list[Record]:
    """COCO JSON: ``bbox`` = x, y, w, h pixels; category ids mapped to 0..nc-1 in sorted id order.

    ``iscrowd`` annotations are kept and flagged in ``Record.crowd`` (counted in ``report.crowd``); the dataset
    makes them training targets only with ``crowd_targets``. Images are looked up by ``file_name``
    in each of ``image_dirs`` in turn. A file that is not JSON of that structure raises
    :class:`~spikeyolo.errors.FileFormatError` naming it.
    """
    try:
        return _read_coco(image_dirs, ann_file, report, names)
    except LabelFileError:
        raise
    except (ValueError, KeyError, TypeError, AttributeError, ArithmeticError, RecursionError) as e:
        raise FileFormatError(f"{ann_file}: not a COCO annotation file ({type(e).__name__}: {str(e)[:200]})") from None


def _read_coco(image_dirs: list[str], ann_file: str, report: Report, names: list[str] | None) -> list[Record]:
    data = json.loads(Path(ann_file).read_text(encoding="utf-8"))
    if not isinstance(data, dict):
        raise LabelFileError(f"{ann_file}: expected a JSON object with 'images' and 'annotations'")
    cat_map = coco_category_map(_categories(data, ann_file), names, ann_file)
    by_image: dict[int, list] = {}
    for i, a in enumerate(data.get("annotations", [])):
        _require(a, ("image_id",), ann_file, f"annotations[{i}] (id {a.get('id') if isinstance(a, dict) else '?'})")
        by_image.setdefault(_int(a["image_id"], ann_file, f"annotations[{i}].image_id"), []).append(a)
    images = data.get("images", [])
    for i, im in enumerate(images):
        _require(im, ("id", "file_name"), ann_file, f"images[{i}]")
    files = [
        next((str(Path(d) / im["file_name"]) for d in image_dirs if (Path(d) / im["file_name"]).is_file()), None)
        for im in images
    ]
    records = []
    for im, f, shape in zip(images, files, image_shapes(files)):
        if shape is None:
            report.skip(f or im["file_name"], f"cannot read image (image id {im['id']} in {ann_file})")
            continue
        cls, boxes, crowd = [], [], []
        for a in by_image.get(int(im["id"]), []):
            where = f"annotation id {a.get('id')}"
            bbox = a.get("bbox", [])
            try:
                x, y, w, h = (float(v) for v in bbox)
            except (TypeError, ValueError):
                report.warn(ann_file, f"{where}: bbox needs 4 numbers, got {bbox}; dropped")
                continue
            if not all(math.isfinite(v) for v in (x, y, w, h)):
                report.warn(ann_file, f"{where}: NaN or infinite value in bbox {bbox}; dropped")
                continue
            if w <= 0 or h <= 0:
                report.warn(ann_file, f"{where}: non-positive box size w={w:g} h={h:g}; dropped")
                continue
            if _category(a) not in cat_map:
                report.warn(ann_file, f"{where}: unknown category_id {a.get('category_id')}; dropped")
                continue
            cls.append(cat_map[_category(a)])
            boxes.append(_clip_px((x, y, x + w, y + h), shape, ann_file, report, where))
            crowd.append(bool(a.get("iscrowd", 0)))
            report.crowd += crowd[-1]
        records.append(Record(f, shape, *_finish(cls, boxes, crowd)))
    return records


def _require(entry, keys: tuple, ann_file, where: str) -> None:
    if not isinstance(entry, dict):
        raise LabelFileError(f"{ann_file}: {where} is not a JSON object")
    missing = [k for k in keys if k not in entry]
    if missing:
        raise LabelFileError(f"{ann_file}: {where} has no {' or '.join(repr(k) for k in missing)} key")


def _int(value, ann_file, where: str) -> int:
    try:
        return int(value)
    except (TypeError, ValueError, OverflowError):
        raise LabelFileError(f"{ann_file}: {where} must be an integer id, got {value!r}") from None


def _category(annotation: dict):
    """The annotation's category id as an int, or None when missing or not an integer (then: unknown)."""
    try:
        return int(annotation.get("category_id"))
    except (TypeError, ValueError, OverflowError):
        return None


def _categories(data: dict, ann_file) -> list[dict]:
    """The JSON's categories, each checked to have an ``id`` and a ``name``, sorted by id."""
    cats = data.get("categories", [])
    for i, c in enumerate(cats):
        _require(c, ("id", "name"), ann_file, f"categories[{i}]")
    return sorted(cats, key=lambda c: _int(c["id"], ann_file, "categories[].id"))


def coco_category_map(cats: list[dict], names: list[str] | None, ann_file) -> dict[int, int]:
    """Category id -> class index. With the data YAML's ``names``, categories are matched by name (the YAML's
    order is the class order); the JSON's names must be exactly those names. Without, sorted id order."""
    if names is None:
        return {int(c["id"]): i for i, c in enumerate(cats)}
    cat_names = [str(c["name"]) for c in cats]
    if sorted(cat_names) != sorted(map(str, names)):
        raise LabelFileError(f"{ann_file}: categories {cat_names} are not the data YAML's names {list(names)}; "
                             "give the same names (any order) or leave 'names' out to take them from the JSON")
    index = {n: i for i, n in enumerate(names)}
    return {int(c["id"]): index[str(c["name"])] for c in cats}


def coco_id_maps(image_dirs: list[str], ann_file: str, names: list[str] | None = None
                 ) -> tuple[dict[str, int], list[int]]:
    """The COCO JSON's own ids for what :func:`read_coco` made of it: ``{im_file: image id}`` (an image file as
    ``read_coco`` names it, under any of ``image_dirs``) and ``category_ids[class index]`` (the classes in the
    order of ``names`` when given, as :func:`read_coco` numbers them)."""
    data = json.loads(Path(ann_file).read_text(encoding="utf-8"))
    cat_map = coco_category_map(_categories(data, ann_file), names, ann_file)
    cats = [cid for cid, _ in sorted(cat_map.items(), key=lambda kv: kv[1])]
    images = {str(Path(d) / im["file_name"]): int(im["id"]) for im in data.get("images", []) for d in image_dirs}
    return images, cats


def parse_voc_xml(path: str) -> tuple[tuple[int, int] | None, list[dict]]:
    """Pascal VOC XML -> ((h, w) from ``<size>`` or None, objects as dicts with ``name``, ``box``, ``line``).

    Parsed with expat so each object keeps the line number of its ``<object>`` tag for warnings.
    """
    objects, stack, text, size = [], [], [], {}
    parser = xml.parsers.expat.ParserCreate()

    def start(tag, _attrs):
        stack.append(tag)
        text.clear()
        if tag == "object":
            objects.append({"line": parser.CurrentLineNumber, "name": None, "box": {}})

    def end(tag):
        value = "".join(text).strip()
        text.clear()
        stack.pop()
        parent = stack[-1] if stack else None
        if parent == "object" and tag == "name" and objects:
            objects[-1]["name"] = value
        elif parent == "bndbox" and objects:
            objects[-1]["box"][tag] = value
        elif parent == "size":
            size[tag] = value

    parser.StartElementHandler, parser.EndElementHandler = start, end
    parser.CharacterDataHandler = text.append
    with open(path, "rb") as fh:
        parser.ParseFile(fh)
    shape = (int(float(size["height"])), int(float(size["width"]))) if {"height", "width"} <= size.keys() else None
    return shape, objects


def read_voc(
    image_files: list[str], ann_dir: str, names: list[str], report: Report, class_map: dict | None = None
) -> list[Record]:
    """Pascal VOC: ``<ann_dir>/<image stem>.xml`` per image; coordinates used as given (0-based, continuous).

    ``class_map`` renames classes before lookup in ``names`` (e.g. ``{"Dead": "Tree"}``); an object whose
    name is not in ``names`` is dropped with a warning.
    """
    ids = {n: i for i, n in enumerate(names)}
    class_map = class_map or {}
    records = []
    for f, shape in zip(image_files, image_shapes(image_files)):
        if shape is None:
            report.skip(f, "cannot read image")
            continue
        xf = Path(ann_dir) / (Path(f).stem + ".xml")
        cls, boxes = [], []
        if xf.is_file():
            try:
                xml_shape, objects = parse_voc_xml(str(xf))
            except (xml.parsers.expat.ExpatError, OSError, ValueError, ArithmeticError) as e:
                report.skip(xf, f"cannot parse XML ({e})")
                continue
            if xml_shape is not None and xml_shape != shape:
                report.warn(xf, f"<size> says {xml_shape[1]}x{xml_shape[0]}, image is {shape[1]}x{shape[0]}")
            for o in objects:
                name = class_map.get(o["name"], o["name"])
                if name not in ids:
                    report.warn(xf, f"unknown class name {o['name']!r} (names: {names}); object dropped", o["line"])
                    continue
                try:
                    b = [float(o["box"][k]) for k in ("xmin", "ymin", "xmax", "ymax")]
                except (KeyError, ValueError):
                    report.warn(xf, "bndbox needs numeric xmin ymin xmax ymax; object dropped", o["line"])
                    continue
                if not all(math.isfinite(v) for v in b):
                    report.warn(xf, f"NaN or infinite value in bndbox {b}; object dropped", o["line"])
                    continue
                if b[2] <= b[0] or b[3] <= b[1]:
                    report.warn(xf, f"non-positive box size {b}; object dropped", o["line"])
                    continue
                cls.append(ids[name])
                boxes.append(_clip_px(b, shape, xf, report, "object", o["line"]))
        records.append(Record(f, shape, *_finish(cls, boxes)))
    return records
