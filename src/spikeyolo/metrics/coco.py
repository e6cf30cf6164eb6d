"""COCO box mAP from plain per-image lists, with faster-coco-eval (when installed) or pycocotools.

Ground truth per image: ``{"image_id": str, "shape": (h, w), "boxes_xyxy": [n, 4] pixels, "cls": [n]}``, and
optionally ``"iscrowd": [n]`` (true for a COCO crowd region: COCOeval ignores detections on it and does not count
it as an object to find).
Predictions per image: ``(image_id, boxes_xyxy [k, 4] pixels, scores [k], cls [k])``.
Arrays may be numpy arrays, torch tensors or lists.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
from pathlib import Path

import numpy as np


def _np(x, shape_tail=()) -> np.ndarray:
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    a = np.asarray(x, dtype=np.float64)
    if shape_tail:
        a = a.reshape(-1, *shape_tail)
    else:
        a = a.reshape(-1)
    return a


def _xyxy_to_ltwh(b: np.ndarray) -> np.ndarray:
    return np.stack((b[:, 0], b[:, 1], b[:, 2] - b[:, 0], b[:, 3] - b[:, 1]), 1)


def _backend():
    """``(COCO, COCOeval, name)`` of the available evaluator."""
    try:
        from faster_coco_eval import COCO  # optional backend (pip install spikeyolo[fast])
        from faster_coco_eval import COCOeval_faster as COCOeval  # optional backend

        return COCO, COCOeval, "faster-coco-eval"
    except ImportError:
        from pycocotools.coco import COCO  # the fallback backend, loaded only when evaluating
        from pycocotools.cocoeval import COCOeval  # the fallback backend

        return COCO, COCOeval, "pycocotools"


def coco_results(preds, class_ids=None, image_ids=None, decimals: tuple[int, int] | None = None) -> list[dict]:
    """Predictions -> COCO results list (``image_id``, ``category_id``, ``bbox`` ltwh pixels, ``score``).

    ``class_ids``: optional sequence mapping a class index to a COCO category id (default: the index itself).
    ``image_ids``: optional dict mapping the given image id to the id written (default: unchanged).
    ``decimals``: ``(box, score)`` decimals to round to (for compact JSON files); None (evaluation) keeps every
    digit, since rounding can turn a non-match into a match (IoU 0.499996 -> 0.5).
    """
    out = []
    for image_id, boxes, scores, cls in preds:
        boxes = _np(boxes, (4,))
        scores, cls = _np(scores), _np(cls)
        ltwh = _xyxy_to_ltwh(boxes)
        img = image_ids[image_id] if image_ids is not None else image_id
        for b, s, c in zip(ltwh, scores, cls):
            cat = class_ids[int(c)] if class_ids is not None else int(c)
            box, score = [float(v) for v in b], float(s)
            if decimals is not None:
                box, score = [round(v, decimals[0]) for v in box], round(score, decimals[1])
            out.append({"image_id": img, "category_id": int(cat), "bbox": box, "score": score})
    return out


def json_image_ids(image_files, numeric_ids: bool = False) -> dict:
    """``{image file: image_id}`` for a results file: the file stem when the stems are unique (an int for an
    all-digit stem with ``numeric_ids``: ``000000000139.jpg`` -> 139, as the COCO files number images), else the
    path relative to the images' common folder without its extension (``cam1/0001``, ``cam2/0001``)."""
    files = list(dict.fromkeys(str(f) for f in image_files))
    stems = [Path(f).stem for f in files]
    if len(set(stems)) == len(stems):
        return {f: int(s) if numeric_ids and s.isdigit() else s for f, s in zip(files, stems)}
    root = os.path.commonpath([os.path.abspath(f) for f in files])
    return {f: Path(os.path.relpath(os.path.abspath(f), root)).with_suffix("").as_posix() for f in files}


def write_coco_json(preds, path: str | os.PathLike, class_ids=None, numeric_ids: bool = False,
                    image_ids: dict | None = None) -> Path:
    """Write predictions in the COCO results format (``image_id``, ``category_id``, ``bbox`` ltwh pixels,
    ``score``; boxes rounded to 3 decimals, scores to 5). ``image_ids`` maps each prediction's image id (its
    image file) to the id written, e.g. a COCO JSON's own ids; by default :func:`json_image_ids` (file stems, or
    relative paths when stems repeat). ``class_ids`` maps class index -> category id (default: the index).
    Returns the path."""
    if image_ids is None:
        image_ids = json_image_ids([p[0] for p in preds], numeric_ids)
    data = coco_results(preds, class_ids=class_ids, image_ids=image_ids, decimals=(3, 5))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data))
    return path


def coco_ground_truth(gts, names, image_ids=None, class_ids=None) -> dict:
    """Ground-truth list -> COCO dataset dict (``images``, ``annotations``, ``categories``).

    Annotation ids start at 1 (COCOeval treats id 0 as "unmatched"); ``area = w * h``; ``iscrowd`` from the
    image's optional ``iscrowd`` flags (default 0).
    ``names``: list of class names or dict ``{index: name}``. ``image_ids`` maps given ids to written ids.
    """
    names = dict(enumerate(names)) if not isinstance(names, dict) else names
    images, anns = [], []
    for g in gts:
        img = image_ids[g["image_id"]] if image_ids is not None else g["image_id"]
        h, w = g["shape"]
        images.append({"id": img, "height": int(h), "width": int(w), "file_name": str(g["image_id"])})
        boxes, cls = _np(g["boxes_xyxy"], (4,)), _np(g["cls"])
        crowd = _np(g["iscrowd"]) if "iscrowd" in g else np.zeros(len(cls))
        for b, c, k in zip(_xyxy_to_ltwh(boxes), cls, crowd):
            cat = class_ids[int(c)] if class_ids is not None else int(c)
            anns.append({
                "id": len(anns) + 1, "image_id": img, "category_id": int(cat), "iscrowd": int(bool(k)),
                "bbox": [float(v) for v in b], "area": float(b[2] * b[3]),
            })
    cats = [
        {"id": int(class_ids[i] if class_ids is not None else i), "name": str(n)} for i, n in names.items()
    ]
    return {"images": images, "annotations": anns, "categories": cats}


def coco_evaluate(gts, preds, names, max_dets: int = 100, verbose: bool = False) -> dict:
    """COCO bbox evaluation of plain lists (see the module docstring for the formats).

    Every evaluated image must be in ``gts`` (with empty boxes when it has no objects); predictions for
    image ids not in ``gts`` are ignored. COCO keeps the ``max_dets`` highest-scored boxes per image.

    Image ids are mapped to integers internally (both backends accept them), class index ``i`` is category
    ``i``. Returns a dict:

    - ``map`` (AP@[.50:.95]), ``map50``, ``map75``, ``map_small``, ``map_medium``, ``map_large``: floats;
    - ``ap_per_class``, ``ap50_per_class``: lists of length ``len(names)``, ``nan`` for classes without GT;
    - ``stats``: the 12 standard COCO numbers; ``backend``: which evaluator ran.

    Values COCO reports as -1 (nothing to evaluate) become ``nan``; with no predictions at all, every AP of a
    class that has GT is 0.
    """
    names_d = dict(enumerate(names)) if not isinstance(names, dict) else dict(names)
    ids = {g["image_id"]: k + 1 for k, g in enumerate(gts)}
    gt_dict = coco_ground_truth(gts, names_d, image_ids=ids)
    dets = coco_results([p for p in preds if p[0] in ids], image_ids=ids)
    return evaluate_coco_dicts(gt_dict, dets, max(names_d) + 1 if names_d else 0, max_dets, verbose)


def evaluate_coco_dicts(gt_dict: dict, dets: list[dict], nc: int, max_dets: int = 100, verbose: bool = False,
                        float32_det_area: bool = False) -> dict:
    """COCO bbox evaluation of a COCO dataset dict and a results list whose category ids are the class indices
    ``0..nc-1``; returns what :func:`coco_evaluate` does. ``float32_det_area``: detection areas (which decide
    AP_S/M/L) computed as ``w * h`` in float32, as the Prophesee toolbox's float32 box arrays give them."""
    COCO, COCOeval, backend = _backend()
    nan = float("nan")
    has_gt = np.zeros(nc, dtype=bool)  # classes with an object to find (a crowd region is none)
    for a in gt_dict["annotations"]:
        if 0 <= a["category_id"] < nc and not a.get("iscrowd", 0):
            has_gt[a["category_id"]] = True
    objects = any(not a.get("iscrowd", 0) for a in gt_dict["annotations"])
    if not dets or not objects:
        zero = 0.0 if objects else nan
        per = [0.0 if h else nan for h in has_gt]
        return {"map": zero, "map50": zero, "map75": zero, "map_small": nan, "map_medium": nan,
                "map_large": nan, "ap_per_class": per, "ap50_per_class": list(per), "stats": [zero] * 12,
                "backend": backend}

    sink = io.StringIO()
    with contextlib.redirect_stdout(sink):
        coco_gt = COCO()
        coco_gt.dataset = gt_dict
        coco_gt.createIndex()
        coco_dt = coco_gt.loadRes(dets)
        if float32_det_area:
            for a in coco_dt.dataset["annotations"]:
                a["area"] = float(np.float32(a["bbox"][2]) * np.float32(a["bbox"][3]))
        ev = COCOeval(coco_gt, coco_dt, "bbox")
        ev.params.maxDets = [1, 10, max_dets]
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    if verbose:
        print(sink.getvalue())
    stats = [float(s) if s >= 0 else nan for s in ev.stats[:12]]

    precision = np.asarray(ev.eval["precision"])  # [T, R, K, area, maxDets]
    cat_ids = list(ev.params.catIds)
    ap, ap50 = [nan] * nc, [nan] * nc
    for k, cid in enumerate(cat_ids):
        if not (0 <= cid < nc):
            continue
        p = precision[:, :, k, 0, -1]
        if (p > -1).any():
            ap[cid] = float(p[p > -1].mean())
        p50 = p[0]
        if (p50 > -1).any():
            ap50[cid] = float(p50[p50 > -1].mean())
    return {
        "map": stats[0], "map50": stats[1], "map75": stats[2],
        "map_small": stats[3], "map_medium": stats[4], "map_large": stats[5],
        "ap_per_class": ap, "ap50_per_class": ap50, "stats": stats, "backend": backend,
    }
