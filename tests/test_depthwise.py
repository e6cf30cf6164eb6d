"""The depthwise conv with the fast CPU weight gradient against nn.Conv2d's own autograd (float64 gradcheck
and equal gradients), under bf16 autocast against autocast's own conv, and where it must not take the path."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from spikeyolo.nn.depthwise import DepthwiseConv2d, _DepthwiseConvFn, depthwise_weight_grad


def brute_weight_grad(x, g, k, p):
    """dW[c, i, j] = sum over n, h, w of x_pad[n, c, h + i, w + j] * g[n, c, h, w], loop over the taps."""
    xp = F.pad(x, (p, p, p, p))
    h, w = g.shape[-2:]
    return torch.stack([(xp[:, :, i:i + h, j:j + w] * g).sum((0, 2, 3)) for i in range(k) for j in range(k)],
                       1).view(x.shape[1], 1, k, k)


@pytest.mark.parametrize("k,p", [(7, 3), (3, 0), (5, 1)])
def test_weight_grad_matches_brute_force(k, p):
    torch.manual_seed(0)
    x = torch.randn(3, 4, 9, 8, dtype=torch.float64)
    g = torch.randn(3, 4, 9 + 2 * p - k + 1, 8 + 2 * p - k + 1, dtype=torch.float64)
    got = depthwise_weight_grad(x, g, (k, k), (p, p))
    assert got.dtype == torch.float64
    torch.testing.assert_close(got, brute_weight_grad(x, g, k, p), rtol=1e-12, atol=1e-12)


def test_gradcheck_float64():
    torch.manual_seed(0)
    x = torch.randn(2, 3, 6, 5, dtype=torch.float64, requires_grad=True)
    w = torch.randn(3, 1, 5, 5, dtype=torch.float64, requires_grad=True)
    b = torch.randn(3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x, w, b: _DepthwiseConvFn.apply(x, w, b, (2, 2), torch.float64), (x, w, b))


def _pair(k=7, bias=True, dtype=torch.float64):
    torch.manual_seed(1)
    fast = DepthwiseConv2d(6, k, 1, k // 2, bias=bias).to(dtype)
    plain = nn.Conv2d(6, 6, k, 1, k // 2, groups=6, bias=bias).to(dtype)
    plain.load_state_dict(fast.state_dict())
    return fast, plain


def test_same_values_and_grads_as_conv2d_float64():
    fast, plain = _pair()
    x = torch.randint(0, 5, (4, 6, 11, 10), dtype=torch.float64)
    xa, xb = x.clone().requires_grad_(), x.clone().requires_grad_()
    g = torch.randn(4, 6, 11, 10, dtype=torch.float64)
    ya, yb = fast(xa), plain(xb)
    assert ya.grad_fn is not None and "DepthwiseConvFn" in type(ya.grad_fn).__name__  # the fast path ran
    torch.testing.assert_close(ya, yb, rtol=1e-12, atol=1e-12)
    ya.backward(g)
    yb.backward(g)
    for a, b in ((xa.grad, xb.grad), (fast.weight.grad, plain.weight.grad), (fast.bias.grad, plain.bias.grad)):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)


def test_bf16_autocast_like_autocast_conv():
    """Under bf16 autocast: output bf16 and equal to autocast's conv; gradients float32 like the parameters and
    within bf16 rounding of autocast's own backward."""
    fast, plain = _pair(dtype=torch.float32)
    x = torch.randint(0, 5, (4, 6, 12, 12)).float()
    xa, xb = x.clone().requires_grad_(), x.clone().requires_grad_()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        ya, yb = fast(xa), plain(xb)
    assert ya.dtype == yb.dtype == torch.bfloat16
    torch.testing.assert_close(ya, yb, rtol=0, atol=0)
    g = torch.randn_like(ya)
    ya.backward(g)
    yb.backward(g)
    assert fast.weight.grad.dtype == torch.float32 and xa.grad.dtype == torch.float32
    torch.testing.assert_close(xa.grad, xb.grad, rtol=0, atol=0)
    for a, b in ((fast.weight.grad, plain.weight.grad), (fast.bias.grad, plain.bias.grad)):
        torch.testing.assert_close(a, b, rtol=2e-2, atol=1e-2 * float(b.abs().max()))


def test_plain_path_for_3x3_eval_and_no_grad():
    fast, _ = _pair(k=3)
    x = torch.rand(1, 6, 5, 5, dtype=torch.float64, requires_grad=True)
    assert "DepthwiseConvFn" not in type(fast(x).grad_fn).__name__  # 3x3: oneDNN's own gradient is fast
    fast7, _ = _pair(k=7)
    with torch.no_grad():
        assert fast7(x).grad_fn is None
    with pytest.raises(RuntimeError):  # a dtype mismatch outside autocast still fails as nn.Conv2d does
        fast7(x.float())


def test_whole_model_gradients_equal_with_and_without_the_fast_path(monkeypatch):
    """A tiny SpikeYOLO in float64, T=2: the same loss gives the same parameter gradients whether SepConv's 7x7
    depthwise convs take the fast weight gradient or nn.Conv2d's own."""
    import spikeyolo

    torch.manual_seed(0)
    model = spikeyolo.build_model("n", nc=2, width=0.0625, T=2).double().train()
    depthwise = [m for m in model.modules() if isinstance(m, DepthwiseConv2d)]
    assert depthwise and all(m.kernel_size == (7, 7) for m in depthwise)  # SepConv's dw convs are these
    x = torch.rand(2, 3, 64, 64, dtype=torch.float64) * 4

    def grads():
        model.zero_grad(set_to_none=True)
        sum((o * torch.linspace(-1, 1, o.numel(), dtype=o.dtype).view_as(o)).sum() for o in model(x)).backward()
        return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}

    state = {k: v.clone() for k, v in model.state_dict().items()}  # BN running statistics move in train mode
    calls, apply = [], _DepthwiseConvFn.apply
    monkeypatch.setattr(_DepthwiseConvFn, "apply", lambda *a: calls.append(1) or apply(*a))
    fast = grads()
    assert len(calls) == len(depthwise)  # every one took the fast path
    model.load_state_dict(state)
    monkeypatch.setattr(DepthwiseConv2d, "_fast_grad", lambda self, x: False)
    plain = grads()
    assert fast.keys() == plain.keys()
    for name in fast:
        torch.testing.assert_close(fast[name], plain[name], rtol=1e-9, atol=1e-12, msg=name)
