import pytest
import torch

from spikeyolo.utils import nms as nms_mod
from spikeyolo.utils.nms import nms_torch, non_max_suppression


def iou_py(a, b):
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


def brute_force(pred, conf_thres, iou_thres, max_det, agnostic=False, classes=None, multi_label=False):
    """Plain-Python reference: candidates, then greedy suppression per class, then the top max_det."""
    out = []
    for img in pred.tolist():
        nc = len(img) - 4
        A = len(img[0])
        cands = []
        for a in range(A):
            cx, cy, w, h = (img[k][a] for k in range(4))
            box = (cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2)
            scores = [img[4 + c][a] for c in range(nc)]
            best = max(scores)
            pairs = list(zip(scores, range(nc))) if multi_label else [(best, scores.index(best))]
            for s, c in pairs:
                if s > conf_thres and (classes is None or c in classes):
                    cands.append((s, c, box))
        cands.sort(key=lambda t: -t[0])
        kept = []
        for s, c, box in cands:
            if all(iou_py(box, kb) <= iou_thres for ks, kc, kb in kept if agnostic or kc == c):
                kept.append((s, c, box))
        out.append(kept[:max_det])
    return out


def as_set(rows):
    """Reference detections as a sorted list of (score, class, x1, y1, x2, y2)."""
    return sorted((s, c, *box) for s, c, box in rows)


def tensor_set(det):
    return sorted((r[4], int(r[5]), *r[:4]) for r in det.tolist())


def same(det, rows):
    a, b = tensor_set(det), as_set(rows)
    return len(a) == len(b) and all(x[1] == y[1] and x == pytest.approx(y, abs=1e-3) for x, y in zip(a, b))


def random_pred(B=2, nc=3, A=300, seed=0):
    g = torch.Generator().manual_seed(seed)
    xy = torch.rand(B, 2, A, generator=g) * 100
    wh = torch.rand(B, 2, A, generator=g) * 30 + 2
    scores = torch.rand(B, nc, A, generator=g)
    return torch.cat((xy, wh, scores), 1).double()


@pytest.mark.parametrize("agnostic", [False, True])
@pytest.mark.parametrize("multi_label", [False, True])
def test_nms_matches_brute_force(agnostic, multi_label):
    pred = random_pred()
    got = non_max_suppression(pred, conf_thres=0.3, iou_thres=0.45, max_det=1000, agnostic=agnostic,
                              multi_label=multi_label)
    ref = brute_force(pred, 0.3, 0.45, 1000, agnostic=agnostic, multi_label=multi_label)
    for det, r in zip(got, ref):
        assert det.shape[1] == 6 and len(r) > 5
        assert same(det, r)
        assert (det[1:, 4] <= det[:-1, 4]).all()  # sorted by score


def test_nms_max_det_and_classes():
    pred = random_pred(seed=3)
    got = non_max_suppression(pred, conf_thres=0.1, iou_thres=0.5, max_det=7, classes=[0, 2])
    ref = brute_force(pred, 0.1, 0.5, 7, classes=[0, 2])
    for det, r in zip(got, ref):
        assert len(det) == 7 and same(det, r)
        assert set(det[:, 5].tolist()) <= {0.0, 2.0}


def test_nms_torch_hand_case_and_empty():
    boxes = torch.tensor([[0.0, 0, 10, 10], [1.0, 0, 11, 10], [20.0, 20, 30, 30], [0.0, 0, 10, 5]])
    scores = torch.tensor([0.9, 0.8, 0.7, 0.95])
    # IoU(0,1) = 90/110 > 0.5 -> 1 suppressed; IoU(3,0) = 0.5 (not > 0.5) -> both kept
    assert nms_torch(boxes, scores, 0.5).tolist() == [3, 0, 2]
    assert nms_torch(boxes[:0], scores[:0], 0.5).numel() == 0
    out = non_max_suppression(torch.zeros(1, 6, 10), conf_thres=0.5)
    assert len(out) == 1 and out[0].shape == (0, 6)


def test_uses_pure_torch_without_torchvision(monkeypatch):
    monkeypatch.setattr(nms_mod, "_tv_nms", None)
    pred = random_pred(B=1, seed=5)
    got = non_max_suppression(pred, conf_thres=0.2, iou_thres=0.6)
    assert same(got[0], brute_force(pred, 0.2, 0.6, 300)[0])


def greedy_py(boxes, scores, thr):
    order = sorted(range(len(scores)), key=lambda i: -scores[i])
    kept = []
    for i in order:
        if all(iou_py(boxes[i], boxes[k]) <= thr for k in kept):
            kept.append(i)
    return kept


@pytest.mark.parametrize("block", [1, 7, 512])
def test_nms_torch_blocks_and_chains(block):
    # a chain: each box overlaps the next (IoU 2/3) but not the one after (3/7) -> keep 0, 2, 4, ...
    chain = torch.tensor([[float(2 * k), 0.0, 2 * k + 10.0, 10.0] for k in range(9)])
    assert iou_py(chain[0].tolist(), chain[1].tolist()) == pytest.approx(2 / 3, abs=1e-6)
    assert nms_torch(chain, torch.linspace(1, 0.1, 9), 0.5, block=block).tolist() == [0, 2, 4, 6, 8]
    g = torch.Generator().manual_seed(7)
    xy = torch.rand(200, 2, generator=g) * 60
    boxes = torch.cat((xy, xy + torch.rand(200, 2, generator=g) * 25 + 3), 1).double()
    scores = torch.rand(200, generator=g).double()
    ref = greedy_py(boxes.tolist(), scores.tolist(), 0.4)
    assert nms_torch(boxes, scores, 0.4, block=block).tolist() == ref
    assert nms_torch(boxes, scores, 0.4, max_keep=5, block=block).tolist() == ref[:5]
