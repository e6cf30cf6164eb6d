"""Energy estimate (the SpikeYOLO / BICLab model) from conv geometry and firing rates, and the report.

Per image, with ``MACs_l`` the dense multiply-accumulates of conv ``l`` per timestep (its fused shape):

    AC_l      = MACs_l * fr_l * T                 every conv fed by an I-LIF (fr in [0, D], the mean spike count)
    E_SNN     = E_MAC * MACs_stem * F + E_AC * sum_l AC_l      (F: input frames per image; 1 for a static image)
    E_ANN     = E_MAC * sum_all MACs_l            the same fused network run once as an ANN

The ANN twin (``neuron="relu"``/``"silu"``, see :func:`spikeyolo.build_model`) has no spikes: every conv,
the stem included, is charged as dense MACs at E_MAC (``E = E_MAC * sum_all MACs_l``, T = 1), and the report
says so.

A nearly silent network (mean firing rate below :data:`SILENT_FIRING_RATE`, e.g. a freshly initialised model)
gets a warning in the report: its SNN energy is tiny for no useful reason and the ANN/SNN ratio means nothing.

NeuroBench names: ``effective_macs`` (MACs on real-valued inputs: the stem), ``effective_acs`` (= ``synops``,
the estimated accumulates on spikes), ``dense`` (every op of every conv at every timestep, as if nothing were
zero). Energies are in pJ internally, reported in mJ.
"""

from __future__ import annotations

import csv
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path

from torch import nn

from ..inference import InferenceModel
from ..nn.neuron import NeuronConfig
from ..utils.runs import plain_json, unwrap
from .monitor import FiringRateMonitor, NeuronStats
from .ops import STAGES, ConvGeometry, unit_geometry

E_MAC_PJ = 4.6  # pJ per 32-bit float multiply-accumulate (45 nm), as the official power_cal.xlsx
E_AC_PJ = 0.9  # pJ per 32-bit float accumulate (45 nm)
FIRST_LAYER = ("mac", "ac")
SILENT_FIRING_RATE = 0.01
"""Mean spike count per neuron per timestep below which a report warns that the network is nearly silent.
A freshly initialised model fires about 0.002; trained models fire one to two orders of magnitude more (the
event demo ends at 0.44, docs/events.md)."""


@dataclass(kw_only=True)
class LayerEnergy:
    """One conv of the report (per image). ``ops`` is MACs for the stem, the estimated ACs for spiking convs."""

    name: str
    unit: str
    layer: int | None
    stage: str
    kind: str  # "MAC" or "AC"
    cin: int
    cout: int
    k: int
    stride: int
    groups: int
    hout: int
    wout: int
    macs: int  # dense, per timestep
    firing_rate: float | None  # of the neuron feeding the conv, in [0, D]; None for the stem
    rate_per_step: float | None
    silent: float | None
    ops: float
    energy_pJ: float
    synops_measured: float | None = None
    dead_channels: int | None = None  # input channels whose neuron never fired over the run

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(kw_only=True)
class EnergyReport:
    """Per-layer and total operation counts and energies, per image. Build with :func:`estimate_energy` or
    :meth:`EnergyMeter.report`."""

    layers: list[LayerEnergy]
    T: int
    D: int
    e_mac: float
    e_ac: float
    imgsz: tuple[int, int]
    first_layer: str = "mac"
    geometry: str = "fused"
    frames: float = 1.0
    images: int = 0
    firing_rate: float = float("nan")  # element-weighted over all spiking neurons (from the monitor if known)
    silent: float = float("nan")
    neuron: str = "ilif"  # "relu"/"silu": the ANN twin, every conv charged as MACs
    extra: dict = field(default_factory=dict)

    @property
    def is_ann(self) -> bool:
        return self.neuron != "ilif"

    @property
    def warnings(self) -> list[str]:
        """Why the numbers may mislead: a nearly silent network."""
        if self.is_ann or not self.firing_rate < SILENT_FIRING_RATE:
            return []
        return [f"the network is nearly silent: mean firing rate {self.firing_rate:.4f} < {SILENT_FIRING_RATE} "
                "(an untrained or broken model?); its SNN energy and the ANN/SNN ratio are not meaningful"]

    # -- totals (per image) ---------------------------------------------------------------------------------------
    @property
    def energy_pJ(self) -> float:
        return sum(layer.energy_pJ for layer in self.layers)

    @property
    def energy_mJ(self) -> float:
        return self.energy_pJ * 1e-9

    @property
    def macs(self) -> int:
        """Dense MACs of one pass (one timestep) of every conv: the ANN twin's work."""
        return sum(layer.macs for layer in self.layers)

    @property
    def ann_energy_mJ(self) -> float:
        return self.e_mac * self.macs * 1e-9

    @property
    def ratio(self) -> float:
        """ANN energy / SNN energy."""
        return self.ann_energy_mJ / self.energy_mJ if self.energy_mJ else float("inf")

    @property
    def synops(self) -> float:
        """Estimated accumulates on spikes (NeuroBench Effective_ACs): ``sum MACs_l * fr_l * T``."""
        return sum(layer.ops for layer in self.layers if layer.firing_rate is not None)

    @property
    def effective_macs(self) -> float:
        """Ops on real-valued inputs (the stem), whether charged as MACs or, with ``first_layer="ac"``, as ACs."""
        return sum(layer.ops for layer in self.layers if layer.firing_rate is None)

    @property
    def dense(self) -> float:
        """Every op as if no input were zero (NeuroBench Dense): stem x frames, spiking convs x T."""
        return sum(layer.macs * (self.frames if layer.firing_rate is None else self.T) for layer in self.layers)

    @property
    def synops_measured(self) -> float | None:
        vals = [layer.synops_measured for layer in self.layers if layer.firing_rate is not None]
        return None if not vals or any(v is None for v in vals) else float(sum(vals))

    def by_stage(self) -> dict[str, float]:
        """Energy (mJ) per stage: backbone, neck, head."""
        out = {s: 0.0 for s in STAGES}
        for layer in self.layers:
            out[layer.stage] = out.get(layer.stage, 0.0) + layer.energy_pJ * 1e-9
        return out

    def summary(self) -> dict:
        """Flat scalars for results.csv / loggers."""
        if self.is_ann:  # no spikes: the columns keep their names, firing rate and synops are undefined
            return {"snn/firing_rate": float("nan"), "snn/synops": 0.0, "snn/energy_mJ": self.energy_mJ,
                    "snn/ann_energy_mJ": self.ann_energy_mJ, "snn/sparsity": float("nan")}
        out = {"snn/firing_rate": self.firing_rate, "snn/synops": self.synops, "snn/energy_mJ": self.energy_mJ,
               "snn/ann_energy_mJ": self.ann_energy_mJ, "snn/sparsity": self.silent}
        if self.synops_measured is not None:
            out["snn/synops_measured"] = self.synops_measured
        return out

    def to_dict(self) -> dict:
        d = {
            "energy_mJ": self.energy_mJ, "ann_energy_mJ": self.ann_energy_mJ, "ratio": self.ratio,
            "synops": self.synops, "effective_macs": self.effective_macs, "dense": self.dense, "macs": self.macs,
            "firing_rate": self.firing_rate, "activation_sparsity": self.silent,
            "by_stage_mJ": self.by_stage(), "T": self.T, "D": self.D, "frames": self.frames,
            "e_mac_pJ": self.e_mac, "e_ac_pJ": self.e_ac, "imgsz": list(self.imgsz), "images": self.images,
            "first_layer": self.first_layer, "geometry": self.geometry, "neuron": self.neuron,
            "warnings": self.warnings, "layers": [layer.to_dict() for layer in self.layers], **self.extra,
        }
        if self.synops_measured is not None:
            d["synops_measured"] = self.synops_measured
        return d

    # -- text and files ------------------------------------------------------------------------------------------
    def table(self) -> str:
        measured = self.synops_measured is not None
        head = (f"{'layer':<26} {'stage':<8} {'op':<3} {'MACs':>10} {'fr':>6} {'silent':>6} {'ops':>10} "
                f"{'energy uJ':>10}" + (f" {'SynOps meas.':>12}" if measured else ""))
        lines = [head]
        for r in self.layers:
            fr = "-" if r.firing_rate is None else f"{r.firing_rate:.3f}"
            silent = "-" if r.silent is None else f"{r.silent:.3f}"
            line = (f"{r.name:<26} {r.stage:<8} {r.kind:<3} {_si(r.macs):>10} {fr:>6} {silent:>6} {_si(r.ops):>10} "
                    f"{r.energy_pJ * 1e-6:>10.2f}")
            if measured:
                line += f" {_si(r.synops_measured) if r.synops_measured is not None else '-':>12}"
            lines.append(line)
        h, w = self.imgsz
        stage = ", ".join(f"{k} {v:.3f}" for k, v in self.by_stage().items())
        if self.is_ann:
            return "\n".join(lines + [
                f"per image at {h}x{w}, {self.geometry} geometry, {self.images} images",
                f"ANN twin (neuron={self.neuron}): no spikes, every conv counted as dense MACs at "
                f"E_MAC={self.e_mac} pJ",
                f"MACs {_si(self.macs)}, energy {self.energy_mJ:.4f} mJ; by stage (mJ): {stage}",
            ])
        lines += [
            f"per image at {h}x{w}, T={self.T}, D={self.D}, {self.geometry} geometry, first layer as "
            f"{self.first_layer.upper()}, E_MAC={self.e_mac} pJ, E_AC={self.e_ac} pJ, {self.images} images",
            f"firing rate {self.firing_rate:.4f} (mean spike count in [0, {self.D}]; per virtual step "
            f"{self.firing_rate / self.D:.4f}), activation sparsity {self.silent:.4f}",
            f"MACs (one pass) {_si(self.macs)}, stem MACs {_si(self.effective_macs)}, SynOps (est.) "
            f"{_si(self.synops)}" + (f", SynOps (measured) {_si(self.synops_measured)}" if measured else ""),
            f"energy: SNN {self.energy_mJ:.4f} mJ, ANN {self.ann_energy_mJ:.4f} mJ, ratio {self.ratio:.2f}x; "
            f"by stage (mJ): {stage}",
        ]
        return "\n".join(lines + [f"WARNING: {w}" for w in self.warnings])

    def save_csv(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        rows = [layer.to_dict() for layer in self.layers]
        with path.open("w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
        return path

    def save_json(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(plain_json(self.to_dict(), indent=1))
        return path


def _si(x: float | None) -> str:
    if x is None:
        return "-"
    for unit, div in (("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(x) >= div:
            return f"{x / div:.3f}{unit}"
    return f"{x:.0f}"


def estimate_energy(
    geometry: list[ConvGeometry],
    rates: Mapping[str, float | NeuronStats],
    *,
    T: int = 1,
    D: int = NeuronConfig.D,
    e_mac: float = E_MAC_PJ,
    e_ac: float = E_AC_PJ,
    first_layer: str = "mac",
    frames: float = 1.0,
    geometry_name: str = "fused",
    images: int = 0,
    neuron: str = "ilif",
) -> EnergyReport:
    """Energy report from conv shapes and the firing rate of the neuron feeding each conv.

    Args:
        geometry: from :func:`unit_geometry` (per image per timestep).
        rates: unit path -> firing rate (mean spike count in [0, D]) or :class:`NeuronStats`.
        T: real timesteps; the AC count of a spiking conv is ``MACs * fr * T``.
        first_layer: ``"mac"`` (default, as the spreadsheet: the stem sees real values) or ``"ac"`` (charge each
            stem MAC as one AC, as if the image were spikes; the paper's choice is unverified).
        frames: distinct input frames per image the stem convolves (1 for a static image, T for event frames).
        neuron: ``"ilif"``, or ``"relu"``/``"silu"`` for the ANN twin: every conv charged as MACs at ``e_mac``
            (``rates`` and ``first_layer`` unused).
    """
    if first_layer not in FIRST_LAYER:
        raise ValueError(f"first_layer must be one of {FIRST_LAYER}, got {first_layer!r}")
    if neuron != "ilif":
        return _ann_energy(geometry, T=T, D=D, e_mac=e_mac, e_ac=e_ac, geometry_name=geometry_name, images=images,
                           neuron=neuron)
    layers, total, elements, nonzero = [], 0.0, 0, 0
    for g in geometry:
        if not g.spiking:
            e = (e_mac if first_layer == "mac" else e_ac) * g.macs * frames
            layers.append(LayerEnergy(**_shape_of(g), kind=first_layer.upper(), firing_rate=None,
                                      rate_per_step=None, silent=None, ops=g.macs * frames, energy_pJ=e))
            continue
        if g.unit not in rates:
            raise KeyError(f"no firing rate for {g.unit!r}: run the model under the monitor first")
        r = rates[g.unit]
        st = r if isinstance(r, NeuronStats) else None
        fr = st.firing_rate if st else float(r)
        ops = g.macs * fr * T
        measured = st.synops / images if st and st.synops is not None and images and geometry_name == "fused" else None
        layers.append(LayerEnergy(**_shape_of(g), kind="AC", firing_rate=fr, rate_per_step=fr / D,
                                  silent=st.silent if st else None, ops=ops, energy_pJ=e_ac * ops,
                                  synops_measured=measured, dead_channels=st.dead_channels if st else None))
    seen = set()
    for g in geometry:  # element-weighted mean over the neurons (each counted once)
        st = rates.get(g.unit) if g.spiking else None
        if isinstance(st, NeuronStats) and g.unit not in seen:
            seen.add(g.unit)
            total, elements, nonzero = total + st.total, elements + st.elements, nonzero + st.nonzero
    if elements:
        fr_all, silent = total / elements, 1.0 - nonzero / elements
    else:  # plain rates: weight each neuron by its number of outputs per image (the conv's input size)
        weights: dict[str, int] = {}
        for g in geometry:  # the first conv of a unit receives the neuron's output
            if g.spiking:
                weights.setdefault(g.unit, g.cin * g.hin * g.win)
        n = sum(weights.values())
        fr_all = sum(float(rates[u]) * w for u, w in weights.items()) / n if n else float("nan")
        silent = float("nan")
    h, w = _input_size(geometry)
    return EnergyReport(layers=layers, T=T, D=D, e_mac=e_mac, e_ac=e_ac, imgsz=(h, w), first_layer=first_layer,
                        geometry=geometry_name, frames=frames, images=images, firing_rate=fr_all, silent=silent)


def _ann_energy(geometry: list[ConvGeometry], *, T, D, e_mac, e_ac, geometry_name, images, neuron) -> EnergyReport:
    """Every conv of the ANN twin as dense MACs (real-valued inputs everywhere), once per timestep."""
    layers = [LayerEnergy(**_shape_of(g), kind="MAC", firing_rate=None, rate_per_step=None, silent=None,
                          ops=g.macs * T, energy_pJ=e_mac * g.macs * T) for g in geometry]
    h, w = _input_size(geometry)
    return EnergyReport(layers=layers, T=T, D=D, e_mac=e_mac, e_ac=e_ac, imgsz=(h, w), first_layer="mac",
                        geometry=geometry_name, frames=float(T), images=images, neuron=neuron)


def _network(model: nn.Module) -> nn.Module:
    """The torch network to monitor: the one an InferenceModel runs (its module paths are the network's own, as
    the geometry names them), inside any DDP / compile wrapper."""
    model = unwrap(model)
    return model.net if isinstance(model, InferenceModel) else model


def _shape_of(g: ConvGeometry) -> dict:
    """The fields a :class:`LayerEnergy` copies from its conv's geometry."""
    return {"name": g.name, "unit": g.unit, "layer": g.layer, "stage": g.stage, "cin": g.cin, "cout": g.cout,
            "k": g.k, "stride": g.stride, "groups": g.groups, "hout": g.hout, "wout": g.wout, "macs": g.macs}


def _input_size(geometry: list[ConvGeometry]) -> tuple[int, int]:
    stem = next((g for g in geometry if not g.spiking), geometry[0])
    return stem.hin, stem.win


class EnergyMeter:
    """Firing rates over a dataset -> energy report. For the end of validation and for every epoch's validation.

        meter = EnergyMeter(model)
        with meter.monitor(model):          # or meter.start(model) ... meter.stop() -> summary dict
            for batch in loader:
                model(x)
        report = meter.report()             # EnergyReport at the most common input size seen (or imgsz=(H, W))
        report.summary()                    # {"snn/firing_rate", "snn/synops", "snn/energy_mJ", ...}

    Args:
        model: the architecture to take the conv shapes from (any form; weights are not read). None: the model
            given to :meth:`monitor` / :meth:`start` (so a trainer can be handed ``EnergyMeter()`` before it
            builds its model).
        e_mac, e_ac: energy per MAC / per AC in pJ.
        first_layer: ``"mac"`` or ``"ac"`` (see :func:`estimate_energy`).
        geometry: ``"fused"`` (the paper's model) or ``"train"`` (unfused; a train-form model only).
        synops: also measure the synaptic operations actually performed (see :mod:`.ops`); cheap.
        sync: in :meth:`stop`, sum the statistics over all ``torch.distributed`` ranks first (every rank must
            call ``stop``; leave False when only one rank validates).
    """

    def __init__(self, model: nn.Module | None = None, *, e_mac: float = E_MAC_PJ, e_ac: float = E_AC_PJ,
                 first_layer: str = "mac", geometry: str = "fused", synops: bool = True, sync: bool = False):
        if first_layer not in FIRST_LAYER:
            raise ValueError(f"first_layer must be one of {FIRST_LAYER}, got {first_layer!r}")
        self.model = _network(model) if model is not None else None
        self.e_mac, self.e_ac = float(e_mac), float(e_ac)
        self.first_layer, self.geometry, self.measure_synops, self.sync = first_layer, geometry, synops, sync
        self._monitor: FiringRateMonitor | None = None
        self._geometry_cache: dict = {}

    @property
    def last_monitor(self) -> FiringRateMonitor | None:
        """The monitor of the last (or current) run."""
        return self._monitor

    def all_reduce(self) -> None:
        """Sum the last run's statistics over all ``torch.distributed`` ranks (collective: call on every rank)."""
        if self._monitor is not None:
            self._monitor.all_reduce()

    def monitor(self, model: nn.Module | None = None, reset: bool = True) -> FiringRateMonitor:
        """A context manager that monitors ``model`` (default: the meter's). ``reset=False`` continues the previous
        run's statistics (same model object)."""
        model = _network(model) if model is not None else self.model
        if model is None:
            raise ValueError("EnergyMeter.monitor: no model given (and none at construction)")
        if reset or self._monitor is None:
            self._monitor = FiringRateMonitor(model, synops=self.measure_synops)
        elif self._monitor.model is not model:
            raise ValueError("EnergyMeter.monitor(reset=False) needs the model of the previous run")
        return self._monitor

    def start(self, model: nn.Module | None = None) -> None:
        """Begin monitoring (the validator's ``energy.start(model)``)."""
        self.monitor(model).attach()

    def stop(self) -> dict:
        """Stop monitoring; the summary scalars of :meth:`report` (empty if nothing ran)."""
        if self._monitor is None:
            return {}
        self._monitor.detach()
        if self.sync:
            self._monitor.all_reduce()
        if self._monitor.inputs.images == 0:
            return {}
        return self.report().summary()

    def report(self, imgsz: int | tuple[int, int] | None = None, **overrides) -> EnergyReport:
        """The energy report per image at ``imgsz`` (default: the input size seen most often).

        ``overrides``: ``e_mac``, ``e_ac``, ``first_layer``, ``geometry`` for this report only.
        """
        mon = self._monitor
        if mon is None or mon.inputs.images == 0:
            raise RuntimeError("EnergyMeter.report: nothing monitored yet (run the model inside meter.monitor())")
        if imgsz is None:
            imgsz = mon.inputs.common_size
        hw = (imgsz, imgsz) if isinstance(imgsz, int) else tuple(imgsz)
        geometry = overrides.get("geometry", self.geometry)
        arch = self.model if self.model is not None else unwrap(mon.model)
        key = (repr(getattr(arch, "config", id(arch))), hw, geometry)
        if key not in self._geometry_cache:
            self._geometry_cache[key] = unit_geometry(arch, hw, geometry)
        config = getattr(arch, "config", {}) or {}
        stats = mon.stats()
        D = next(iter(stats.values())).D if stats else NeuronConfig.from_config(config).D
        T = mon.timesteps or int(config.get("T", 1))
        frames = mon.inputs.mean_frames
        report = estimate_energy(self._geometry_cache[key], stats, T=T, D=D,
                                 e_mac=overrides.get("e_mac", self.e_mac), e_ac=overrides.get("e_ac", self.e_ac),
                                 first_layer=overrides.get("first_layer", self.first_layer), frames=frames,
                                 geometry_name=geometry, images=mon.inputs.images,
                                 neuron=config.get("neuron", "ilif") if isinstance(config, dict) else "ilif")
        report.extra["input_sizes"] = {f"{h}x{w}": n for (h, w), n in mon.inputs.sizes.items()}
        report.extra["dead_channels"] = sum(s.dead_channels for s in stats.values())
        return report
