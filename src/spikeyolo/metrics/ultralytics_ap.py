"""The AP that ultralytics 8.0 reports inside its trainer and ``val`` (the protocol behind the published SpikeYOLO
COCO numbers; see docs/training.md, "Evaluation protocols"). Written from the protocol's description; no
ultralytics code is used (it is AGPL).

How the numbers are defined:

1. Matching, per image and per IoU threshold ``t`` in 0.50:0.05:0.95, on the detections in their given order
   (NMS order: decreasing score): every detection picks the ground-truth box of its class with the highest IoU
   among those with IoU >= ``t``; a ground-truth box picked by several detections counts only the first of them
   (the lowest index) as a true positive. A detection whose best box went to an earlier one does not fall back
   to its second best. Crowd boxes, when given, are ordinary ground truth.
2. Per class with ground truth: detections of the class over all images sorted by decreasing score; precision
   ``TP / (TP + FP)`` and recall ``TP / n_gt`` after each; the precision envelope (best precision at this rank
   or later) with a point ``(recall 0, precision 1)`` before the first detection and ``(recall 1, precision 0)``
   after the last. AP is the trapezoid integral, over 101 recall points 0, 0.01, ..., 1, of the envelope
   interpolated linearly in recall (numpy's ``interp``: at a repeated recall the last point of the run counts,
   at recall 1 the final sentinel 0 counts, so a perfect detector scores 0.995).
3. mAP50 is the mean over the classes with ground truth of AP at IoU 0.5, mAP the mean of AP over all ten
   thresholds and those classes; a class with ground truth and no detection has AP 0.
4. P and R: per class, precision and recall at IoU 0.5 as functions of the confidence threshold on a grid of
   1000 points in [0, 1], linearly interpolated between the detections' scores (precision 1, recall 0 above the
   top score); F1 from them; the reported confidence maximizes the class-mean F1 smoothed by a box filter of
   101 grid points (edges repeated); P and R are the class means there.
5. With no true positive at any threshold every number is 0 (ultralytics skips the computation then).
"""

from __future__ import annotations

import numpy as np

from .detection import _iou_matrix, _np

IOU_THRESHOLDS = np.linspace(0.5, 0.95, 10)
N_CONF = 1000  # confidence grid of the P / R / F1 curves
SMOOTH_POINTS = 101  # box filter width on that grid (a fraction 0.1 of it, rounded to an odd count)


def match_detections(pred_boxes, pred_cls, gt_boxes, gt_cls, iou_thresholds=IOU_THRESHOLDS) -> np.ndarray:
    """One image's true positives ``[n, T]`` bool by rule 1 of the module docstring (rows in input order)."""
    pb, pc = _np(pred_boxes, (4,)), _np(pred_cls)
    gb, gc = _np(gt_boxes, (4,)), _np(gt_cls)
    thr = _np(iou_thresholds)
    tp = np.zeros((len(pb), len(thr)), dtype=bool)
    if not len(pb) or not len(gb):
        return tp
    iou = _iou_matrix(gb, pb)  # [labels, detections]
    iou[gc[:, None] != pc[None, :]] = 0.0
    dets = np.arange(len(pb))
    for t, th in enumerate(thr):
        cand = np.where(iou >= th, iou, -1.0)
        best = cand.argmax(0)  # each detection's best box at this threshold
        hit = dets[cand[best, dets] >= th]  # ascending detection index
        _, first = np.unique(best[hit], return_index=True)  # each box: its first detection
        tp[hit[first], t] = True
    return tp


def ap_101(recall: np.ndarray, precision: np.ndarray) -> float:
    """AP of one class at one threshold from its ranked ``recall`` and ``precision`` (rule 2)."""
    r = np.concatenate(([0.0], recall, [1.0]))
    p = np.concatenate(([1.0], precision, [0.0]))
    envelope = np.maximum.accumulate(p[::-1])[::-1]
    x = np.linspace(0.0, 1.0, 101)
    y = np.interp(x, r, envelope)
    return float(((y[1:] + y[:-1]) * np.diff(x)).sum() / 2)


def _box_smooth(y: np.ndarray, points: int = SMOOTH_POINTS) -> np.ndarray:
    half = points // 2
    padded = np.concatenate((np.full(half, y[0]), y, np.full(half, y[-1])))
    return np.convolve(padded, np.ones(points) / points, mode="valid")


def _class_curves(tp: np.ndarray, conf: np.ndarray, n_gt: int, grid: np.ndarray):
    """AP per threshold ``[T]`` and the P, R curves ``[N_CONF]`` of one class (detections sorted by score)."""
    tpc = np.cumsum(tp, 0)
    fpc = np.cumsum(~tp, 0)
    recall = tpc / (n_gt + 1e-16)
    precision = tpc / (tpc + fpc)
    ap = np.array([ap_101(recall[:, j], precision[:, j]) for j in range(tp.shape[1])])
    p = np.interp(-grid, -conf, precision[:, 0], left=1.0)
    r = np.interp(-grid, -conf, recall[:, 0], left=0.0)
    return ap, p, r


def ultralytics_ap(tp, conf, pred_cls, gt_cls, nc: int) -> dict:
    """Rules 2-5 over all images: ``tp [N, T]`` bool, ``conf [N]``, ``pred_cls [N]``, ``gt_cls [M]``.

    Returns ``map50``, ``map75``, ``map``, ``precision``, ``recall``, ``conf`` (floats) and per class (length
    ``nc``, ``nan`` for classes without ground truth) ``ap50_per_class``, ``ap_per_class`` (mean over the
    thresholds), ``p_per_class``, ``r_per_class``.
    """
    tp = np.asarray(tp, dtype=bool).reshape(len(_np(conf)), -1)
    conf, pred_cls, gt_cls = _np(conf), _np(pred_cls), _np(gt_cls)
    order = np.argsort(-conf, kind="stable")
    tp, conf, pred_cls = tp[order], conf[order], pred_cls[order]
    classes, n_gt = np.unique(gt_cls.astype(int), return_counts=True)
    grid = np.linspace(0.0, 1.0, N_CONF)
    ap = np.zeros((len(classes), tp.shape[1]))
    p, r = np.zeros((len(classes), N_CONF)), np.zeros((len(classes), N_CONF))
    for k, c in enumerate(classes):
        sel = pred_cls == c
        if sel.any():
            ap[k], p[k], r[k] = _class_curves(tp[sel], conf[sel], n_gt[k], grid)
    nan_c = np.full(nc, np.nan)
    out = {"map50": 0.0, "map75": 0.0, "map": 0.0, "precision": 0.0, "recall": 0.0, "conf": 0.0,
           "ap50_per_class": nan_c.tolist(), "ap_per_class": nan_c.tolist(), "p_per_class": nan_c.tolist(),
           "r_per_class": nan_c.tolist()}
    inside = (classes >= 0) & (classes < nc)
    if not len(classes) or not tp.any():
        for key in ("ap50_per_class", "ap_per_class", "p_per_class", "r_per_class"):
            out[key] = [0.0 if c in classes else np.nan for c in range(nc)]
        return out
    f1 = 2 * p * r / (p + r + 1e-16)
    best = int(_box_smooth(f1.mean(0)).argmax())
    out.update(map50=float(ap[:, 0].mean()), map75=float(ap[:, 5].mean()) if ap.shape[1] > 5 else float("nan"),
               map=float(ap.mean()), precision=float(p[:, best].mean()), recall=float(r[:, best].mean()),
               conf=float(grid[best]))
    for key, values in (("ap50_per_class", ap[:, 0]), ("ap_per_class", ap.mean(1)), ("p_per_class", p[:, best]),
                        ("r_per_class", r[:, best])):
        per = nan_c.copy()
        per[classes[inside]] = values[inside]
        out[key] = per.tolist()
    return out


class UltralyticsAP:
    """Accumulates images, then :func:`ultralytics_ap`. ``update(pred [n, 6], gt_boxes [m, 4], gt_cls [m])``
    with ``pred`` the NMS output (x1, y1, x2, y2, score, class) in the same pixels as the ground truth."""

    def __init__(self, nc: int, iou_thresholds=IOU_THRESHOLDS):
        self.nc, self.iou_thresholds = nc, np.asarray(iou_thresholds, dtype=float)
        self.tp, self.conf, self.pred_cls, self.gt_cls = [], [], [], []

    def update(self, pred, gt_boxes, gt_cls) -> None:
        pred, gt_cls = _np(pred, (6,)), _np(gt_cls)
        self.tp.append(match_detections(pred[:, :4], pred[:, 5], gt_boxes, gt_cls, self.iou_thresholds))
        self.conf.append(pred[:, 4])
        self.pred_cls.append(pred[:, 5])
        self.gt_cls.append(gt_cls)

    def compute(self) -> dict:
        def cat(xs, empty):
            return np.concatenate(xs) if xs else empty

        tp = cat(self.tp, np.zeros((0, len(self.iou_thresholds)), bool))
        return ultralytics_ap(tp, cat(self.conf, np.zeros(0)), cat(self.pred_cls, np.zeros(0)),
                              cat(self.gt_cls, np.zeros(0)), self.nc)
