"""Optimizer with three parameter groups, learning-rate schedule and warm-up.

Parameter groups (the order fixes the ``lr/pg0..2`` columns of results.csv, as in ultralytics runs):

- ``pg0`` biases, no weight decay (warm-up starts their lr at ``warmup_bias_lr``)
- ``pg1`` weights of convolutions/linear layers, with weight decay
- ``pg2`` weights of normalization layers (BatchNorm etc.) and other 1-d parameters, no weight decay

Weight decay is given for the nominal batch size ``nbs`` (64): gradients are accumulated over
``accumulate = max(round(nbs / batch), 1)`` batches and the decay is scaled by ``batch * accumulate / nbs``.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

GROUP_NAMES = ("bias", "weight", "norm")
_NORMS = (nn.modules.batchnorm._NormBase, nn.GroupNorm, nn.LayerNorm, nn.LocalResponseNorm)


def accumulate_steps(batch: int, nbs: int = 64) -> int:
    """Number of batches whose gradients are summed before one optimizer step."""
    return max(round(nbs / batch), 1)


def scaled_weight_decay(weight_decay: float, batch: int, nbs: int = 64) -> float:
    """Weight decay for the effective batch ``batch * accumulate`` given one set for ``nbs``."""
    return weight_decay * batch * accumulate_steps(batch, nbs) / nbs


def param_groups(model: nn.Module) -> tuple[list, list, list]:
    """Split trainable parameters into (biases, decayed weights, norm/1-d weights)."""
    biases, weights, norms = [], [], []
    seen = set()
    for module in model.modules():
        for name, p in module.named_parameters(recurse=False):
            if not p.requires_grad or id(p) in seen:
                continue
            seen.add(id(p))
            if name == "bias":
                biases.append(p)
            elif isinstance(module, _NORMS) or p.ndim <= 1:
                norms.append(p)
            else:
                weights.append(p)
    return biases, weights, norms


def build_optimizer(
    model: nn.Module, name: str = "SGD", lr: float = 0.01, momentum: float = 0.937, weight_decay: float = 5e-4
) -> torch.optim.Optimizer:
    """SGD (Nesterov) or AdamW over the three parameter groups; ``weight_decay`` applies to pg1 only.

    ``momentum`` is SGD's momentum or AdamW's beta1.
    """
    biases, weights, norms = param_groups(model)
    groups = [
        {"params": biases, "weight_decay": 0.0, "name": "bias"},
        {"params": weights, "weight_decay": weight_decay, "name": "weight"},
        {"params": norms, "weight_decay": 0.0, "name": "norm"},
    ]
    key = name.lower()
    if key == "sgd":
        opt = torch.optim.SGD(groups, lr=lr, momentum=momentum, nesterov=True)
    elif key == "adamw":
        opt = torch.optim.AdamW(groups, lr=lr, betas=(momentum, 0.999))
    else:
        raise ValueError(f"unknown optimizer {name!r}; use SGD or AdamW")
    for g in opt.param_groups:
        g["initial_lr"] = lr
    return opt


class LRSchedule:
    """Per-epoch learning-rate factor, linear or cosine from 1 down to ``lrf`` over ``epochs``.

    linear: ``f(e) = (1 - e / epochs) * (1 - lrf) + lrf``;
    cosine: ``f(e) = lrf + (1 - lrf) * (1 + cos(pi * e / epochs)) / 2``.
    ``set_epoch(e)`` writes ``initial_lr * f(e)`` into every group. State is plain data (for checkpoints).
    """

    def __init__(self, optimizer: torch.optim.Optimizer, epochs: int, lrf: float = 0.01, cos: bool = False):
        self.optimizer, self.epochs, self.lrf, self.cos = optimizer, int(epochs), float(lrf), bool(cos)
        self.epoch = 0

    def factor(self, epoch: float) -> float:
        x = min(max(epoch / max(self.epochs, 1), 0.0), 1.0)
        if self.cos:
            return self.lrf + (1.0 - self.lrf) * (1.0 + math.cos(math.pi * x)) / 2.0
        return (1.0 - x) * (1.0 - self.lrf) + self.lrf

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)
        f = self.factor(epoch)
        for g in self.optimizer.param_groups:
            g["lr"] = g["initial_lr"] * f

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "epochs": self.epochs, "lrf": self.lrf, "cos": self.cos}

    def load_state_dict(self, state: dict) -> None:
        self.epochs, self.lrf, self.cos = int(state["epochs"]), float(state["lrf"]), bool(state["cos"])
        self.set_epoch(int(state["epoch"]))


def warmup_iters(warmup_epochs: float, batches_per_epoch: int, minimum: int = 100) -> int:
    """Warm-up length in iterations: ``warmup_epochs`` epochs but at least ``minimum`` (0 turns it off)."""
    if warmup_epochs <= 0:
        return 0
    return max(round(warmup_epochs * batches_per_epoch), minimum)


def apply_warmup(
    optimizer: torch.optim.Optimizer,
    it: int,
    n_warmup: int,
    lr_factor: float,
    warmup_bias_lr: float = 0.1,
    warmup_momentum: float = 0.8,
    momentum: float = 0.937,
) -> None:
    """Set lr and momentum for iteration ``it`` (counted from the start of training) of a warm-up.

    Biases go from ``warmup_bias_lr`` and other groups from 0 linearly to ``initial_lr * lr_factor``; momentum
    (SGD momentum or AdamW beta1) goes from ``warmup_momentum`` to ``momentum``.
    """
    xs = [0, n_warmup]
    for g in optimizer.param_groups:
        start = warmup_bias_lr if g.get("name") == "bias" else 0.0
        g["lr"] = float(np.interp(it, xs, [start, g["initial_lr"] * lr_factor]))
        m = float(np.interp(it, xs, [warmup_momentum, momentum]))
        if "momentum" in g:
            g["momentum"] = m
        if "betas" in g:
            g["betas"] = (m, g["betas"][1])
