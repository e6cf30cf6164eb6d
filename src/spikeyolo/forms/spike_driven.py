"""Fused form -> spike-driven form, and an audit proving that every conv after the stem sees only 0/1."""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
from torch import nn

from ..nn.neuron import require_spiking
from ..nn.units import FusedUnit, SpikeDrivenUnit, SpikeUnit
from .fuse import fuse, replace_modules


def to_spike_driven(model: nn.Module) -> nn.Module:
    """A spike-driven copy (eval mode) of a train-form or fused model; the original is untouched.

    Each I-LIF output (an integer 0..D per real timestep) is expanded into D binary virtual timesteps, so every
    conv after the stem receives only 0 and 1; biases are added once per real timestep. Decoded outputs equal
    the train form's up to float summation order. The ANN twin (real-valued activations) is refused.
    """
    require_spiking(model, "to_spike_driven")
    has_train_units = any(isinstance(m, SpikeUnit) for m in model.modules())
    sd = fuse(model) if has_train_units else copy.deepcopy(model).eval()

    def convert(unit: FusedUnit) -> nn.Module:
        return unit if unit.lif is None else SpikeDrivenUnit(unit.lif, unit.conv)  # the stem stays a MAC conv

    if replace_modules(sd, FusedUnit, convert) == 0:
        raise ValueError("to_spike_driven: expected a train-form or fused model")
    return sd


@dataclass
class ConvAudit:
    """What one conv received during an audited forward pass."""

    name: str
    binary: bool  # every input value was 0 or 1
    events: int  # number of ones (input spikes) it received
    elements: int  # number of input values it received


@torch.no_grad()
def audit(model: nn.Module, x: torch.Tensor) -> list[ConvAudit]:
    """Run ``model(x)`` and report, per ``nn.Conv2d``, whether its inputs were binary and how many events it got.
    The ANN twin is refused (its convs see real values by design)."""
    require_spiking(model, "audit")
    records: dict[str, ConvAudit] = {}

    def hook(name):
        def record(_module, inputs):
            t = inputs[0]
            ones = int((t == 1).sum())
            binary = bool(((t == 0) | (t == 1)).all())
            prev = records.get(name)
            if prev is not None:  # a conv called more than once: accumulate
                ones, binary = ones + prev.events, binary and prev.binary
            records[name] = ConvAudit(name, binary, ones, t.numel() + (prev.elements if prev else 0))

        return record

    handles = [m.register_forward_pre_hook(hook(n)) for n, m in model.named_modules() if isinstance(m, nn.Conv2d)]
    try:
        model(x)
    finally:
        for h in handles:
            h.remove()
    return list(records.values())
