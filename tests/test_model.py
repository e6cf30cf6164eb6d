"""Architecture: exact published parameter counts, shapes, time handling, input errors."""

import pytest
import torch

import spikeyolo
from spikeyolo.models.yolo import StaticStem
from spikeyolo.nn.blocks import SNNBlock1, SNNBlock2, Stem
from spikeyolo.nn.units import BN_EPS, BN_MOMENTUM


@pytest.mark.parametrize(
    "scale,count", [("n", 13_271_632), ("s", 23_153_024), ("m", 47_841_856), ("l", 68_478_400)]
)
def test_published_parameter_counts(scale, count):
    model = spikeyolo.build_model(scale, nc=80)
    assert sum(p.numel() for p in model.parameters()) == count


def test_s_layout_channels_and_blocks():
    model = spikeyolo.build_model("s", nc=80)
    head = model.head
    assert [seq[0].conv.in_channels for seq in head.box] == [128, 256, 512]
    assert [seq[-1].conv.out_channels for seq in head.box] == [64, 64, 64]
    assert [seq[-1].conv.out_channels for seq in head.cls] == [80, 80, 80]
    assert [seq[0].conv.out_channels for seq in head.cls] == [128, 128, 128]  # c3 = max(ch0, min(nc, 100))
    # low stages use SNN-Block-1, high stages SNN-Block-2; repeats 1/2/3/1 at depth 0.33
    kinds = {i: type(m if not isinstance(m, torch.nn.Sequential) else m[0]) for i, m in enumerate(model.layers)}
    B1, B2 = SNNBlock1, SNNBlock2
    assert [kinds[i] for i in (2, 4, 6, 8, 12, 16, 19, 22, 25)] == [B1, B1, B2, B2, B2, B1, B1, B2, B2]
    assert [len(model.layers[i]) for i in (4, 6)] == [2, 3]
    assert model.layers[25].conv1.pw2.out_channels == 512  # ratio 1 at s
    assert spikeyolo.build_model("m").layers[25].conv1.pw2.out_channels == 1280  # ratio 2 at m
    bns = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert all(bn.eps == BN_EPS == 1e-3 and bn.momentum == BN_MOMENTUM == 0.03 for bn in bns)


def test_feature_strides_and_head_bias_init():
    model = spikeyolo.build_model("s", nc=80, width=0.125).train()
    maps = model(torch.rand(1, 3, 640, 640))
    assert [tuple(m.shape) for m in maps] == [(1, 144, 80, 80), (1, 144, 40, 40), (1, 144, 20, 20)]
    assert model.stride.tolist() == [8.0, 16.0, 32.0]
    import math

    for seq, s in zip(model.head.cls, (8, 16, 32)):
        assert torch.allclose(seq[-1].conv.bias, torch.full((80,), math.log(5 / 80 / (640 / s) ** 2)))
    for seq in model.head.box:
        assert torch.all(seq[-1].conv.bias == 1.0)


def test_eval_output_is_decoded():
    torch.manual_seed(0)
    model = spikeyolo.build_model("n", nc=3, width=0.125).eval()
    out = model(torch.rand(2, 3, 64, 96))
    assert out.shape == (2, 7, 8 * 12 + 4 * 6 + 2 * 3)
    scores = out[:, 4:]
    assert torch.all((scores > 0) & (scores < 1))
    # box centres lie around their anchor cells: level-0 anchor k sits at ((k % 12) + 0.5) * 8
    cx = out[0, 0, :96]
    anchors = (torch.arange(96) % 12 + 0.5) * 8
    assert torch.all((cx - anchors).abs() <= 8 * 16)
    assert torch.all(out[:, 2:4] >= 0)


def test_time_axis_static_and_event_frames():
    torch.manual_seed(0)
    m1 = spikeyolo.build_model("n", nc=2, width=0.125, T=3).eval()
    x = torch.rand(2, 3, 64, 64)
    # a static image is the same as event frames that repeat it T times
    assert torch.allclose(m1(x), m1(x.unsqueeze(1).repeat(1, 3, 1, 1, 1)), atol=1e-6)
    ev = spikeyolo.build_model("n", nc=2, width=0.125, T=4, in_channels=2).eval()
    assert ev(torch.rand(1, 4, 2, 64, 64)).shape[1] == 6


def test_input_errors():
    model = spikeyolo.build_model("n", nc=2, width=0.125).eval()
    with pytest.raises(ValueError, match="multiples of 32"):
        model(torch.rand(1, 3, 64, 70))
    with pytest.raises(ValueError, match="3 input channels"):
        model(torch.rand(1, 2, 64, 64))
    with pytest.raises(ValueError, match=r"\[B, C, H, W\]"):
        model(torch.rand(3, 64, 64))
    with pytest.raises(FileNotFoundError, match="not a scale"):
        spikeyolo.build_model("x")
    with pytest.raises(ValueError, match="class names"):
        spikeyolo.build_model("n", nc=2, names=["a"])


def test_training_backward_reaches_the_stem():
    model = spikeyolo.build_model("n", nc=2, width=0.125).train()
    maps = model(torch.rand(2, 3, 64, 64))
    sum(m.square().mean() for m in maps).backward()
    assert model.layers[1].conv.weight.grad.abs().sum() > 0


def test_detect_returns_raw_maps_in_eval_when_asked():
    model = spikeyolo.build_model("n", nc=3, width=0.0625).eval()
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        plain = model(x)
        decoded, maps = model(x, return_maps=True)
        after = model(x)
    assert torch.equal(decoded, plain) and torch.equal(after, plain)
    assert [tuple(m.shape) for m in maps] == [(1, 64 + 3, 8, 8), (1, 64 + 3, 4, 4), (1, 64 + 3, 2, 2)]
    assert torch.equal(model.head.decode(maps), plain)
    assert not any(hasattr(m, "return_maps") for m in model.modules())  # no mutable flag on the head


def test_static_stem_batchnorm_statistics_are_those_of_the_t_copies():
    # issue 11.14: the reference convolves the T copies of a still image, so its BN running variance uses the
    # unbiased factor of T*B*H*W values; the stem computed once must update its running stats the same way
    torch.manual_seed(0)
    static = StaticStem(3, 8, neuron=None).double().train()
    plain = Stem(3, 8, neuron=None).double().train()
    plain.load_state_dict(static.state_dict())
    x = torch.rand(2, 3, 32, 32, dtype=torch.float64)
    T = 3
    for _ in range(2):
        y_static = static(x.unsqueeze(0).expand(T, *x.shape))
        y_plain = plain(x.unsqueeze(0).expand(T, *x.shape).contiguous())  # the reference: T real copies
        torch.testing.assert_close(y_static, y_plain, rtol=1e-12, atol=1e-12)
    for name in ("running_mean", "running_var"):
        torch.testing.assert_close(getattr(static.bn, name), getattr(plain.bn, name), rtol=1e-12, atol=0)
    assert static.bn.num_batches_tracked.item() == plain.bn.num_batches_tracked.item() == 2
    # the difference being fixed is visible in float64: the factor of B*H*W values would differ
    n, N = 2 * 8 * 8, T * 2 * 8 * 8
    assert abs(n / (n - 1) - N / (N - 1)) > 1e-4


def test_layer_roles_of_the_shipped_table():
    from spikeyolo.models.yolo import layer_roles, load_spec

    # configs/spikeyolo.yaml: layer 1 the Stem, 9 the SPPF ending the backbone, 26 the Detect head
    assert layer_roles(load_spec()) == {"stem": 1, "neck_start": 10, "head": 26}
    spec = load_spec()
    spec["layers"].insert(2, [-1, 1, "SNNBlock1", [4, 7]])  # one more backbone layer moves neck and head
    assert layer_roles(spec) == {"stem": 1, "neck_start": 11, "head": 27}
