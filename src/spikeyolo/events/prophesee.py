"""Event-camera detection protocols. Every result dict names its ``protocol``.

``prophesee`` (the Prophesee toolbox / RVT protocol, re-implemented from its description; the community's
standard for Gen1 and 1Mpx):

1. Filter ground truth and detections alike: drop boxes with ``t <= skip_us`` (the first 0.5 s of a
   recording have too little event history), with ``w**2 + h**2 < min_box_diag**2`` or with ``w`` or ``h``
   ``< min_box_side`` (Gen1: 30 / 10 px; 1Mpx: 60 / 20).
2. Evaluate only at the (filtered) ground-truth timestamps of each recording: each becomes one COCO image of
   ``height x width``; the detections with ``|t_det - t_gt| <= time_tol_us`` (50 ms) are pooled into it.
3. COCO AP (pycocotools or faster-coco-eval, max 100 detections per image): AP (=mAP@[.5:.95]), AP50,
   AP75, AP_S, AP_M, AP_L.

``per-sample`` (the official SpikeYOLO Gen1 evaluation, with COCO instead of ultralytics' AP code): every
sample is one image, no filters, no time tolerance.
"""

from __future__ import annotations

import numpy as np

from ..metrics.coco import coco_evaluate
from .io import to_bbox_array

GEN1_NAMES = ("car", "pedestrian")


def filter_boxes(boxes: np.ndarray, skip_us: int = 500_000, min_box_diag: float = 30,
                 min_box_side: float = 10) -> np.ndarray:
    """Keep boxes (structured, fields ``t, w, h``) with ``t > skip_us``, ``w^2 + h^2 >= min_box_diag^2`` and
    ``w, h >= min_box_side``."""
    boxes = np.asarray(boxes)
    if boxes.size == 0:
        return boxes
    w = boxes["w"].astype(np.float64)
    h = boxes["h"].astype(np.float64)
    keep = (boxes["t"].astype(np.int64) > skip_us) & (w * w + h * h >= float(min_box_diag) ** 2)
    keep &= (w >= min_box_side) & (h >= min_box_side)
    return boxes[keep]


def _xyxy(b: np.ndarray) -> np.ndarray:
    x, y = b["x"].astype(np.float64), b["y"].astype(np.float64)
    return np.stack((x, y, x + b["w"], y + b["h"]), 1).reshape(-1, 4)


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
    once per image they are pooled into), and the settings used.
    """
    gts, preds = [], []
    n_gt = n_dt = 0
    for rec in sorted(gt_by_recording):
        gt = _boxes(gt_by_recording[rec])
        dt = dt_by_recording.get(rec)
        dt = _boxes(dt) if dt is not None and len(dt) else None
        if apply_filter:
            gt = filter_boxes(gt, skip_us, min_box_diag, min_box_side)
            dt = filter_boxes(dt, skip_us, min_box_diag, min_box_side) if dt is not None else None
        if gt.size == 0:
            continue
        gt = gt[np.argsort(gt["t"], kind="stable")]
        if dt is not None and dt.size:
            dt = dt[np.argsort(dt["t"], kind="stable")]
            dt_t = dt["t"].astype(np.int64)
        ts, starts = np.unique(gt["t"], return_index=True)
        ends = np.append(starts[1:], len(gt))
        for t, a, b in zip(ts.astype(np.int64), starts, ends):
            image_id = f"{rec}_{t}"
            g = gt[a:b]
            gts.append({"image_id": image_id, "shape": (height, width), "boxes_xyxy": _xyxy(g),
                        "cls": g["class_id"].astype(np.int64)})
            n_gt += len(g)
            if dt is not None and dt.size:
                i0 = np.searchsorted(dt_t, t - time_tol_us, side="left")
                i1 = np.searchsorted(dt_t, t + time_tol_us, side="right")
                d = dt[i0:i1]
                if len(d):
                    preds.append((image_id, _xyxy(d), d["confidence"].astype(np.float64),
                                  d["class_id"].astype(np.int64)))
                    n_dt += len(d)
    r = coco_evaluate(gts, preds, list(names))
    return _result("prophesee", r, images=len(gts), gt_boxes=n_gt, dt_boxes=n_dt,
                   settings={"height": height, "width": width, "time_tol_us": time_tol_us,
                             "min_box_diag": min_box_diag, "min_box_side": min_box_side, "skip_us": skip_us,
                             "filter": apply_filter})


def evaluate_per_sample(gts: list[dict], preds: list, names=GEN1_NAMES) -> dict:
    """Official SpikeYOLO-style evaluation: every sample is one image, no filters, no time tolerance.

    ``gts``: ``[{"image_id", "shape", "boxes_xyxy", "cls"}]`` (e.g. ``Gen1Dataset.ground_truth(i)`` items;
    ``im_file`` is used when ``image_id`` is absent); ``preds``: ``[(image_id, boxes_xyxy, scores, cls)]``.
    """
    gts = [dict(g, image_id=g.get("image_id", g.get("im_file"))) for g in gts]
    r = coco_evaluate(gts, preds, list(names))
    return _result("per-sample", r, images=len(gts))
