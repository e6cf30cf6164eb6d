"""Precision, recall and precision-recall curves of detections at an IoU threshold (0.5 by default).

How the numbers are defined (the way YOLO trainers report P and R):

1. Matching (per image, per IoU threshold): detections are visited by decreasing score; each one is a true
   positive when an unmatched ground-truth box of the same class overlaps it with IoU >= threshold (it takes
   the one with the highest IoU), else a false positive.
2. Per class ``c`` and confidence ``t`` on a grid over [0, 1]: ``P_c(t)`` = TP / detections among detections
   with score >= ``t`` (1 when the class has detections but none at or above ``t``; 0 at every ``t`` for a
   class with ground truth and no detections at all), ``R_c(t)`` = TP / number of GT boxes of class ``c``.
3. ``F1_c(t) = 2 P R / (P + R)``; the reported confidence is the ``t`` maximizing the mean F1 over the
   classes that have ground truth (the curve smoothed by a moving average over ``smooth`` of its length on
   each side); reported P and R are the class means at that ``t``.

The precision-recall curve of a class is its precision envelope (the best precision at recall >= r) sampled on
a recall grid; its mean over a 101-point grid is the COCO-style AP.

The confusion matrix (:func:`confusion_matrix`, as ultralytics draws it) is ``[nc + 1, nc + 1]``: rows are the
predicted class, columns the true class, the last row and column "background". Per image, detections with
score >= ``conf`` (0.25) and ground-truth boxes are paired one to one regardless of class, by decreasing IoU
among pairs with IoU >= ``iou`` (0.45); a pair adds 1 at ``[pred class, true class]``, an unpaired ground
truth at ``[background, true class]``, an unpaired detection at ``[pred class, background]``.
"""

from __future__ import annotations

import numpy as np


def _np(x, tail=()) -> np.ndarray:
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    a = np.asarray(x, dtype=np.float64)
    return a.reshape(-1, *tail) if tail else a.reshape(-1)


def _iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.clip(rb - lt, 0, None).prod(-1)
    area_a = np.clip(a[:, 2] - a[:, 0], 0, None) * np.clip(a[:, 3] - a[:, 1], 0, None)
    area_b = np.clip(b[:, 2] - b[:, 0], 0, None) * np.clip(b[:, 3] - b[:, 1], 0, None)
    return inter / np.maximum(area_a[:, None] + area_b[None, :] - inter, 1e-12)


def match_predictions(pred_boxes, pred_scores, pred_cls, gt_boxes, gt_cls, iou_thresholds=(0.5,)) -> np.ndarray:
    """Greedy score-ordered matching of one image's detections -> ``tp [n, T]`` bool (rows in input order).

    ``pred_boxes [n, 4]`` and ``gt_boxes [m, 4]`` are xyxy in the same pixels.
    """
    pb, ps, pc = _np(pred_boxes, (4,)), _np(pred_scores), _np(pred_cls)
    gb, gc = _np(gt_boxes, (4,)), _np(gt_cls)
    thr = _np(iou_thresholds)
    tp = np.zeros((len(pb), len(thr)), dtype=bool)
    if not len(pb) or not len(gb):
        return tp
    iou = _iou_matrix(pb, gb)
    iou[pc[:, None] != gc[None, :]] = -1.0
    order = np.argsort(-ps, kind="stable")
    for t, th in enumerate(thr):
        used = np.zeros(len(gb), dtype=bool)
        for i in order:
            cand = np.where(used, -1.0, iou[i])
            j = int(cand.argmax())
            if cand[j] >= th:
                used[j] = True
                tp[i, t] = True
    return tp


def _per_class_sorted(tp, conf, pred_cls, c):
    sel = pred_cls == c
    order = np.argsort(-conf[sel], kind="stable")
    return tp[sel][order], conf[sel][order]


def _smooth(y: np.ndarray, frac: float) -> np.ndarray:
    half = int(round(len(y) * frac))
    if half <= 0:
        return y
    padded = np.concatenate((np.full(half, y[0]), y, np.full(half, y[-1])))
    return np.convolve(padded, np.ones(2 * half + 1) / (2 * half + 1), mode="valid")


def confidence_curves(tp, conf, pred_cls, gt_cls, nc: int, n_conf: int = 1000):
    """Precision and recall per class as functions of the confidence threshold.

    ``tp [N]`` bool (one IoU threshold), ``conf [N]``, ``pred_cls [N]`` over all images; ``gt_cls [M]`` all GT
    classes. Returns ``conf_grid [n_conf]``, ``p [nc, n_conf]``, ``r [nc, n_conf]``, ``n_gt [nc]``.
    """
    tp, conf, pred_cls, gt_cls = _np(tp), _np(conf), _np(pred_cls), _np(gt_cls)
    grid = np.linspace(0, 1, n_conf)
    p = np.ones((nc, n_conf))
    r = np.zeros((nc, n_conf))
    n_gt = np.bincount(gt_cls.astype(int), minlength=nc)[:nc].astype(float)
    for c in range(nc):
        t, s = _per_class_sorted(tp, conf, pred_cls, c)
        if not len(t):
            p[c] = 0.0  # nothing detected: no precision to credit (a class with GT would otherwise show P = 1)
            continue
        cum_tp = np.concatenate(([0.0], np.cumsum(t)))
        # number of detections with score >= threshold (scores sorted descending)
        k = np.searchsorted(-s, -grid, side="right")
        tps = cum_tp[k]
        p[c] = np.where(k > 0, tps / np.maximum(k, 1), 1.0)
        r[c] = tps / n_gt[c] if n_gt[c] else 0.0
    return grid, p, r, n_gt


def precision_recall(tp, conf, pred_cls, gt_cls, nc: int, n_conf: int = 1000, smooth: float = 0.1) -> dict:
    """P and R at the confidence maximizing the mean F1 over classes with GT (see the module docstring).

    Returns ``precision``, ``recall``, ``f1``, ``conf`` (floats) and ``p_per_class``, ``r_per_class``
    (``[nc]`` arrays, ``nan`` for classes without GT).
    """
    grid, p, r, n_gt = confidence_curves(tp, conf, pred_cls, gt_cls, nc, n_conf)
    present = n_gt > 0
    nan_c = np.full(nc, np.nan)
    if not present.any():
        return {"precision": 0.0, "recall": 0.0, "f1": 0.0, "conf": 0.0, "p_per_class": nan_c,
                "r_per_class": nan_c.copy()}
    f1 = 2 * p * r / np.maximum(p + r, 1e-16)
    mean_f1 = _smooth(f1[present].mean(0), smooth)
    k = int(mean_f1.argmax())
    pc, rc = nan_c.copy(), nan_c.copy()
    pc[present], rc[present] = p[present, k], r[present, k]
    P, R = float(pc[present].mean()), float(rc[present].mean())
    return {"precision": P, "recall": R, "f1": 2 * P * R / max(P + R, 1e-16), "conf": float(grid[k]),
            "p_per_class": pc, "r_per_class": rc}


def pr_curves(tp, conf, pred_cls, gt_cls, nc: int, n_points: int = 101):
    """Precision-recall curves for plotting.

    Returns ``recall_grid [n_points]`` (linspace 0..1), ``precision [nc, n_points]`` (the envelope: the best
    precision at recall >= r; 0 past the highest recall reached; ``nan`` rows for classes without GT) and
    ``ap [nc]`` (mean of the row: COCO-style 101-point AP when ``n_points=101``).
    """
    tp, conf, pred_cls, gt_cls = _np(tp), _np(conf), _np(pred_cls), _np(gt_cls)
    grid = np.linspace(0, 1, n_points)
    n_gt = np.bincount(gt_cls.astype(int), minlength=nc)[:nc]
    prec = np.full((nc, n_points), np.nan)
    for c in range(nc):
        if not n_gt[c]:
            continue
        prec[c] = 0.0
        t, _ = _per_class_sorted(tp, conf, pred_cls, c)
        if not len(t):
            continue
        cum_tp = np.cumsum(t)
        rec = cum_tp / n_gt[c]
        pr = cum_tp / np.arange(1, len(t) + 1)
        env = np.maximum.accumulate(pr[::-1])[::-1]
        idx = np.searchsorted(rec, grid, side="left")  # first rank reaching recall >= r
        ok = idx < len(t)
        prec[c, ok] = env[idx[ok]]
    return grid, prec, prec.mean(1)


def confusion_matrix(pred_boxes, pred_scores, pred_cls, gt_boxes, gt_cls, nc: int, conf: float = 0.25,
                     iou: float = 0.45) -> np.ndarray:
    """One image's confusion matrix ``[nc + 1, nc + 1]`` int64 (see the module docstring); add them up."""
    pb, ps, pc = _np(pred_boxes, (4,)), _np(pred_scores), _np(pred_cls).astype(int)
    gb, gc = _np(gt_boxes, (4,)), _np(gt_cls).astype(int)
    keep = ps >= conf
    pb, pc = pb[keep], pc[keep]
    m = np.zeros((nc + 1, nc + 1), dtype=np.int64)
    pairs = []
    if len(pb) and len(gb):
        ov = _iou_matrix(pb, gb)
        di, gi = np.nonzero(ov >= iou)
        order = np.argsort(-ov[di, gi], kind="stable")
        used_d, used_g = set(), set()
        for d, g in zip(di[order].tolist(), gi[order].tolist()):
            if d not in used_d and g not in used_g:
                used_d.add(d)
                used_g.add(g)
                pairs.append((d, g))
    for d, g in pairs:
        m[pc[d], gc[g]] += 1
    paired_d, paired_g = {d for d, _ in pairs}, {g for _, g in pairs}
    for g in range(len(gb)):
        if g not in paired_g:
            m[nc, gc[g]] += 1
    for d in range(len(pb)):
        if d not in paired_d:
            m[pc[d], nc] += 1
    return m


class DetectionMetrics:
    """Accumulate detections over images, then report P/R/F1 at one IoU threshold, PR and confidence curves.

    ``update(pred, gt_boxes, gt_cls)``: ``pred [n, 6]`` (x1, y1, x2, y2, score, class; the NMS output) and the
    image's GT ``[m, 4]`` xyxy, ``[m]`` classes, same pixels.
    Also counted: ``matrix`` (the summed :func:`confusion_matrix`) and ``images_per_class [nc]`` (images with
    at least one ground-truth box of the class).
    """

    def __init__(self, nc: int, iou_thres: float = 0.5):
        self.nc, self.iou_thres = nc, iou_thres
        self.tp, self.conf, self.pred_cls, self.gt_cls = [], [], [], []
        self.matrix = np.zeros((nc + 1, nc + 1), dtype=np.int64)
        self.images_per_class = np.zeros(nc, dtype=np.int64)

    def update(self, pred, gt_boxes, gt_cls) -> None:
        pred, gt_cls = _np(pred, (6,)), _np(gt_cls)
        self.tp.append(match_predictions(pred[:, :4], pred[:, 4], pred[:, 5], gt_boxes, gt_cls,
                                         (self.iou_thres,))[:, 0])
        self.conf.append(pred[:, 4])
        self.pred_cls.append(pred[:, 5])
        self.gt_cls.append(gt_cls)
        self.matrix += confusion_matrix(pred[:, :4], pred[:, 4], pred[:, 5], gt_boxes, gt_cls, self.nc)
        present = np.unique(gt_cls.astype(int))
        self.images_per_class[present[(present >= 0) & (present < self.nc)]] += 1

    def _cat(self):
        def cat(xs, dtype):
            return np.concatenate(xs).astype(dtype) if xs else np.zeros(0, dtype)

        return (cat(self.tp, bool), cat(self.conf, float), cat(self.pred_cls, float), cat(self.gt_cls, float))

    def compute(self, n_conf: int = 1000, smooth: float = 0.1) -> dict:
        """:func:`precision_recall` over everything seen, plus ``ap_per_class`` and ``map`` (101-point AP at
        ``iou_thres``, mean over classes with GT)."""
        tp, conf, pc, gc = self._cat()
        out = precision_recall(tp, conf, pc, gc, self.nc, n_conf=n_conf, smooth=smooth)
        _, _, ap = pr_curves(tp, conf, pc, gc, self.nc)
        out["ap_per_class"] = ap
        out["map"] = float(np.nanmean(ap)) if np.isfinite(ap).any() else 0.0
        return out

    def confidence_curves(self, n_conf: int = 1000):
        """:func:`confidence_curves` over everything seen, plus F1: ``grid, p, r, f1`` (``[nc, n_conf]``)."""
        grid, p, r, _ = confidence_curves(*self._cat(), self.nc, n_conf)
        return grid, p, r, 2 * p * r / np.maximum(p + r, 1e-16)

    def pr_curves(self, n_points: int = 101):
        """:func:`pr_curves` over everything seen."""
        return pr_curves(*self._cat(), self.nc, n_points=n_points)
