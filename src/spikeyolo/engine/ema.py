"""Exponential moving average of model weights, with a warm-up ramp.

``ema = d * ema + (1 - d) * model`` after each optimizer step, where ``d = decay * (1 - exp(-updates / tau))``
is near 0 for the first updates (the average follows the model) and tends to ``decay`` (an average over about
``1 / (1 - decay)`` steps). Buffers (BatchNorm running statistics) are averaged the same way; integer buffers
are copied.
"""

from __future__ import annotations

import copy
import math

import torch
from torch import nn

from ..utils.runs import unwrap


class ModelEMA:
    """Keeps ``self.ema``, an eval-mode copy of the model whose weights trail the trained ones.

    Args:
        model: the model being trained (a DDP wrapper is unwrapped).
        decay: the asymptotic decay (0.9999 in the reference recipe).
        tau: ramp length in updates (2000).
        updates: number of updates already done (when resuming).
    """

    def __init__(self, model: nn.Module, decay: float = 0.9999, tau: float = 2000.0, updates: int = 0):
        self.ema = copy.deepcopy(unwrap(model)).eval()
        for p in self.ema.parameters():
            p.requires_grad_(False)
        self.decay, self.tau, self.updates = float(decay), float(tau), int(updates)

    def factor(self, updates: int | None = None) -> float:
        """The decay d used for update number ``updates`` (the next one by default)."""
        n = self.updates if updates is None else updates
        return self.decay * (1.0 - math.exp(-n / self.tau))

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """Blend the current weights of ``model`` into the average."""
        self.updates += 1
        d = self.factor()
        src = unwrap(model).state_dict()
        for name, v in self.ema.state_dict().items():
            w = src[name].detach()
            if v.dtype.is_floating_point:
                v.mul_(d).add_(w.to(v.dtype), alpha=1.0 - d)
            else:
                v.copy_(w)

    def state_dict(self) -> dict:
        """Plain-data state (the EMA weights themselves are saved as the checkpoint's model)."""
        return {"updates": self.updates, "decay": self.decay, "tau": self.tau}

    def load_state_dict(self, state: dict) -> None:
        self.updates = int(state["updates"])
        self.decay = float(state.get("decay", self.decay))
        self.tau = float(state.get("tau", self.tau))
