"""I-LIF: the integer leaky integrate-and-fire neuron of SpikeYOLO (Luo et al., ECCV 2024).

Multi-step over the leading time axis of a ``[T, ...]`` tensor. With membrane ``u``, output ``s``:

    charge:  u[0] = g * x[0],   u[t] = decay * (u[t-1] - s[t-1]) + g * x[t]
    fire:    s[t] = round(clamp(u[t], 0, D))          (integers 0..D, round half to even)
    reset:   the soft reset subtracts the emitted integer; it is detached from the graph when ``detach_reset``.

Training uses the integers directly; gradients pass straight through on [0, D] (both ends inclusive) and are
zero outside. At inference each integer is re-emitted as D binary virtual timesteps (see ``spike_driven.py``),
which is why the output is called a spike count.

Defaults follow the reference COCO code (decay 0.25, gain 1). The reference Gen1 code uses decay 0.5 and gain 0.5.

:class:`Activation` is the real-valued stand-in for the ANN twin (``neuron="relu"`` or ``"silu"``): the same
architecture with every I-LIF replaced by an ordinary activation, the paper's ANN comparison.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch
from torch import nn


class _QuantizeSTE(torch.autograd.Function):
    """round(clamp(u, 0, D)) with a straight-through gradient on the closed window [0, D]."""

    @staticmethod
    def forward(ctx, u: torch.Tensor, D: int) -> torch.Tensor:
        s = torch.clamp(u, 0, D)
        # u is in [0, D] iff clamping left it alone: one comparison pass instead of three (>=, <=, &);
        # a bool mask is 4x smaller than saving u
        ctx.save_for_backward(s == u)
        return s.round_()

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        (window,) = ctx.saved_tensors
        # the same product, but a uint8 view multiplies several times faster than bool (which is cast first)
        return grad * window.view(torch.uint8), None


def quantize(u: torch.Tensor, D: int) -> torch.Tensor:
    """Integer spike count of a membrane potential: round(clamp(u, 0, D)), straight-through gradient."""
    if u.requires_grad and torch.is_grad_enabled():
        return _QuantizeSTE.apply(u, D)
    return torch.clamp(u, 0, D).round_()  # inference: no gradient window to build


NEURONS = ("ilif", "relu", "silu")
"""Neuron kinds: the spiking I-LIF, or a real-valued activation in its place (the ANN twin)."""


@dataclass(frozen=True)
class NeuronConfig:
    """The neuron settings of a model, their one owner: ``D`` (largest integer spike, the virtual timesteps at
    inference), ``decay`` (leak), ``input_gain`` and ``detach_reset`` of the I-LIF, and ``kind``: ``"ilif"``
    (default) or ``"relu"``/``"silu"`` for the ANN twin (that activation in every I-LIF's place; the I-LIF
    settings are then unused). Defaults: the reference COCO code; the reference Gen1 code uses
    ``NeuronConfig(decay=0.5, input_gain=0.5)``. A model config stores them as the flat keys ``D``, ``decay``,
    ``input_gain``, ``detach_reset`` and ``neuron`` (the kind) (:meth:`to_config` / :meth:`from_config`)."""

    D: int = 4
    decay: float = 0.25
    input_gain: float = 1.0
    detach_reset: bool = True
    kind: str = "ilif"

    def __post_init__(self):
        if int(self.D) != self.D or self.D < 1:
            raise ValueError(f"ILIF: D must be a positive integer, got {self.D!r}")
        if self.kind not in NEURONS:
            raise ValueError(f"unknown neuron {self.kind!r}; choose one of {NEURONS}")
        object.__setattr__(self, "D", int(self.D))
        object.__setattr__(self, "decay", float(self.decay))
        object.__setattr__(self, "input_gain", float(self.input_gain))
        object.__setattr__(self, "detach_reset", bool(self.detach_reset))

    @property
    def spiking(self) -> bool:
        return self.kind == "ilif"

    def build(self) -> nn.Module:
        """A new neuron with these settings: an :class:`ILIF`, or the ANN twin's :class:`Activation`."""
        if not self.spiking:
            return Activation(self.kind)
        return ILIF(self.D, self.decay, self.input_gain, self.detach_reset)

    def replace(self, **overrides) -> NeuronConfig:
        """A copy with the given settings changed; ``None`` values keep the current ones."""
        return dataclasses.replace(self, **{k: v for k, v in overrides.items() if v is not None})

    def to_config(self) -> dict:
        return {"D": self.D, "decay": self.decay, "input_gain": self.input_gain, "detach_reset": self.detach_reset,
                "neuron": self.kind}

    @classmethod
    def from_config(cls, config: dict) -> NeuronConfig:
        """The settings in a model config (missing keys take the defaults: checkpoints before the ANN twin
        have no ``neuron`` key and are I-LIF models)."""
        return cls().replace(D=config.get("D"), decay=config.get("decay"), input_gain=config.get("input_gain"),
                             detach_reset=config.get("detach_reset"), kind=config.get("neuron"))


_DEFAULT = NeuronConfig()


class ILIF(nn.Module):
    """Integer LIF neuron over ``[T, ...]`` inputs, returning spike counts 0..D of the same shape.

    Args:
        D: largest integer emitted (the number of virtual timesteps at inference).
        decay: membrane leak factor beta applied to the post-reset potential.
        input_gain: factor g on the input current.
        detach_reset: detach the reset term (the spike) from the autograd graph, as the reference does.

    State: the membrane after the last step (``residual``, ``u - s``) is registered memory, a non-persistent
    buffer (it follows ``.to(device)``, is never saved in a checkpoint), kept only while ``carry_state`` is on
    (:func:`set_carry_state`), e.g. over consecutive windows of an event stream; :func:`reset_state` returns
    every neuron of a model to rest. A carried state belongs to one stream of one batch size: an input of
    another shape raises (call :func:`reset_state` first) instead of silently starting from rest.
    """

    def __init__(self, D: int = _DEFAULT.D, decay: float = _DEFAULT.decay, input_gain: float = _DEFAULT.input_gain,
                 detach_reset: bool = _DEFAULT.detach_reset):
        super().__init__()
        cfg = NeuronConfig(D, decay, input_gain, detach_reset)  # checks and normalizes the settings
        self.D, self.decay, self.input_gain, self.detach_reset = cfg.D, cfg.decay, cfg.input_gain, cfg.detach_reset
        self.carry_state = False
        self.register_buffer("residual", None, persistent=False)  # u - s after the last step (carry_state)

    def extra_repr(self) -> str:
        return f"D={self.D}, decay={self.decay}, input_gain={self.input_gain}, detach_reset={self.detach_reset}"

    def charge(self, x: torch.Tensor, residual: torch.Tensor | None) -> torch.Tensor:
        u = x * self.input_gain if self.input_gain != 1.0 else x
        return u if residual is None else u + self.decay * residual

    def fire(self, u: torch.Tensor) -> torch.Tensor:
        return quantize(u, self.D)

    def reset(self, u: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
        return u - (s.detach() if self.detach_reset else s)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        residual = self.residual if self.carry_state else None
        if residual is not None and residual.shape != x.shape[1:]:
            raise ValueError(f"ILIF: the carried membrane has shape {tuple(residual.shape)} but this input step is "
                             f"{tuple(x.shape[1:])} (another batch size or image size): call "
                             f"spikeyolo.nn.neuron.reset_state(model) before a new stream")
        if x.shape[0] == 1 and residual is None and not self.carry_state:
            return self.fire(self.charge(x, None))  # T = 1: no recurrence, no per-step bookkeeping
        spikes = []
        for t in range(x.shape[0]):
            u = self.charge(x[t], residual)
            s = self.fire(u)
            residual = self.reset(u, s)
            spikes.append(s)
        if self.carry_state:
            self.residual = residual.detach()
        return torch.stack(spikes)


class Activation(nn.Module):
    """A real-valued activation in the place of an I-LIF (the ANN twin): elementwise, any shape, no state."""

    def __init__(self, kind: str = "relu"):
        super().__init__()
        if kind not in ("relu", "silu"):
            raise ValueError(f"Activation: kind must be 'relu' or 'silu', got {kind!r}")
        self.kind = kind
        self.fn = torch.relu if kind == "relu" else nn.functional.silu

    def extra_repr(self) -> str:
        return self.kind

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fn(x)


def is_spiking(model: nn.Module) -> bool:
    """Whether a model's neurons are I-LIFs: the ANN twin holds an :class:`Activation` in every I-LIF's place."""
    return not any(isinstance(m, Activation) for m in model.modules())


def require_spiking(model: nn.Module, what: str) -> None:
    """Raise a clear error when ``what`` (an operation that needs integer spikes) is given an ANN model."""
    kind = next((m.kind for m in model.modules() if isinstance(m, Activation)), None)
    if kind is not None:
        raise ValueError(f"{what} needs integer spikes, but this model is the ANN twin (neuron={kind!r}: "
                         "real-valued activations instead of I-LIF)")


def iter_neurons(model: nn.Module):
    """All I-LIF modules of a model, in registration order."""
    return (m for m in model.modules() if isinstance(m, ILIF))


def set_carry_state(model: nn.Module, on: bool = True) -> None:
    """Keep (or stop keeping) membrane potentials between forward calls, and start from rest."""
    for m in iter_neurons(model):
        m.carry_state = on
    reset_state(model)


def reset_state(model: nn.Module) -> None:
    """Return every neuron to rest (membrane 0): clear the registered memory of each I-LIF (as SpikingJelly's
    ``reset_net``)."""
    for m in iter_neurons(model):
        m.residual = None
