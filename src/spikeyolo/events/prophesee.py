"""Event-camera detection protocols. Every result dict names its ``protocol``.

``prophesee`` (the Prophesee toolbox's ``evaluate_detection`` / RVT protocol, re-implemented from its
description; the community's standard for Gen1 and 1Mpx):

1. Filter ground truth and detections alike: drop boxes with ``t <= skip_us`` (the first 0.5 s of a
   recording have too little event history), with ``w**2 + h**2 < min_box_diag**2`` or with ``w`` or ``h``
   ``< min_box_side`` (Gen1: 30 / 10 px; 1Mpx: 60 / 20), computed in the boxes' own float32 as the toolbox.
2. Evaluate only at the (filtered) ground-truth timestamps of each recording: each becomes one COCO image of
   ``height x width``; the detections with ``|t_det - t_gt| <= time_tol_us`` (50 ms) are pooled into it.
3. COCO AP (pycocotools or faster-coco-eval, max 100 detections per image): AP (=mAP@[.5:.95]), AP50,
   AP75, AP_S, AP_M, AP_L. Boxes go to COCO as the rows' own ``x, y, w, h`` and scores as their float32
   values, unrounded; areas are ``w * h`` in float32. The ground truth is every row given (the raw
   ``_bbox.npy`` rows, duplicates and boxes crossing the border included), as the toolbox scores them.
   With no detections at all every AP is 0 (the toolbox crashes there).

``per-sample`` (the official SpikeYOLO Gen1 evaluation, with COCO instead of ultralytics' AP code): every
sample is one image, no filters, no time tolerance.
"""

from __future__ import annotations

import numpy as np

from ..metrics.coco import coco_evaluate, evaluate_coco_dicts
from .io import to_bbox_array

GEN1_NAMES = ("car", "pedestrian")


def filter_boxes(boxes: np.ndarray, skip_us: int = 500_000, min_box_diag: float = 30,
                 min_box_side: float = 10) -> np.ndarray:
    """Keep boxes (structured, fields ``t, w, h``) with ``t > skip_us``, ``w^2 + h^2 >= min_box_diag^2`` and
    ``w, h >= min_box_side``, computed in the dtype of ``w`` and ``h`` (float32 for box files)."""
    boxes = np.asarray(boxes)
    if boxes.size == 0:
        return boxes
    w, h = boxes["w"], boxes["h"]
    keep = (boxes["t"].astype(np.int64) > skip_us) & (w * w + h * h >= float(min_box_diag) ** 2)
    keep &= (w >= float(min_box_side)) & (h >= float(min_box_side))
    return boxes[keep]


def _result(protocol: str, r: dict, **extra) -> dict:
    out = {
        "protocol": protocol,
        "AP": r["map"], "AP50": r["map50"], "AP75": r["map75"],
        "AP_S": r["map_small"], "AP_M": r["map_medium"], "AP_L": r["map_large"],
        "ap_per_class": r["ap_per_class"], "ap50_per_class": r["ap50_per_class"], "backend": r["backend"],
    }
    out.update(extra)
    return out


def _boxes(b) -> np.ndarray:
    """Any Prophesee-style box array (``t``/``ts``, ``confidence``/``class_confidence``) -> BBOX_DTYPE."""
    b = np.asarray(b)
    return to_bbox_array(b) if b.size else b


def evaluate_prophesee(gt_by_recording: dict, dt_by_recording: dict, height: int = 240, width: int = 304,
                       time_tol_us: int = 50_000, min_box_diag: float = 30, min_box_side: float = 10,
                       skip_us: int = 500_000, names=GEN1_NAMES, apply_filter: bool = True) -> dict:
    """Prophesee protocol (module docstring). ``gt_by_recording`` / ``dt_by_recording``: ``{recording:
    structured box array}`` with fields ``t`` (or ``ts``), ``x, y, w, h`` (top-left, sensor pixels),
    ``class_id`` and, for detections, ``confidence`` (or ``class_confidence``, the toolbox/RVT name).
    A recording missing from the detections has none.

    Returns ``protocol="prophesee"``, ``AP``, ``AP50``, ``AP75``, ``AP_S``, ``AP_M``, ``AP_L``, per-class APs,
    ``images`` (evaluated GT timestamps), ``gt_boxes`` and ``dt_boxes`` (after filtering, detections counted
    once per image they are pooled into), and the settings used. Class ids outside ``names`` are not scored
    (the toolbox's COCO categories are ``names``).
    """
    images, anns, dets = [], [], []
    for rec in sorted(gt_by_recording):
        gt = _boxes(gt_by_recording[rec])
        dt = dt_by_recording.get(rec)
        dt = _boxes(dt) if dt is not None and len(dt) else np.zeros(0, gt.dtype if gt.size else None)
        if apply_filter:
            gt = filter_boxes(gt, skip_us, min_box_diag, min_box_side)
            dt = filter_boxes(dt, skip_us, min_box_diag, min_box_side)
        if gt.size == 0:
            continue
        gt = gt[np.argsort(gt["t"], kind="stable")]
        dt = dt[np.argsort(dt["t"], kind="stable")] if dt.size else dt
        dt_t = dt["t"].astype(np.int64) if dt.size else np.zeros(0, np.int64)
        ts, starts = np.unique(gt["t"], return_index=True)
        ends = np.append(starts[1:], len(gt))
        for t, a, b in zip(ts.astype(np.int64), starts, ends):
            image_id = len(images) + 1
            images.append({"id": image_id, "height": int(height), "width": int(width), "file_name": f"{rec}_{t}"})
            anns += [_annotation(g, image_id, len(anns) + k + 1) for k, g in enumerate(gt[a:b])]
            i0 = np.searchsorted(dt_t, t - time_tol_us, side="left")
            i1 = np.searchsorted(dt_t, t + time_tol_us, side="right")
            dets += [_detection(d, image_id) for d in dt[i0:i1]]
    nc = len(names)
    gt_dict = {"images": images, "annotations": anns, "categories": [{"id": i, "name": str(n)}
                                                                      for i, n in enumerate(names)]}
    r = evaluate_coco_dicts(gt_dict, dets, nc, float32_det_area=True)
    return _result("prophesee", r, images=len(images), gt_boxes=len(anns), dt_boxes=len(dets),
                   settings={"height": height, "width": width, "time_tol_us": time_tol_us,
                             "min_box_diag": min_box_diag, "min_box_side": min_box_side, "skip_us": skip_us,
                             "filter": apply_filter})


def _annotation(g, image_id: int, ann_id: int) -> dict:
    """One ground-truth row as the toolbox writes it: its own x, y, w, h; area ``w * h`` in float32."""
    return {"id": ann_id, "image_id": image_id, "category_id": int(g["class_id"]), "iscrowd": 0,
            "bbox": [float(g["x"]), float(g["y"]), float(g["w"]), float(g["h"])], "area": float(g["w"] * g["h"])}


def _detection(d, image_id: int) -> dict:
    return {"image_id": image_id, "category_id": int(d["class_id"]), "score": float(d["confidence"]),
            "bbox": [float(d["x"]), float(d["y"]), float(d["w"]), float(d["h"])]}


def evaluate_per_sample(gts: list[dict], preds: list, names=GEN1_NAMES) -> dict:
    """Official SpikeYOLO-style evaluation: every sample is one image, no filters, no time tolerance.

    ``gts``: ``[{"image_id", "shape", "boxes_xyxy", "cls"}]`` (e.g. ``Gen1Dataset.ground_truth(i)`` items;
    ``im_file`` is used when ``image_id`` is absent); ``preds``: ``[(image_id, boxes_xyxy, scores, cls)]``.
    """
    gts = [dict(g, image_id=g.get("image_id", g.get("im_file"))) for g in gts]
    r = coco_evaluate(gts, preds, list(names))
    return _result("per-sample", r, images=len(gts))
