import math
from types import SimpleNamespace

import pytest
import torch

from spikeyolo.engine.assigner import TaskAlignedAssigner
from spikeyolo.engine.loss import DetectionLoss


def iou_py(a, b):
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


def ciou_py(a, b):
    """Complete-IoU from its definition (Zheng et al. 2020): IoU - rho^2/c^2 - alpha*v."""
    iou = iou_py(a, b)
    rho2 = ((a[0] + a[2]) / 2 - (b[0] + b[2]) / 2) ** 2 + ((a[1] + a[3]) / 2 - (b[1] + b[3]) / 2) ** 2
    c2 = (max(a[2], b[2]) - min(a[0], b[0])) ** 2 + (max(a[3], b[3]) - min(a[1], b[1])) ** 2
    v = 4 / math.pi**2 * (math.atan((b[2] - b[0]) / (b[3] - b[1])) - math.atan((a[2] - a[0]) / (a[3] - a[1]))) ** 2
    return iou - rho2 / c2 - (v / (1 - iou + v) * v if v else 0.0)


# ---------------------------------------------------------------- assigner


def _assign(assigner, scores, pboxes, points, labels, gts, mask=None):
    scores = torch.tensor(scores)[None]
    pboxes = torch.tensor(pboxes)[None]
    points = torch.tensor(points)
    labels = torch.tensor(labels, dtype=torch.float32).view(1, -1, 1)
    gts = torch.tensor(gts).view(1, -1, 4)
    mask = torch.ones_like(labels, dtype=torch.bool) if mask is None else torch.tensor(mask).view(1, -1, 1)
    return assigner(scores, pboxes, points, labels, gts, mask)


def test_assigner_one_gt_inside_outside():
    gt = [0.0, 0.0, 4.0, 2.0]
    points = [[1.0, 1.0], [3.0, 1.0], [5.0, 1.0], [7.0, 1.0]]  # first two inside the GT
    pboxes = [gt, [2.0, 0.0, 4.0, 2.0], gt, gt]  # IoU 1, 0.5, (outside anchors predict the GT too)
    scores = [[0.5, 0.5]] * 4
    labels, boxes, tscores, fg, gt_idx = _assign(TaskAlignedAssigner(10, 2), scores, pboxes, points, [1], [gt])
    assert fg[0].tolist() == [True, True, False, False]
    assert labels[0].tolist() == [1, 1, 2, 2]  # background = num_classes
    assert boxes[0, 0].tolist() == gt and boxes[0, 1].tolist() == gt and boxes[0, 2].abs().sum() == 0
    # metric s^0.5 * CIoU^6; normalized by the GT's max metric, times its max CIoU (1)
    expected = [[0, 1.0], [0, ciou_py(gt, pboxes[1]) ** 6], [0, 0], [0, 0]]
    assert torch.allclose(tscores[0], torch.tensor(expected), atol=1e-5)
    # top-1: only the best-aligned anchor
    _, _, tscores1, fg1, _ = _assign(TaskAlignedAssigner(1, 2), scores, pboxes, points, [1], [gt])
    assert fg1[0].tolist() == [True, False, False, False]


def test_assigner_anchor_on_two_gts_keeps_highest_iou():
    A_box, B_box = [0.0, 0.0, 10.0, 10.0], [2.0, 0.0, 12.0, 10.0]
    pred = [0.5, 0.0, 10.5, 10.0]
    iou_a, iou_b = ciou_py(pred, A_box), ciou_py(pred, B_box)
    s_a, s_b = 0.05, 0.9  # class 0 for A, class 1 for B
    # precondition: the alignment metric prefers B, the CIoU prefers A
    assert s_b**0.5 * iou_b**6 > s_a**0.5 * iou_a**6 and iou_a > iou_b
    points = [[5.0, 5.0], [11.0, 5.0], [30.0, 5.0]]  # in both, in B only, in none
    pboxes = [pred, B_box, pred]
    scores = [[s_a, s_b]] * 3
    labels, boxes, tscores, fg, gt_idx = _assign(
        TaskAlignedAssigner(10, 2), scores, pboxes, points, [0, 1], [A_box, B_box]
    )
    assert fg[0].tolist() == [True, True, False]
    assert labels[0, :2].tolist() == [0, 1] and gt_idx[0, :2].tolist() == [0, 1]
    assert boxes[0, 0].tolist() == A_box and boxes[0, 1].tolist() == B_box
    # A's only positive is anchor 0: score = its max CIoU; B's best positive has CIoU 1
    assert tscores[0, 0].tolist() == pytest.approx([iou_a, 0.0], abs=1e-5)
    assert tscores[0, 1].tolist() == pytest.approx([0.0, 1.0], abs=1e-5)


def test_assigner_ranks_candidates_by_ciou_not_iou():
    # issue 11.14a: top-1 of one GT. Anchor 0 predicts a shifted box (higher IoU, centre off), anchor 1 a shrunk
    # concentric box (lower IoU, no centre or aspect penalty): IoU prefers anchor 0, CIoU (the reference) anchor 1
    gt = [0.0, 0.0, 10.0, 10.0]
    shifted, shrunk = [10 / 9, 0.0, 10 + 10 / 9, 10.0], [0.536, 0.536, 9.464, 9.464]
    assert iou_py(gt, shifted) > iou_py(gt, shrunk) and ciou_py(gt, shifted) < ciou_py(gt, shrunk)
    points = [[3.0, 5.0], [7.0, 5.0]]
    labels, _, tscores, fg, _ = _assign(TaskAlignedAssigner(1, 1), [[0.5], [0.5]], [shifted, shrunk], points, [0],
                                        [gt])
    assert fg[0].tolist() == [False, True]
    assert tscores[0, 1, 0].item() == pytest.approx(ciou_py(gt, shrunk), abs=1e-5)


def test_assigner_conflict_goes_to_best_overlap_among_all_containing_gts():
    # issue 11.14b: anchor X=(5,5) is the only candidate of GT1 and GT2 (so in both top-1s); GT3 also contains X
    # but its top-1 is anchor Y. The reference gives X to the GT of highest overlap among all GTs containing it:
    # GT3, although X is not in GT3's top-k (restricting to GT1/GT2 would give GT1).
    gt1, gt2, gt3 = [0.0, 0.0, 10.0, 10.0], [2.0, 2.0, 8.0, 8.0], [1.0, 1.0, 20.0, 9.0]
    p_x, p_y = [1.0, 1.0, 18.0, 9.0], gt3
    over = [max(ciou_py(g, p_x), 0.0) for g in (gt1, gt2, gt3)]
    assert over[2] > over[0] > over[1]
    scores = [[0.9, 0.9], [0.9, 0.9]]
    assert 0.9**0.5 * ciou_py(gt3, p_y) ** 6 > 0.9**0.5 * over[2] ** 6  # Y is GT3's top-1
    labels, boxes, _, fg, gt_idx = _assign(TaskAlignedAssigner(1, 2), scores, [p_x, p_y], [[5.0, 5.0], [15.0, 5.0]],
                                           [0, 0, 1], [gt1, gt2, gt3])
    assert fg[0].tolist() == [True, True]
    assert gt_idx[0].tolist() == [2, 2] and labels[0].tolist() == [1, 1] and boxes[0, 0].tolist() == gt3
    ref = _reference_assign(scores, [p_x, p_y], [[5.0, 5.0], [15.0, 5.0]], [0, 0, 1], [gt1, gt2, gt3],
                            [True] * 3, 1)
    assert ref["conflicts"] == 1 and ref[0][0] == 2 and ref[1][0] == 2


def test_assigner_zero_and_padded_gt():
    a = TaskAlignedAssigner(10, 3)
    scores = torch.rand(2, 5, 3)
    pboxes = torch.tensor([[0.0, 0, 4, 4]]).expand(2, 5, 4)
    points = torch.tensor([[1.0, 1.0], [2.0, 2.0], [3.0, 3.0], [9.0, 9.0], [2.0, 1.0]])
    # no GT at all
    labels, boxes, tscores, fg, _ = a(scores, pboxes, points, torch.zeros(2, 0, 1), torch.zeros(2, 0, 4),
                                      torch.zeros(2, 0, 1, dtype=torch.bool))
    assert not fg.any() and tscores.sum() == 0 and (labels == 3).all() and boxes.shape == (2, 5, 4)
    # image 0 has one GT, image 1 only a padding row whose box would contain anchors
    gts = torch.tensor([[[0.0, 0, 4, 4]], [[0.0, 0, 4, 4]]])
    mask = torch.tensor([[[True]], [[False]]])
    labels, boxes, tscores, fg, _ = a(scores, pboxes, points, torch.ones(2, 1, 1), gts, mask)
    assert fg[0].tolist() == [True, True, True, False, True]
    assert not fg[1].any() and tscores[1].sum() == 0


# ---------------------------------------------------------------- loss


def _perfect_maps(gt_grid, nc, cls_id, h, w, reg_max=16, margin=20.0):
    """One level: DFL logits peaked on the exact (integer) distances to the GT, class logits +-10."""
    x = torch.full((1, 4 * reg_max + nc, h, w), 0.0)
    inside = []
    for i in range(h):
        for j in range(w):
            px, py = j + 0.5, i + 0.5
            d = [px - gt_grid[0], py - gt_grid[1], gt_grid[2] - px, gt_grid[3] - py]
            if min(d) > 0:
                inside.append((i, j))
            for k, v in enumerate(d):
                b = int(round(min(max(v, 0), reg_max - 1)))
                x[0, k * reg_max + b, i, j] = margin
    x[0, 4 * reg_max :] = -10.0
    for i, j in inside:
        x[0, 4 * reg_max + cls_id, i, j] = 10.0
    return x, inside


def _batch(boxes_xywh_norm, cls, idx):
    return {"cls": torch.tensor(cls, dtype=torch.float32).view(-1, 1),
            "bboxes": torch.tensor(boxes_xywh_norm, dtype=torch.float32).view(-1, 4),
            "batch_idx": torch.tensor(idx, dtype=torch.float32)}


def test_perfect_prediction_near_zero_and_better_than_wrong():
    nc, stride, h, w = 2, 8, 8, 8  # one level, 64x64 input
    gt_grid = [0.5, 0.5, 4.5, 3.5]  # edges half a cell from anchor centres -> integer distances
    maps, inside = _perfect_maps(gt_grid, nc, 1, h, w)
    assert len(inside) == 6
    x1, y1, x2, y2 = (v * stride / 64 for v in gt_grid)
    batch = _batch([[(x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1]], [1], [0])
    loss = DetectionLoss(nc=nc, strides=[stride])
    total, items = loss([maps], batch)
    assert items[0] < 1e-4 and items[2] < 1e-4
    # all 6 inside anchors are positives with target 1: cls loss = sum of BCE terms / 6, times gain 0.5
    expected_cls = 0.5 * (h * w * nc) * math.log1p(math.exp(-10.0)) / 6
    # (torch's float32 BCE-with-logits is only ~1% accurate for a tiny loss at logit -10)
    assert items[1].item() == pytest.approx(expected_cls, rel=2e-2)
    assert total.item() == pytest.approx(items.sum().item())  # batch size 1
    # shift every DFL peak by one bin: worse box and DFL losses
    wrong = maps.clone()
    wrong[0, : 4 * 16] = torch.roll(maps[0, : 4 * 16], 1, dims=0)
    _, items_w = loss([wrong], batch)
    assert items_w[0] > items[0] + 0.1 and items_w[2] > items[2] + 1.0


def test_empty_image_cls_only():
    nc = 3
    maps = [torch.zeros(2, 64 + nc, 8, 8), torch.zeros(2, 64 + nc, 4, 4), torch.zeros(2, 64 + nc, 2, 2)]
    loss = DetectionLoss(nc=nc, strides=[8, 16, 32])
    total, items = loss(maps, _batch([], [], []))
    assert items[0] == 0 and items[2] == 0
    # all targets 0, all logits 0: each anchor/class term is log 2; normalizer 1; gain 0.5; x batch size 2
    terms = 2 * (64 + 16 + 4) * nc
    assert items[1].item() == pytest.approx(0.5 * terms * math.log(2), rel=1e-5)
    assert total.item() == pytest.approx(2 * items.sum().item(), rel=1e-6)


def test_box_on_cell_boundaries_assignment_and_gradient():
    nc = 2
    torch.manual_seed(0)
    maps = [torch.randn(2, 64 + nc, 8, 8, requires_grad=True), torch.randn(2, 64 + nc, 4, 4, requires_grad=True),
            torch.randn(2, 64 + nc, 2, 2, requires_grad=True)]
    # image 0: box [8, 8, 24, 24] px: edges on stride-8 cell borders and through stride-16 anchor centres
    # image 1: a large box beyond the DFL range (distances clamped)
    batch = _batch([[16 / 64, 16 / 64, 16 / 64, 16 / 64], [0.5, 0.5, 1.0, 1.0]], [0, 1], [0, 1])
    loss = DetectionLoss(SimpleNamespace(nc=nc, reg_max=16, stride=torch.tensor([8.0, 16.0, 32.0])))
    seen = {}
    inner = loss.assigner

    def recording(*args):
        out = inner(*args)
        seen["fg"], seen["points"] = out[3], args[2]
        return out

    loss.assigner = recording
    total, items = loss(maps, batch)
    # brute force: anchors strictly inside [8, 8, 24, 24]
    inside = [k for k, (px, py) in enumerate(seen["points"].tolist()) if 8 < px < 24 and 8 < py < 24]
    assert len(inside) == 5  # 4 stride-8 centres (12/20, 12/20) + the stride-32 centre (16, 16)
    assert set(seen["fg"][0].nonzero()[:, 0].tolist()) <= set(inside)
    assert seen["fg"][0].sum() > 0 and seen["fg"][1].sum() > 0
    assert torch.isfinite(items).all() and (items > 0).all()
    total.backward()
    for m in maps:  # class logits of every anchor get a gradient; DFL logits where there are positives
        assert torch.isfinite(m.grad).all() and (m.grad[:, 64:] != 0).all()
    assert maps[0].grad[:, :64].abs().sum() > 0


def test_autocast_and_model_constructor():
    model = SimpleNamespace(nc=1, reg_max=16, stride=torch.tensor([8.0, 16.0, 32.0]))
    loss = DetectionLoss(model)
    torch.manual_seed(1)
    maps = [torch.randn(1, 65, s, s).bfloat16() for s in (8, 4, 2)]
    batch = _batch([[0.4, 0.5, 0.3, 0.2]], [0], [0])
    with torch.autocast("cpu", dtype=torch.bfloat16):
        total, items = loss(maps, batch)
    assert total.dtype == torch.float32 and torch.isfinite(items).all()
    ref_total, ref_items = loss([m.float() for m in maps], batch)
    assert torch.allclose(items, ref_items, rtol=1e-5)


def test_constructor_needs_args():
    with pytest.raises(ValueError):
        DetectionLoss(nc=2)


def _reference_assign(scores, pboxes, points, labels, gts, valid, topk, alpha=0.5, beta=6.0):
    """Plain-Python TAL for one image, with the rules of the reference's assigner (ultralytics 8.0.x):
    CIoU (clamped at 0) in the metric; an anchor in several GTs' top-k goes to the GT with the highest overlap
    among all GTs that contain it (first one on ties). Returns {anchor: (gt, soft score)}."""
    A, n = len(points), len(gts)
    metric, ious, pos = {}, {}, {}
    for g in range(n):
        if not valid[g]:
            continue
        x1, y1, x2, y2 = gts[g]
        cands = [a for a in range(A) if min(points[a][0] - x1, points[a][1] - y1, x2 - points[a][0],
                                            y2 - points[a][1]) > 0]
        for a in cands:
            ious[g, a] = max(ciou_py(gts[g], pboxes[a]), 0.0)
            metric[g, a] = scores[a][labels[g]] ** alpha * ious[g, a] ** beta
        for a in sorted(cands, key=lambda a: -metric[g, a])[:topk]:
            pos.setdefault(a, []).append(g)
    owner = {a: gs[0] if len(gs) == 1 else max(range(n), key=lambda g: (ious.get((g, a), 0.0), -g))
             for a, gs in pos.items()}
    out = {"conflicts": sum(len(gs) > 1 for gs in pos.values())}
    for a, g in owner.items():
        mine = [b for b, h in owner.items() if h == g]
        max_m = max(metric[g, b] for b in mine)
        max_iou = max(ious[g, b] for b in mine)
        out[a] = (g, metric[g, a] / max_m * max_iou)
    return out


def test_reference_assign_resolves_conflict():
    # the reference itself on the hand case above: anchor 0 is in both GTs' top-k and goes to A (higher IoU)
    ref = _reference_assign([[0.05, 0.9]], [[0.5, 0.0, 10.5, 10.0]], [[5.0, 5.0]], [0, 1],
                            [[0.0, 0.0, 10.0, 10.0], [2.0, 0.0, 12.0, 10.0]], [True, True], 10)
    assert ref["conflicts"] == 1 and ref[0][0] == 0


def test_assigner_matches_brute_force():
    g = torch.Generator().manual_seed(0)
    B, C, topk, n = 2, 3, 6, 6
    points = torch.stack(torch.meshgrid(torch.arange(10.0) + 0.5, torch.arange(6.0) + 0.5, indexing="xy"), -1)
    points = points.reshape(-1, 2).double()
    A = len(points)
    half = torch.rand(B, A, 4, generator=g, dtype=torch.float64) * 2 + 0.2
    pboxes = torch.cat((points - half[..., :2], points + half[..., 2:]), -1)  # each contains its anchor
    scores = torch.rand(B, A, C, generator=g, dtype=torch.float64) * 0.9 + 0.05
    xy = torch.rand(B, n, 2, generator=g, dtype=torch.float64) * torch.tensor([6.0, 3.0], dtype=torch.float64)
    gts = torch.cat((xy, xy + 2 + torch.rand(B, n, 2, generator=g, dtype=torch.float64) * 3), -1)
    labels = torch.randint(0, C, (B, n, 1), generator=g)
    valid = torch.tensor([[True] * n, [True] * (n - 2) + [False] * 2])
    t_labels, t_boxes, t_scores, fg, gt_idx = TaskAlignedAssigner(topk, C)(
        scores, pboxes, points, labels, gts, valid[..., None])
    conflicts = 0
    for b in range(B):
        ref = _reference_assign(scores[b].tolist(), pboxes[b].tolist(), points.tolist(), labels[b, :, 0].tolist(),
                                gts[b].tolist(), valid[b].tolist(), topk)
        conflicts += ref.pop("conflicts")
        assert set(fg[b].nonzero()[:, 0].tolist()) == set(ref)
        expected = torch.zeros(A, C, dtype=torch.float64)
        for a, (gi, s) in ref.items():
            assert gt_idx[b, a] == gi and t_labels[b, a] == labels[b, gi, 0]
            assert torch.equal(t_boxes[b, a], gts[b, gi])
            expected[a, labels[b, gi, 0]] = s
        assert torch.allclose(t_scores[b], expected, atol=1e-9)
    assert conflicts >= 3  # anchors in the top-k of several GTs were resolved the same way
