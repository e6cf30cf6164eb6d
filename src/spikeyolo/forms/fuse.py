"""Train form -> fused form: every spiking unit's linear chain folded into one ``nn.Conv2d`` with bias."""

from __future__ import annotations

import copy
from collections.abc import Callable

from torch import nn

from ..nn.units import SpikeUnit


def replace_modules(model: nn.Module, kind: type, make: Callable[[nn.Module], nn.Module]) -> int:
    """Replace, in place, every submodule of type ``kind`` by ``make(module)``; returns how many."""
    targets = [(name, m) for name, m in model.named_modules() if isinstance(m, kind) and name]
    for name, m in targets:
        parent_name, _, attr = name.rpartition(".")
        setattr(model.get_submodule(parent_name) if parent_name else model, attr, make(m))
    return len(targets)


def fuse(model: nn.Module) -> nn.Module:
    """A fused copy of a train-form model, in eval mode; the original is untouched.

    BatchNorms are folded into the convs (with running statistics), and RepConv and SepRepConv(+BN) are
    re-parameterized into one dense 3x3 conv each. Outputs equal the train form's in eval mode.
    """
    fused = copy.deepcopy(model).eval()
    if replace_modules(fused, SpikeUnit, lambda unit: unit.fuse()) == 0:
        raise ValueError("fuse: the model has no train-form units (already fused or spike-driven?)")
    return fused
