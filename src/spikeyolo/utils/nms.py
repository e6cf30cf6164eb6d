"""Non-maximum suppression of decoded predictions ``[B, 4 + nc, A]`` (eval-mode head output).

Greedy NMS in pure torch; ``torchvision.ops.nms`` is used instead when torchvision is installed (same result).
Per-class NMS uses the coordinate-offset trick: every box is shifted by ``class * MAX_WH`` so boxes of
different classes never overlap, and one NMS call handles all classes.
"""

from __future__ import annotations

import torch

from .boxes import box_iou, cxcywh2xyxy

try:  # optional accelerator; not a dependency
    from torchvision.ops import nms as _tv_nms
except Exception:  # any import problem means "not available"
    _tv_nms = None

MAX_WH = 7680.0  # larger than any input side in pixels


def nms_torch(boxes: torch.Tensor, scores: torch.Tensor, iou_thres: float, max_keep: int | None = None,
              block: int = 512) -> torch.Tensor:
    """Greedy NMS in pure torch: ``boxes [n, 4]`` xyxy, ``scores [n]`` -> kept indices ``[k]`` (long), by
    decreasing score. A box is suppressed when its IoU with a kept, higher-scored box is ``> iou_thres``.

    Works on score-sorted blocks of ``block`` boxes: a block is first cut by every box kept so far (one
    vectorized IoU), then resolved inside by iterating ``keep[j] = not any(keep[i] and IoU[i, j] > thr, i < j)``
    to its fixed point, which is unique and equals the sequential greedy result. Stops once ``max_keep`` boxes
    are kept (the result is the same prefix as without the limit).
    """
    n = boxes.shape[0]
    order = scores.argsort(descending=True, stable=True)
    if n == 0:
        return order
    b = boxes[order]
    kept, kept_boxes, n_kept = [], b[:0], 0
    for s in range(0, n, block):
        blk = b[s : s + block]
        alive = torch.ones(blk.shape[0], dtype=torch.bool, device=b.device)
        for k in range(0, kept_boxes.shape[0], 4096):
            alive &= ~(box_iou(kept_boxes[k : k + 4096], blk) > iou_thres).any(0)
        over = (box_iou(blk, blk) > iou_thres).triu(1) & alive[:, None]
        keep = alive
        while True:
            new = alive & ~(over & keep[:, None]).any(0)
            if torch.equal(new, keep):
                break
            keep = new
        idx = keep.nonzero()[:, 0]
        kept.append(idx + s)
        kept_boxes = torch.cat((kept_boxes, blk[idx]))
        n_kept += idx.numel()
        if max_keep is not None and n_kept >= max_keep:
            break
    keep_sorted = torch.cat(kept)
    if max_keep is not None:
        keep_sorted = keep_sorted[:max_keep]
    return order[keep_sorted]


def nms(boxes: torch.Tensor, scores: torch.Tensor, iou_thres: float, max_keep: int | None = None,
        use_torchvision: bool = True) -> torch.Tensor:
    """Greedy NMS (torchvision's when available and ``use_torchvision``, else :func:`nms_torch`); at most
    ``max_keep`` indices, by decreasing score."""
    if use_torchvision and _tv_nms is not None:
        return _tv_nms(boxes, scores, iou_thres)[:max_keep]
    return nms_torch(boxes, scores, iou_thres, max_keep=max_keep)


def non_max_suppression(
    pred,
    conf_thres: float = 0.001,
    iou_thres: float = 0.7,
    max_det: int = 300,
    agnostic: bool = False,
    max_nms: int = 30000,
    classes=None,
    multi_label: bool = False,
) -> list[torch.Tensor]:
    """Filter and suppress decoded predictions.

    Args:
        pred: ``[B, 4 + nc, A]``: cxcywh in input pixels, then class scores in [0, 1] (a tuple/list whose first
            element is that tensor is accepted too).
        conf_thres: keep candidates with score ``> conf_thres``.
        iou_thres: suppress boxes with IoU ``> iou_thres`` to a higher-scored kept box (same class unless
            ``agnostic``).
        max_det: at most this many detections per image (highest scores).
        agnostic: one NMS over all classes instead of per class.
        max_nms: at most this many candidates (highest scores) enter NMS.
        classes: optional iterable of class ids to keep.
        multi_label: one candidate per (box, class) pair above ``conf_thres`` instead of the best class only.

    Returns:
        list of ``B`` tensors ``[n, 6]``: x1, y1, x2, y2, score, class (float), sorted by decreasing score.
    """
    if isinstance(pred, list | tuple):
        pred = pred[0]
    B, no, _ = pred.shape
    nc = no - 4
    out = []
    class_filter = None
    if classes is not None:
        class_filter = torch.as_tensor(list(classes), device=pred.device, dtype=torch.float32)
    for x in pred.transpose(1, 2):  # [A, 4 + nc]
        boxes = cxcywh2xyxy(x[:, :4].float())
        scores = x[:, 4:].float()
        if multi_label and nc > 1:
            i, j = (scores > conf_thres).nonzero(as_tuple=True)
            det = torch.cat((boxes[i], scores[i, j, None], j[:, None].float()), 1)
        else:
            conf, j = scores.max(1, keepdim=True)
            det = torch.cat((boxes, conf, j.float()), 1)[conf[:, 0] > conf_thres]
        if class_filter is not None:
            det = det[(det[:, 5:6] == class_filter).any(1)]
        if det.shape[0] > max_nms:
            det = det[det[:, 4].argsort(descending=True)[:max_nms]]
        if not det.shape[0]:
            out.append(det.new_zeros((0, 6)))
            continue
        offset = 0.0 if agnostic else det[:, 5:6] * MAX_WH
        keep = nms(det[:, :4] + offset, det[:, 4], iou_thres, max_keep=max_det)
        out.append(det[keep])
    return out
