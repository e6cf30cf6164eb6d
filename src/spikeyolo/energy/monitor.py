"""Firing-rate monitor: forward hooks on every I-LIF, accumulated over a whole dataset.

Statistics are sums (float64) and counts (int64 / exact float64) over every output element a neuron emitted, so a
rate over many batches is weighted by elements (timesteps x images x channels x pixels), not a mean of batch
means. Accumulators stay on the model's device; nothing synchronises the device until results are read.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import torch
import torch.distributed as dist
from torch import nn

from ..nn.neuron import ILIF
from ..nn.units import SpikeDrivenUnit
from .ops import ConvSpec, fused_conv_spec, iter_units, synops_tensor


@dataclass
class NeuronStats:
    """Accumulated output of one I-LIF (named by its unit, e.g. ``layers.2.sep.pw``).

    ``total``: sum of the emitted integers; ``elements``: number of outputs (T x B x C x H x W summed over calls);
    ``nonzero``: outputs > 0; ``channel_total``: per-channel sums (for never-firing channels); ``synops``: measured
    synaptic operations of the conv it feeds (summed over all images, timesteps and virtual steps; None when not
    measured).
    """

    name: str
    D: int
    total: float = 0.0
    elements: int = 0
    nonzero: int = 0
    channel_total: torch.Tensor | None = None
    synops: float | None = None

    @property
    def firing_rate(self) -> float:
        """Mean spike count per neuron per timestep, in [0, D] (the paper's "firing rate"; includes D, not T)."""
        return self.total / self.elements if self.elements else float("nan")

    @property
    def rate_per_step(self) -> float:
        """Spikes per neuron per virtual timestep, in [0, 1]: ``firing_rate / D``."""
        return self.firing_rate / self.D

    @property
    def silent(self) -> float:
        """Fraction of outputs that are 0 (this layer's NeuroBench activation sparsity)."""
        return 1.0 - self.nonzero / self.elements if self.elements else float("nan")

    @property
    def channels(self) -> int:
        return 0 if self.channel_total is None else int(self.channel_total.numel())

    @property
    def dead_channels(self) -> int:
        """Channels that never fired over everything monitored."""
        return 0 if self.channel_total is None else int((self.channel_total == 0).sum())

    def to_dict(self) -> dict:
        return {"name": self.name, "D": self.D, "total": self.total, "elements": self.elements,
                "nonzero": self.nonzero, "firing_rate": self.firing_rate, "rate_per_step": self.rate_per_step,
                "silent": self.silent, "channels": self.channels, "dead_channels": self.dead_channels,
                "synops": self.synops}


@dataclass
class InputStats:
    """What the model was fed: ``images``, input sizes ``(H, W) -> images``, input frames per image -> images
    (1 for a static image, T for event frames ``[B, T, C, H, W]``)."""

    images: int = 0
    sizes: Counter = field(default_factory=Counter)
    frames: Counter = field(default_factory=Counter)

    @property
    def common_size(self) -> tuple[int, int] | None:
        return self.sizes.most_common(1)[0][0] if self.sizes else None

    @property
    def mean_frames(self) -> float:
        n = sum(self.frames.values())
        return sum(f * c for f, c in self.frames.items()) / n if n else 1.0


class _Acc:
    """Device-side accumulators of one neuron: ``vec = [total, nonzero, synops]`` and per-channel sums."""

    __slots__ = ("vec", "channels", "elements", "measured")

    def __init__(self):
        self.vec: torch.Tensor | None = None
        self.channels: torch.Tensor | None = None
        self.elements = 0
        self.measured = False

    def add(self, i: int, value: torch.Tensor) -> None:
        if self.vec is None:
            self.vec = torch.zeros(3, dtype=torch.float64, device=value.device)
        self.vec[i] += value.to(self.vec.device)


def _float64_view(t: torch.Tensor) -> torch.Tensor:
    return t.cpu() if t.device.type == "mps" else t  # MPS has no float64


def clean_name(name: str) -> str:
    """A module path without wrapper prefixes (DDP ``module.``, ``torch.compile`` ``_orig_mod.``)."""
    parts = [p for p in name.split(".") if p not in ("_orig_mod", "module")]
    return ".".join(parts)


class FiringRateMonitor:
    """Accumulates I-LIF output statistics of ``model`` while attached.

        mon = FiringRateMonitor(model)
        with mon:                       # attaches hooks; detaches on exit (statistics are kept)
            for batch in loader:
                model(x)
        mon.stats()["layers.2.sep.pw"].firing_rate

    Works in all three forms (train, fused, spike-driven): each neuron sits at the same unit path in each.
    With ``synops=True`` it also measures the synaptic operations of the conv each neuron feeds: from the binary
    virtual-step input in the spike-driven form, else from the integer counts and the fused conv's shape (the same
    number, because the D binary slots of a count sum to it and the count is linear).
    """

    def __init__(self, model: nn.Module, synops: bool = True):
        self.model, self.measure_synops = model, bool(synops)
        self.inputs = InputStats()
        self._acc: dict[str, _Acc] = {}
        self._D: dict[str, int] = {}
        self._handles: list = []
        self._specs: dict[str, ConvSpec] = {}
        self.timesteps = 0  # T of the neuron outputs seen (the leading axis of [T, B, C, H, W])

    # -- lifecycle -----------------------------------------------------------------------------------------------
    def reset(self) -> None:
        """Forget everything accumulated (hooks stay attached)."""
        self.inputs, self.timesteps = InputStats(), 0
        self._acc = {name: _Acc() for name in self._acc}

    def attach(self) -> FiringRateMonitor:
        if self._handles:
            return self
        self._handles.append(self.model.register_forward_pre_hook(self._on_input))
        seen: set[int] = set()
        for name, unit in iter_units(self.model):
            name = clean_name(name)
            if not isinstance(unit.lif, ILIF):  # the stem, or an ANN twin's real-valued activation: no spikes
                continue
            seen.add(id(unit.lif))
            self._register(name, unit.lif)
            if self.measure_synops:
                if isinstance(unit, SpikeDrivenUnit):  # count the binary events the conv really receives
                    spec = ConvSpec.of(unit.conv)
                    self._handles.append(unit.conv.register_forward_pre_hook(self._on_conv_input(name, spec)))
                elif name not in self._specs:
                    self._specs[name] = fused_conv_spec(unit)
        for name, m in self.model.named_modules():  # a neuron outside any unit: rates only
            if isinstance(m, ILIF) and id(m) not in seen:
                self._register(clean_name(name), m)
        return self

    def _register(self, name: str, lif: ILIF) -> None:
        self._acc.setdefault(name, _Acc())
        self._D[name] = lif.D
        self._handles.append(lif.register_forward_hook(self._on_spikes(name)))

    def detach(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles = []

    def __enter__(self) -> FiringRateMonitor:
        return self.attach()

    def __exit__(self, *exc) -> None:
        self.detach()

    # -- hooks ---------------------------------------------------------------------------------------------------
    def _on_input(self, _module, args) -> None:
        x = args[0] if args else None
        if not isinstance(x, torch.Tensor) or x.dim() not in (4, 5):
            return
        B = int(x.shape[0])
        self.inputs.images += B
        self.inputs.sizes[(int(x.shape[-2]), int(x.shape[-1]))] += B
        self.inputs.frames[int(x.shape[1]) if x.dim() == 5 else 1] += B

    def _on_spikes(self, name: str):
        def hook(_module, _inputs, out: torch.Tensor) -> None:
            acc = self._acc[name]
            out = _float64_view(out.detach())
            if out.dim() >= 3:  # [T, B, C, ...]: per-channel sums (channels are dim 2), their sum is the total
                ch = out.sum(dim=[d for d in range(out.dim()) if d != 2], dtype=torch.float64)
                acc.channels = ch if acc.channels is None else acc.channels.add_(ch)
                acc.add(0, ch.sum())
            else:
                acc.add(0, out.sum(dtype=torch.float64))
            acc.add(1, torch.count_nonzero(out).to(torch.float64))
            acc.elements += out.numel()
            self.timesteps = max(self.timesteps, int(out.shape[0]))
            spec = self._specs.get(name)
            if spec is not None:
                acc.add(2, synops_tensor(out.flatten(0, 1), spec))
                acc.measured = True

        return hook

    def _on_conv_input(self, name: str, spec: ConvSpec):
        def hook(_module, args) -> None:
            acc = self._acc[name]
            acc.add(2, synops_tensor(args[0], spec))
            acc.measured = True

        return hook

    # -- results -------------------------------------------------------------------------------------------------
    def stats(self) -> dict[str, NeuronStats]:
        """Per neuron (unit path) statistics, in registration order (reads the device once per neuron)."""
        out = {}
        for name, acc in self._acc.items():
            total, nonzero, syn = acc.vec.tolist() if acc.vec is not None else (0.0, 0.0, 0.0)
            ch = acc.channels.cpu() if acc.channels is not None else None
            out[name] = NeuronStats(name, self._D[name], total, acc.elements, int(nonzero), ch,
                                    syn if acc.measured else None)
        return out

    def firing_rate(self) -> float:
        """Element-weighted mean spike count over all monitored neurons (in [0, D])."""
        stats = self.stats().values()
        n = sum(s.elements for s in stats)
        return sum(s.total for s in stats) / n if n else float("nan")

    def all_reduce(self) -> None:
        """Sum the statistics over the processes of an initialised ``torch.distributed`` group. Call it on every
        rank after the loop; every rank must have monitored the same architecture and run at least one batch."""
        if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
            return
        device = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else "cpu"
        names = sorted(self._acc)
        rows = []
        for n in names:
            acc = self._acc[n]
            vec = acc.vec.cpu().tolist() if acc.vec is not None else [0.0, 0.0, 0.0]
            rows.append([*vec, float(acc.elements)])
        rows.append([float(self.inputs.images), 0.0, 0.0, 0.0])
        flat = torch.tensor(rows, dtype=torch.float64, device=device)
        dist.all_reduce(flat)
        for n, row in zip(names, flat.cpu().tolist()):
            acc = self._acc[n]
            acc.vec = torch.tensor(row[:3], dtype=torch.float64)
            acc.elements = int(row[3])
            if acc.channels is not None:
                ch = acc.channels.to(device)
                dist.all_reduce(ch)
                acc.channels = ch
        self.inputs.images = int(flat[-1, 0].item())
        gathered: list = [None] * dist.get_world_size()
        dist.all_gather_object(gathered, (dict(self.inputs.sizes), dict(self.inputs.frames),
                                          self.timesteps))
        self.inputs.sizes, self.inputs.frames = Counter(), Counter()
        for sizes, frames, steps in gathered:
            self.inputs.sizes.update(sizes)
            self.inputs.frames.update(frames)
            self.timesteps = max(self.timesteps, steps)
