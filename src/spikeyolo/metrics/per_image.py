"""Per-image average precision and a paired bootstrap of the difference between two sets of detections.

COCO's box AP (maxDets per image, IoU 0.50:0.95, 101 recall points) is computed from detections matched per
image (:func:`score_image`) with the library's matching and precision envelope (:mod:`spikeyolo.metrics.detection`).
Matching is per image, so the AP of any resampled set of images is recomputed from the cached matches without
running the network or COCOeval again; :func:`paired_bootstrap` uses that to put an interval on the difference
of AP between two forms of a model on the same resampled images (``benchmarks/precision.py``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from spikeyolo.metrics.detection import match_predictions, pr_curves

IOU_THRESHOLDS = np.linspace(0.5, 0.95, 10)  # COCO's thresholds, the same floats as COCOeval's


@dataclass
class ImageScores:
    """One image's detections matched to its ground truth: ``tp [n, len(IOU_THRESHOLDS)]``, ``conf [n]``,
    ``cls [n]`` (by decreasing score, at most ``max_dets`` per class) and ``gt_cls [m]``."""

    tp: np.ndarray
    conf: np.ndarray
    cls: np.ndarray
    gt_cls: np.ndarray


def score_image(boxes, scores, cls, gt_boxes, gt_cls, max_dets: int = 100) -> ImageScores:
    """Match one image's detections as COCOeval does: by decreasing score (stable), the ``max_dets`` best of
    each class, each to the unmatched same-class ground truth of highest IoU at every threshold."""
    boxes, scores = np.asarray(boxes, np.float64).reshape(-1, 4), np.asarray(scores, np.float64).reshape(-1)
    cls = np.asarray(cls, np.float64).reshape(-1)
    order = np.argsort(-scores, kind="stable")
    rank_in_class = np.zeros(len(order), dtype=int)
    for c in np.unique(cls):
        sel = cls[order] == c
        rank_in_class[sel] = np.arange(int(sel.sum()))
    order = order[rank_in_class < max_dets]
    boxes, scores, cls = boxes[order], scores[order], cls[order]
    gt_cls = np.asarray(gt_cls, np.float64).reshape(-1)
    tp = match_predictions(boxes, scores, cls, np.asarray(gt_boxes, np.float64).reshape(-1, 4), gt_cls,
                           IOU_THRESHOLDS)
    return ImageScores(tp, scores, cls, gt_cls)


def score_images(predictions, ground_truth: dict, max_dets: int = 100) -> dict[str, ImageScores]:
    """``{image_id: ImageScores}`` from a Validator's ``predictions`` (``(image_id, boxes, scores, cls)``) and
    ``ground_truth`` ``{image_id: (boxes_xyxy, cls)}`` in the same pixels. Every image of ``ground_truth`` is
    scored (no predictions: none matched)."""
    preds = {p[0]: p[1:] for p in predictions}
    empty = (np.zeros((0, 4)), np.zeros(0), np.zeros(0))
    return {i: score_image(*[_numpy(a) for a in preds.get(i, empty)], *gt, max_dets=max_dets)
            for i, gt in ground_truth.items()}


def _numpy(x) -> np.ndarray:
    return x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)


def average_precision(images: list[ImageScores], nc: int) -> tuple[float, float]:
    """``(mAP50, mAP50:95)`` of a set of scored images: per IoU threshold, the 101-point AP of each class with
    ground truth (``pr_curves``), averaged over classes (and thresholds for mAP50:95), as COCOeval does."""
    tp = np.concatenate([s.tp for s in images])
    conf, cls = np.concatenate([s.conf for s in images]), np.concatenate([s.cls for s in images])
    gt_cls = np.concatenate([s.gt_cls for s in images])
    if not len(gt_cls):
        return float("nan"), float("nan")
    per_threshold = np.array([np.nanmean(pr_curves(tp[:, t], conf, cls, gt_cls, nc)[2])
                              for t in range(len(IOU_THRESHOLDS))])
    return float(per_threshold[0]), float(per_threshold.mean())


def paired_bootstrap(forms: dict[str, list[list[ImageScores]]], reference: str, nc: int, resamples: int = 1000,
                     seed: int = 0, level: float = 0.95) -> dict[str, dict]:
    """AP of each form and its difference to ``reference``, with percentile intervals over ``resamples`` draws
    of the source images with replacement (the same draws for every form: a paired bootstrap).

    ``forms[name][s]`` are the scored views of source image ``s`` (the same sources, in the same order, for
    every form). Returns per form: ``map50``, ``map`` (all sources) and ``d_map50``, ``d_map`` (minus the
    reference's) with ``d_map50_ci``, ``d_map_ci`` ``(low, high)``."""
    n_src = len(forms[reference])
    if any(len(g) != n_src for g in forms.values()):
        raise ValueError("paired_bootstrap: every form needs the same source images")
    draws = np.random.default_rng(seed).integers(0, n_src, size=(resamples, n_src))
    full = {f: average_precision([s for g in groups for s in g], nc) for f, groups in forms.items()}
    boot = {f: np.array([average_precision([s for i in d for s in groups[i]], nc) for d in draws])
            for f, groups in forms.items()}
    tail = 100 * (1 - level) / 2
    out = {}
    for f in forms:
        diff = boot[f] - boot[reference]  # [resamples, 2]: (map50, map)
        lo, hi = np.percentile(diff, [tail, 100 - tail], axis=0)
        out[f] = {"map50": full[f][0], "map": full[f][1],
                  "d_map50": full[f][0] - full[reference][0], "d_map": full[f][1] - full[reference][1],
                  "d_map50_ci": (float(lo[0]), float(hi[0])), "d_map_ci": (float(lo[1]), float(hi[1]))}
    return out
