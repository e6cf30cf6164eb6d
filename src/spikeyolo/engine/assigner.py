"""Task-aligned label assignment (Feng et al., "TOOD: Task-aligned One-stage Object Detection", ICCV 2021).

For every ground-truth box the candidates are the anchors whose centre lies strictly inside it. Each candidate
gets the alignment metric ``t = s^alpha * CIoU^beta`` (``s``: the predicted score of the GT's class at that
anchor, ``CIoU``: the Complete-IoU, clamped at 0, between the predicted box at that anchor and the GT box). The
``topk`` candidates by ``t`` become positives of that GT. An anchor positive for several GTs goes to the GT it
overlaps most (highest CIoU) among *all* GTs it is a candidate of, even one whose top-k it was not in.
The classification target of a positive anchor is soft: ``t / max_t(GT) * max_CIoU(GT)``, so the best-aligned
anchor of each GT is trained towards that GT's best overlap.

These are the rules of the reference's assigner (ultralytics 8.0.x ``TaskAlignedAssigner``, used by SpikeYOLO);
``tests/test_loss.py`` checks them against a loop-by-loop implementation of the same rules.
"""

from __future__ import annotations

import torch
from torch import nn

from ..utils.boxes import bbox_iou


class TaskAlignedAssigner(nn.Module):
    """Assign ground truth to anchors by the task-alignment metric.

    Args:
        topk: positives per GT box.
        num_classes: number of classes ``C``.
        alpha, beta: exponents of the classification score and the IoU in the metric.
        eps: guards divisions and the strict inside-the-box test.
    """

    def __init__(self, topk: int = 10, num_classes: int = 80, alpha: float = 0.5, beta: float = 6.0,
                 eps: float = 1e-9):
        super().__init__()
        self.topk, self.num_classes, self.alpha, self.beta, self.eps = topk, num_classes, alpha, beta, eps

    @torch.no_grad()
    def forward(self, pd_scores: torch.Tensor, pd_bboxes: torch.Tensor, anc_points: torch.Tensor,
                gt_labels: torch.Tensor, gt_bboxes: torch.Tensor, mask_gt: torch.Tensor):
        """
        Args:
            pd_scores: ``[B, A, C]`` predicted class probabilities (after sigmoid).
            pd_bboxes: ``[B, A, 4]`` predicted boxes, xyxy, same units as ``anc_points`` and ``gt_bboxes``.
            anc_points: ``[A, 2]`` anchor centres (x, y).
            gt_labels: ``[B, n, 1]`` (or ``[B, n]``) class ids of the padded GT.
            gt_bboxes: ``[B, n, 4]`` xyxy GT boxes.
            mask_gt: ``[B, n, 1]`` (or ``[B, n]``) 1 for real GT, 0 for padding.

        Returns:
            target_labels ``[B, A]`` long (``num_classes`` where background),
            target_bboxes ``[B, A, 4]`` (the assigned GT box; zeros where background),
            target_scores ``[B, A, C]`` soft one-hot targets (zeros where background),
            fg_mask ``[B, A]`` bool,
            target_gt_idx ``[B, A]`` long, index of the assigned GT in ``n`` (0 where background).
        """
        B, A, C = pd_scores.shape
        n = gt_bboxes.shape[1]
        device = pd_scores.device
        if n == 0:
            return (
                torch.full((B, A), self.num_classes, dtype=torch.long, device=device),
                torch.zeros((B, A, 4), dtype=pd_bboxes.dtype, device=device),
                torch.zeros((B, A, C), dtype=pd_scores.dtype, device=device),
                torch.zeros((B, A), dtype=torch.bool, device=device),
                torch.zeros((B, A), dtype=torch.long, device=device),
            )
        labels = gt_labels.reshape(B, n).long()
        valid = mask_gt.reshape(B, n).bool()

        # candidates: anchor centre strictly inside the GT box (and the GT is real)
        x, y = anc_points[:, 0], anc_points[:, 1]
        g = gt_bboxes[:, :, None, :]  # [B, n, 1, 4]
        margin = torch.minimum(torch.minimum(x - g[..., 0], y - g[..., 1]),
                               torch.minimum(g[..., 2] - x, g[..., 3] - y))
        cand = (margin > self.eps) & valid[:, :, None]  # [B, n, A]

        # CIoU of predicted and GT boxes, and the predicted score of the GT's class, at candidates only
        b_i, g_i, a_i = cand.nonzero(as_tuple=True)
        iou = torch.zeros(cand.shape, dtype=pd_bboxes.dtype, device=device)
        iou[b_i, g_i, a_i] = bbox_iou(gt_bboxes[b_i, g_i], pd_bboxes[b_i, a_i], ciou=True).clamp(min=0).to(iou.dtype)
        score = torch.zeros_like(iou)
        score[b_i, g_i, a_i] = pd_scores[b_i, a_i, labels[b_i, g_i].clamp(0, C - 1)].to(iou.dtype)
        metric = score.pow(self.alpha) * iou.pow(self.beta)

        # top-k candidates per GT
        k = min(self.topk, A)
        top = metric.topk(k, dim=-1).indices  # [B, n, k]
        in_top = torch.zeros_like(cand).scatter_(-1, top, True)
        pos = in_top & cand  # [B, n, A]

        # an anchor positive for several GTs goes to the GT with the highest overlap among all GTs containing it
        # (iou is 0 outside the candidates), as the reference does
        multi = pos.sum(1, keepdim=True) > 1  # [B, 1, A]
        if multi.any():
            best = iou.argmax(1, keepdim=True)  # [B, 1, A]
            best_onehot = torch.zeros_like(pos).scatter_(1, best, True)
            pos = torch.where(multi, best_onehot, pos)

        fg = pos.any(1)  # [B, A]
        gt_idx = pos.to(torch.uint8).argmax(1)  # [B, A]
        target_labels = labels.gather(1, gt_idx)
        target_bboxes = gt_bboxes.gather(1, gt_idx[..., None].expand(B, A, 4)) * fg[..., None]
        target_labels = torch.where(fg, target_labels, torch.full_like(target_labels, self.num_classes))

        # soft scores: metric normalized per GT, scaled by that GT's best IoU among its positives
        metric = metric * pos
        max_metric = metric.amax(-1, keepdim=True)  # [B, n, 1]
        max_iou = (iou * pos).amax(-1, keepdim=True)
        norm = (metric * max_iou / (max_metric + self.eps)).amax(1)  # [B, A]
        onehot = torch.zeros((B, A, C), dtype=pd_scores.dtype, device=device)
        onehot.scatter_(-1, target_labels.clamp(max=C - 1)[..., None], 1.0)
        target_scores = onehot * (fg[..., None] * norm[..., None]).to(pd_scores.dtype)
        gt_idx = gt_idx * fg
        return target_labels, target_bboxes, target_scores, fg, gt_idx
