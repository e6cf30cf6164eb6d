"""Detection loss of the anchor-free DFL head (YOLOv8 style).

Three terms, each normalized by the sum of the soft classification targets:

- classification: binary cross-entropy with logits against the task-aligned soft scores (all anchors);
- box: ``1 - CIoU`` between decoded and assigned boxes, weighted by the anchor's target score;
- DFL (Li et al., "Generalized Focal Loss", NeurIPS 2020): cross-entropy of the bin logits to the two integer
  bins around the target distance, weighted linearly by closeness, averaged over the four sides, weighted by
  the target score.

Gains 7.5 (box), 0.5 (cls), 1.5 (dfl); the total is multiplied by the batch size.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..utils.boxes import bbox2dist, bbox_iou, cxcywh2xyxy, dist2bbox, make_anchors
from ..utils.runs import unwrap
from .assigner import TaskAlignedAssigner


def dfl_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Distribution focal loss: ``logits [N, 4, reg_max]``, ``target [N, 4]`` distances in ``[0, reg_max - 1)``
    -> ``[N]`` (mean over the four sides)."""
    reg_max = logits.shape[-1]
    left = target.long().clamp(0, reg_max - 2)
    w_right = target - left
    w_left = 1 - w_right
    logp = logits.log_softmax(-1)
    nll_left = -logp.gather(-1, left[..., None])[..., 0]
    nll_right = -logp.gather(-1, (left + 1)[..., None])[..., 0]
    return (nll_left * w_left + nll_right * w_right).mean(-1)


class DetectionLoss:
    """YOLOv8-style detection loss with task-aligned assignment.

    Build it from a model (``DetectionLoss(model)``; reads ``model.nc``, ``model.reg_max``, ``model.stride``,
    unwrapping ``.module`` of DDP) or from explicit arguments (``DetectionLoss(nc=80, strides=(8, 16, 32))``).

    ``loss(preds, batch) -> (total, items)``:

    - ``preds``: list of per-level maps ``[B, 4*reg_max + nc, H_i, W_i]`` (train-mode head output);
    - ``batch``: dict with ``cls [N, 1]``, ``bboxes [N, 4]`` (normalized cxcywh in the network input) and
      ``batch_idx [N]``;
    - ``total``: scalar, ``(box*7.5 + cls*0.5 + dfl*1.5) * B``; ``items``: detached ``[box, cls, dfl]``
      (gained, not multiplied by ``B``).

    The image size is taken from the first map's shape times its stride. The losses are computed in float32
    with autocast disabled, so this works under mixed precision.
    """

    def __init__(self, model=None, *, nc: int | None = None, strides=None, reg_max: int | None = None,
                 box: float = 7.5, cls: float = 0.5, dfl: float = 1.5, topk: int = 10, alpha: float = 0.5,
                 beta: float = 6.0):
        if model is not None:
            m = unwrap(model)
            nc = m.nc if nc is None else nc
            reg_max = m.reg_max if reg_max is None else reg_max
            strides = m.stride if strides is None else strides
        if nc is None or strides is None:
            raise ValueError("DetectionLoss needs a model or both nc= and strides=")
        if isinstance(strides, torch.Tensor):
            strides = strides.tolist()
        self.nc = int(nc)
        self.reg_max = int(reg_max if reg_max is not None else 16)
        self.strides = [float(s) for s in strides]
        self.no = self.nc + 4 * self.reg_max
        self.gains = (float(box), float(cls), float(dfl))
        self.assigner = TaskAlignedAssigner(topk=topk, num_classes=self.nc, alpha=alpha, beta=beta)

    def __call__(self, preds, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
        if len(preds) != len(self.strides):
            raise ValueError(f"expected {len(self.strides)} feature maps, got {len(preds)}")
        device = preds[0].device
        with torch.autocast(device_type=device.type, enabled=False):
            return self._loss([p.float() for p in preds], batch)

    def _targets(self, batch: dict, B: int, imgsz_hw: tuple[float, float], device) -> tuple:
        """Padded GT ``labels [B, n, 1]``, ``boxes [B, n, 4]`` (xyxy input pixels), ``mask [B, n, 1]``."""
        bidx = batch["batch_idx"].to(device).reshape(-1).long()
        cls = batch["cls"].to(device=device, dtype=torch.float32).reshape(-1)
        boxes = batch["bboxes"].to(device=device, dtype=torch.float32).reshape(-1, 4)
        counts = torch.bincount(bidx, minlength=B) if bidx.numel() else torch.zeros(B, dtype=torch.long)
        n = int(counts.max()) if bidx.numel() else 0
        labels = torch.zeros((B, n, 1), device=device)
        gt = torch.zeros((B, n, 4), device=device)
        mask = torch.zeros((B, n, 1), dtype=torch.bool, device=device)
        if n:
            order = torch.argsort(bidx, stable=True)
            bidx, cls, boxes = bidx[order], cls[order], boxes[order]
            starts = torch.cumsum(counts.to(device), 0) - counts.to(device)
            slot = torch.arange(bidx.numel(), device=device) - starts[bidx]
            h, w = imgsz_hw
            scale = boxes.new_tensor([w, h, w, h])
            labels[bidx, slot, 0] = cls
            gt[bidx, slot] = cxcywh2xyxy(boxes * scale)
            mask[bidx, slot, 0] = True
        return labels, gt, mask

    def _loss(self, preds: list[torch.Tensor], batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
        B, device = preds[0].shape[0], preds[0].device
        shapes = [tuple(p.shape[-2:]) for p in preds]
        flat = torch.cat([p.reshape(B, self.no, -1) for p in preds], 2).transpose(1, 2)  # [B, A, no]
        pred_dist, pred_cls = flat.split((4 * self.reg_max, self.nc), -1)
        A = flat.shape[1]

        points, stride = make_anchors(shapes, self.strides, device=device)  # grid units, [A, 1]
        imgsz = (shapes[0][0] * self.strides[0], shapes[0][1] * self.strides[0])

        bins = torch.arange(self.reg_max, device=device, dtype=torch.float32)
        logits = pred_dist.reshape(B, A, 4, self.reg_max)
        pred_boxes = dist2bbox((logits.softmax(-1) * bins).sum(-1), points, xywh=False)  # grid units xyxy

        labels, gt, mask = self._targets(batch, B, imgsz, device)
        _, target_boxes, target_scores, fg, _ = self.assigner(
            pred_cls.detach().sigmoid(), pred_boxes.detach() * stride, points * stride, labels, gt, mask
        )
        norm = target_scores.sum().clamp(min=1)

        loss_cls = F.binary_cross_entropy_with_logits(pred_cls, target_scores, reduction="sum") / norm
        loss_box = pred_boxes.sum() * 0.0
        loss_dfl = pred_boxes.sum() * 0.0
        if fg.any():
            weight = target_scores.sum(-1)[fg]  # [P]
            target_grid = target_boxes / stride
            iou = bbox_iou(pred_boxes[fg], target_grid[fg], ciou=True)
            loss_box = ((1.0 - iou) * weight).sum() / norm
            target_ltrb = bbox2dist(points, target_grid, self.reg_max)[fg]
            loss_dfl = (dfl_loss(logits[fg], target_ltrb) * weight).sum() / norm

        gb, gc, gd = self.gains
        items = torch.stack((loss_box * gb, loss_cls * gc, loss_dfl * gd))
        return items.sum() * B, items.detach()
