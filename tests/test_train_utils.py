"""EMA, optimizer groups, LR schedule, warm-up, run folders, atomic saves and RNG state."""

import math
import random

import numpy as np
import pytest
import torch
from torch import nn

from spikeyolo.engine.ema import ModelEMA
from spikeyolo.engine.optim import (
    LRSchedule,
    accumulate_steps,
    apply_warmup,
    build_optimizer,
    param_groups,
    scaled_weight_decay,
    warmup_iters,
)
from spikeyolo.models.checkpoint import atomic_torch_save
from spikeyolo.utils.runs import get_rng_state, increment_path, set_rng_state


def tiny():
    return nn.Sequential(nn.Conv2d(3, 4, 3, bias=False), nn.BatchNorm2d(4), nn.Conv2d(4, 2, 1, bias=True))


def test_ema_follows_closed_form():
    torch.manual_seed(0)
    model = tiny()
    ema = ModelEMA(model, decay=0.9, tau=3.0)
    w0 = model[0].weight.detach().clone()
    expected = w0.clone()
    for k in range(1, 6):
        with torch.no_grad():
            model[0].weight.add_(1.0)
        d = 0.9 * (1 - math.exp(-k / 3.0))
        expected = d * expected + (1 - d) * model[0].weight.detach()
        ema.update(model)
    assert ema.updates == 5
    torch.testing.assert_close(ema.ema[0].weight, expected)
    # integer buffers are copied, not averaged
    model[1].num_batches_tracked.fill_(7)
    ema.update(model)
    assert int(ema.ema[1].num_batches_tracked) == 7
    assert not any(p.requires_grad for p in ema.ema.parameters())


def test_param_groups_and_decay():
    model = tiny()
    b, w, n = param_groups(model)
    assert [p.shape for p in b] == [torch.Size([4]), torch.Size([2])]  # BN bias + conv bias
    assert [p.shape for p in w] == [torch.Size([4, 3, 3, 3]), torch.Size([2, 4, 1, 1])]
    assert [p.shape for p in n] == [torch.Size([4])]
    opt = build_optimizer(model, "SGD", lr=0.02, momentum=0.9, weight_decay=1e-3)
    assert [g["weight_decay"] for g in opt.param_groups] == [0.0, 1e-3, 0.0]
    assert all(g["nesterov"] for g in opt.param_groups)
    adam = build_optimizer(model, "AdamW", lr=0.001, momentum=0.9)
    assert isinstance(adam, torch.optim.AdamW) and adam.param_groups[0]["betas"] == (0.9, 0.999)
    with pytest.raises(ValueError):
        build_optimizer(model, "Lion")
    # reference: batch 40 -> accumulate 2 -> 5e-4 * 80 / 64 = 6.25e-4
    assert accumulate_steps(40) == 2 and scaled_weight_decay(5e-4, 40) == pytest.approx(6.25e-4)
    assert accumulate_steps(16) == 4 and scaled_weight_decay(5e-4, 16) == pytest.approx(5e-4)
    assert accumulate_steps(128) == 1 and scaled_weight_decay(5e-4, 128) == pytest.approx(1e-3)


def test_schedule_linear_cosine_and_warmup():
    opt = build_optimizer(tiny(), "SGD", lr=0.01)
    lin = LRSchedule(opt, epochs=300, lrf=0.004)
    assert lin.factor(0) == pytest.approx(1.0) and lin.factor(300) == pytest.approx(0.004)
    assert lin.factor(150) == pytest.approx(0.5 * 0.996 + 0.004)
    lin.set_epoch(150)
    assert opt.param_groups[1]["lr"] == pytest.approx(0.01 * (0.5 * 0.996 + 0.004))
    cos = LRSchedule(opt, epochs=10, lrf=0.1, cos=True)
    assert cos.factor(0) == pytest.approx(1.0) and cos.factor(10) == pytest.approx(0.1)
    assert cos.factor(5) == pytest.approx(0.55)
    state = lin.state_dict()
    other = LRSchedule(opt, epochs=1)
    other.load_state_dict(state)
    assert other.factor(150) == pytest.approx(lin.factor(150))

    assert warmup_iters(3, 10) == 100 and warmup_iters(3, 1000) == 3000 and warmup_iters(0, 10) == 0
    apply_warmup(opt, 0, 100, 1.0, warmup_bias_lr=0.1, warmup_momentum=0.8, momentum=0.937)
    assert opt.param_groups[0]["lr"] == pytest.approx(0.1) and opt.param_groups[1]["lr"] == 0.0
    assert opt.param_groups[1]["momentum"] == pytest.approx(0.8)
    apply_warmup(opt, 50, 100, 1.0, warmup_bias_lr=0.1, warmup_momentum=0.8, momentum=0.937)
    assert opt.param_groups[0]["lr"] == pytest.approx((0.1 + 0.01) / 2)
    assert opt.param_groups[2]["lr"] == pytest.approx(0.005)
    assert opt.param_groups[2]["momentum"] == pytest.approx((0.8 + 0.937) / 2)
    apply_warmup(opt, 100, 100, 0.5)
    assert [g["lr"] for g in opt.param_groups] == pytest.approx([0.005] * 3)


def test_increment_path_never_reuses(tmp_path):
    a = increment_path(tmp_path / "exp")
    b = increment_path(tmp_path / "exp")
    c = increment_path(tmp_path / "exp")
    assert (a.name, b.name, c.name) == ("exp", "exp2", "exp3") and all(p.is_dir() for p in (a, b, c))
    assert increment_path(tmp_path / "exp", exist_ok=True) == a


def test_atomic_save_and_rng_roundtrip(tmp_path):
    random.seed(1)
    np.random.seed(2)
    torch.manual_seed(3)
    state = get_rng_state()
    p = tmp_path / "w" / "last.pt"
    atomic_torch_save({"rng": state, "x": torch.arange(3)}, p)
    assert sorted(x.name for x in p.parent.iterdir()) == ["last.pt"]  # no temp file left behind
    first = (random.random(), np.random.rand(), torch.rand(1).item())
    loaded = torch.load(p, weights_only=True)
    set_rng_state(loaded["rng"])
    again = (random.random(), np.random.rand(), torch.rand(1).item())
    assert first == again
