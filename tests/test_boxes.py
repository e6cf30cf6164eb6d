import math
import random

import pytest
import torch

from spikeyolo.utils.boxes import (
    bbox2dist,
    bbox_iou,
    box_iou,
    clip_boxes,
    dist2bbox,
    letterbox_ratio_pad,
    scale_boxes,
    unletterbox,
    xyxy2xywh,
)


def iou_py(a, b):
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union


def test_box_iou_hand_values():
    a = torch.tensor([[0.0, 0, 2, 2]])
    b = torch.tensor([[1.0, 1, 3, 3], [2.0, 0, 4, 2], [0.0, 0, 2, 2], [0.0, 0, 1, 2]])
    assert box_iou(a, b)[0].tolist() == pytest.approx([1 / 7, 0.0, 1.0, 0.5], abs=1e-6)


def test_box_iou_matches_loop():
    rng = random.Random(0)

    def rand_box():
        x, y = rng.uniform(0, 50), rng.uniform(0, 50)
        return [x, y, x + rng.uniform(1, 30), y + rng.uniform(1, 30)]

    a = [rand_box() for _ in range(7)]
    b = [rand_box() for _ in range(5)]
    got = box_iou(torch.tensor(a, dtype=torch.float64), torch.tensor(b, dtype=torch.float64))
    for i in range(7):
        for j in range(5):
            assert got[i, j].item() == pytest.approx(iou_py(a[i], b[j]), abs=1e-9)


def test_bbox_iou_and_ciou_by_hand():
    b1 = torch.tensor([0.0, 0, 4, 2], dtype=torch.float64)  # w 4, h 2, centre (2, 1)
    b2 = torch.tensor([1.0, 1, 3, 5], dtype=torch.float64)  # w 2, h 4, centre (2, 3)
    iou = 2 / 14  # intersection [1,3]x[1,2] = 2; union 8 + 8 - 2
    rho2 = 0**2 + 2**2
    c2 = 4**2 + 5**2  # enclosing box [0,4]x[0,5]
    v = 4 / math.pi**2 * (math.atan(2 / 4) - math.atan(4 / 2)) ** 2
    alpha = v / (1 - iou + v)
    ciou = iou - rho2 / c2 - alpha * v
    assert bbox_iou(b1, b2).item() == pytest.approx(iou, abs=1e-6)
    assert bbox_iou(b1, b2, ciou=True).item() == pytest.approx(ciou, abs=1e-6)
    # xywh inputs give the same numbers
    assert bbox_iou(xyxy2xywh(b1), xyxy2xywh(b2), xywh=True, ciou=True).item() == pytest.approx(ciou, abs=1e-6)
    # identical boxes: CIoU 1; broadcasting over leading dims
    same = bbox_iou(b1.expand(3, 4), b1.expand(3, 4), ciou=True)
    assert same.shape == (3,) and torch.allclose(same, torch.ones(3, dtype=torch.float64), atol=1e-6)


def test_ciou_gradient_finite():
    b1 = torch.tensor([[0.0, 0, 4, 2]], requires_grad=True)
    b2 = torch.tensor([[1.0, 1, 3, 5]])
    (1 - bbox_iou(b1, b2, ciou=True)).sum().backward()
    assert torch.isfinite(b1.grad).all() and b1.grad.abs().sum() > 0


def test_bbox2dist_round_trip_and_clamp():
    points = torch.tensor([[2.5, 3.5], [10.5, 0.5]])
    dist = torch.tensor([[1.0, 2.0, 3.0, 4.0], [0.25, 0.0, 14.5, 7.0]])
    boxes = dist2bbox(dist, points, xywh=False)
    assert boxes[0].tolist() == [1.5, 1.5, 5.5, 7.5]
    assert torch.allclose(bbox2dist(points, boxes, 16), dist)
    far = bbox2dist(torch.tensor([[0.5, 0.5]]), torch.tensor([[-40.0, 1.0, 0.0, 60.0]]), 16)
    assert far[0].tolist() == pytest.approx([14.99, 0.0, 0.0, 14.99])


def test_unletterbox_inverts_contract():
    orig = torch.tensor([[10.0, 20.0, 30.0, 40.0]])
    (gy, gx), (px, py) = (2.0, 3.0), (5.0, 7.0)  # input = original * gain + pad
    inp = torch.tensor([[10 * 3 + 5, 20 * 2 + 7, 30 * 3 + 5, 40 * 2 + 7]], dtype=torch.float32)
    assert torch.allclose(unletterbox(inp, ((gy, gx), (px, py))), orig)


def test_scale_boxes_letterbox_and_clip():
    # 480x640 image letterboxed into 640x640: gain 1, pad_y 80
    assert letterbox_ratio_pad((640, 640), (480, 640)) == ((1.0, 1.0), (0.0, 80.0))
    inp = torch.tensor([[0.0, 70.0, 100.0, 200.0]])
    assert scale_boxes(inp, (640, 640), (480, 640)).tolist() == [[0.0, 0.0, 100.0, 120.0]]
    assert scale_boxes(inp, (640, 640), (480, 640), clip=False).tolist() == [[0.0, -10.0, 100.0, 120.0]]
    # 960x1280 into 640x640: gain 0.5, pad_y 80; explicit ratio_pad gives the same
    rp = letterbox_ratio_pad((640, 640), (960, 1280))
    assert rp == ((0.5, 0.5), (0.0, 80.0))
    out = scale_boxes(torch.tensor([[10.0, 90.0, 20.0, 100.0]]), (640, 640), (960, 1280), ratio_pad=rp)
    assert out.tolist() == [[20.0, 20.0, 40.0, 40.0]]


def test_clip_boxes():
    b = torch.tensor([[-5.0, -1.0, 50.0, 30.0], [3.0, 4.0, 5.0, 6.0]])
    assert clip_boxes(b, (20, 40)).tolist() == [[0.0, 0.0, 40.0, 20.0], [3.0, 4.0, 5.0, 6.0]]
    assert b[0, 0] == -5.0  # input untouched


def test_centre_and_ultralytics_names_are_one_function():
    import torch

    from spikeyolo.utils.boxes import cxcywh2xyxy, xywh2xyxy, xyxy2cxcywh, xyxy2xywh

    assert xywh2xyxy is cxcywh2xyxy and xyxy2xywh is xyxy2cxcywh
    # hand-computed: centre (5, 4), size 2x6 -> corners (4, 1, 6, 7)
    assert cxcywh2xyxy(torch.tensor([5.0, 4.0, 2.0, 6.0])).tolist() == [4.0, 1.0, 6.0, 7.0]
    assert xyxy2cxcywh(torch.tensor([4.0, 1.0, 6.0, 7.0])).tolist() == [5.0, 4.0, 2.0, 6.0]


def test_letterbox_geometry_hand_computed():
    from spikeyolo.utils.boxes import letterbox_geometry

    # Gen1 sensor 240x304 into 320: gain 320/304, height round(252.63) = 253, top (320 - 253) // 2 = 33
    assert letterbox_geometry((240, 304), (320, 320)) == (253, 320, 0, 33)
    assert letterbox_geometry((100, 50), (640, 640), scaleup=False) == (100, 50, 295, 270)
    # zoom 0.5 of the fitted 253x320 and a shift of (+7, -3) pixels
    assert letterbox_geometry((240, 304), (320, 320), zoom=0.5, shift=(7, -3)) == (126, 160, 87, 94)


def test_clip_visible_hand_computed():
    import numpy as np

    from spikeyolo.utils.boxes import clip_visible

    boxes = np.array([[0, 0, 10, 10], [30, 30, 40, 40], [6, 2, 8, 4]], np.float32)
    clipped, keep = clip_visible(boxes, (5, 0, 20, 20), 0.5)  # box 0: half inside; box 1: outside; box 2: inside
    assert clipped.tolist() == [[5, 0, 10, 10], [20, 20, 20, 20], [6, 2, 8, 4]] and clipped.dtype == np.float32
    assert keep.tolist() == [True, False, True]
    assert clip_visible(boxes, (5, 0, 20, 20), 0.6)[1].tolist() == [False, False, True]
