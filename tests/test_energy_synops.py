"""Measured synaptic operations against a brute-force loop, and how they relate to the MACs x rate estimate."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from spikeyolo.energy import ConvSpec, synops
from spikeyolo.nn.units import expand_to_binary


def brute_force(x: torch.Tensor, conv: nn.Conv2d) -> int:
    """Count, for every output (image, channel, position) and every kernel tap that lands inside the unpadded
    input, the taps whose input is 1 (binary x) or the input value (integer x)."""
    N, C, H, W = x.shape
    k, s, p, g = conv.kernel_size[0], conv.stride[0], conv.padding[0], conv.groups
    Ho, Wo = (H + 2 * p - k) // s + 1, (W + 2 * p - k) // s + 1
    cin_g, cout_g = C // g, conv.out_channels // g
    total = 0
    for n in range(N):
        for o in range(conv.out_channels):
            group = o // cout_g
            for i in range(Ho):
                for j in range(Wo):
                    for c in range(group * cin_g, (group + 1) * cin_g):
                        for a in range(k):
                            for b in range(k):
                                y, xx = i * s - p + a, j * s - p + b
                                if 0 <= y < H and 0 <= xx < W:
                                    total += int(x[n, c, y, xx])
    return total


def estimate(x: torch.Tensor, conv: nn.Conv2d) -> float:
    """The paper's estimate: dense MACs (zero padding included) x mean input, for all N images."""
    N, C, H, W = x.shape
    out = conv(x)
    macs = C * conv.out_channels * conv.kernel_size[0] ** 2 * out.shape[-2] * out.shape[-1] // conv.groups
    return N * macs * float(x.double().mean())


@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("groups", [1, 2, 4])
def test_binary_3x3_padded_grouped_equals_brute_force(stride, groups):
    g = torch.Generator().manual_seed(stride * 10 + groups)
    x = (torch.rand(2, 4, 5, 6, generator=g) < 0.4).float()
    conv = nn.Conv2d(4, 8, 3, stride, 1, groups=groups)
    assert synops(x, ConvSpec.of(conv)) == brute_force(x, conv)


def test_integer_counts_equal_their_binary_virtual_steps():
    g = torch.Generator().manual_seed(3)
    counts = torch.randint(0, 5, (1, 2, 6, 5, 5), generator=g).float()  # [T, B, C, H, W], D = 4
    conv = nn.Conv2d(6, 4, 3, 1, 1, groups=2)
    spec = ConvSpec.of(conv)
    binary = expand_to_binary(counts, 4)  # [T*D, B, C, H, W]
    assert set(binary.unique().tolist()) <= {0.0, 1.0}
    assert synops(binary.flatten(0, 1), spec) == synops(counts.flatten(0, 1), spec) == brute_force(
        counts.flatten(0, 1), conv)


def test_1x1_stride1_equals_estimate_exactly():
    g = torch.Generator().manual_seed(4)
    x = torch.randint(0, 5, (3, 8, 7, 9), generator=g).float()
    for groups in (1, 4):
        conv = nn.Conv2d(8, 12, 1, groups=groups)
        # every input value reaches the Cout / groups outputs of its group at its own position
        assert synops(x, ConvSpec.of(conv)) == 12 // groups * float(x.sum()) == brute_force(x, conv)
        assert synops(x, ConvSpec.of(conv)) == pytest.approx(estimate(x, conv), rel=1e-12)


def test_3x3_interior_events_equal_estimate_by_hand():
    # two events in the interior of a 1-channel 5x5 map: each has all 9 taps inside, so fan-out = 9 * Cout
    x = torch.zeros(1, 1, 5, 5)
    x[0, 0, 2, 2] = x[0, 0, 1, 3] = 1
    conv = nn.Conv2d(1, 3, 3, 1, 1)
    assert synops(x, ConvSpec.of(conv)) == 2 * 9 * 3 == 54
    assert estimate(x, conv) == pytest.approx(54)  # 1*3*9*25 MACs * 2/25
    # an event in a corner reaches only 4 of the 9 output positions: the estimate still charges 9
    x[0, 0, 0, 0] = 1
    assert synops(x, ConvSpec.of(conv)) == 54 + 4 * 3
    assert estimate(x, conv) == pytest.approx(54 + 9 * 3)


def test_stride1_measured_never_exceeds_estimate():
    g = torch.Generator().manual_seed(5)
    for k in (3, 5, 7):
        x = (torch.rand(2, 4, 9, 11, generator=g) < 0.3).float()
        for groups in (1, 4):
            conv = nn.Conv2d(4, 8, k, 1, k // 2, groups=groups)
            measured, est = synops(x, ConvSpec.of(conv)), estimate(x, conv)
            assert measured < est  # random inputs have events in the border band
            inner = x.clone()
            inner[..., : k // 2, :] = inner[..., -(k // 2):, :] = 0
            inner[..., : k // 2] = inner[..., -(k // 2):] = 0
            assert synops(inner, ConvSpec.of(conv)) == pytest.approx(estimate(inner, conv), rel=1e-12)
    # all-ones input: the estimate minus the measured count = taps on padding
    x = torch.ones(1, 1, 4, 4)
    conv = nn.Conv2d(1, 1, 3, 1, 1)
    assert estimate(x, conv) - synops(x, ConvSpec.of(conv)) == pytest.approx(9 * 16 - 100)  # 100 taps inside


def test_strided_conv_can_exceed_estimate():
    # 3x3 stride 2: odd rows/columns are reached by two output positions each, even ones by one. Events on odd
    # positions have fan-out 4 > the estimate's average 9/4: the estimate is no bound for strided convs.
    x = torch.zeros(1, 1, 8, 8)
    x[0, 0, 1::2, 1::2] = 1
    x[0, 0, 7, :] = x[0, 0, :, 7] = 0  # keep off the last row/column, where the second output is missing
    conv = nn.Conv2d(1, 1, 3, 2, 1)
    assert synops(x, ConvSpec.of(conv)) == 9 * 4 == brute_force(x, conv)
    assert estimate(x, conv) == pytest.approx(9 * 9 / 4)
