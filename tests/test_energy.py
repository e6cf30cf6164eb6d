"""Energy accounting: the official spreadsheet's anchor, the monitor by hand, the AC formula by brute force."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
import torch
from torch import nn

import spikeyolo
from spikeyolo.energy import EnergyMeter, FiringRateMonitor, estimate_energy, stage_of, unit_geometry
from spikeyolo.nn.neuron import ILIF
from spikeyolo.nn.units import FusedUnit

DATA = Path(__file__).parent / "data"
GEOMETRY_KEYS = ("cin", "cout", "k", "stride", "hin", "win", "hout", "wout", "groups")


# -- anchor: the official power_cal.xlsx rows on the s model at 640x640 ----------------------------------------------
@pytest.fixture(scope="module")
def s640():
    with torch.device("meta"):  # shapes only
        model = spikeyolo.build_model("s", nc=80)
    return model, unit_geometry(model, 640)


def test_s640_fused_macs(s640):
    _, geom = s640
    assert len(geom) == 89 and sum(g.spiking for g in geom) == 88
    assert geom[0].unit == "layers.1" and not geom[0].spiking
    assert geom[0].macs == 3 * 64 * 7 * 7 * 160 * 160 == 240_844_800
    assert sum(g.macs for g in geom) == 104_514_355_200


def test_s640_train_form_macs(s640):
    model, _ = s640
    # spikeyolo.md 4.3: unfused (training-form) conv MACs of s = 60.55 G, also asked of the fused form
    assert sum(g.macs for g in unit_geometry(model, 640, "train")) == pytest.approx(60.55e9, abs=0.005e9)
    geom = unit_geometry(spikeyolo.fuse(model), 640, "train")
    assert len(geom) == 129 and sum(g.macs for g in geom) == pytest.approx(60.55e9, abs=0.005e9)


def test_power_cal_rows_reproduce_35_38_mJ(s640):
    _, geom = s640
    rows = list(csv.DictReader((DATA / "power_cal_rows.csv").open()))
    assert len(rows) == len(geom) == 89
    mismatches = {}
    for i, (row, g) in enumerate(zip(rows, geom), start=1):
        diff = {k: (int(row[k]), getattr(g, k)) for k in GEOMETRY_KEYS if int(row[k]) != getattr(g, k)}
        if diff:
            mismatches[i] = (row["neuron"], diff)
    # exactly the spreadsheet's known errors 2 and 3 (power_cal_rows.md); every other row is our fused conv
    assert mismatches == {
        45: ("model.model.12.Conv.lif3", {k: (20, 40) for k in ("hin", "win", "hout", "wout")}),
        64: ("model.model.22.lif1", {"cout": (512, 768)}),
        65: ("model.model.22.lif2", {"cin": (512, 768)}),
    }
    # by hand from the CSV with the three corrections: stem at 4.6 pJ/MAC, every other row 0.9 pJ * fr per MAC
    def macs(r, fix=None):
        r = {**{k: int(r[k]) for k in GEOMETRY_KEYS}, **(fix or {})}
        return r["cin"] * r["cout"] * r["k"] ** 2 * r["hout"] * r["wout"] // r["groups"]

    fixes = {45: {"hout": 40, "wout": 40}, 64: {"cout": 768}, 65: {"cin": 768}}
    m = [macs(r, fixes.get(i)) for i, r in enumerate(rows, start=1)]
    by_hand_snn = (4.6 * m[0] + sum(0.9 * float(r["firing_rate"]) * x for r, x in zip(rows[1:], m[1:]))) * 1e-9
    assert sum(m) == 104_514_355_200
    assert by_hand_snn == pytest.approx(35.377, abs=5e-4)
    # the raw sheet (errors kept, the stem charged 0.9 * 4.6 per MAC) gives the stored totals
    raw = [macs(r) for r in rows]
    assert sum(raw) == 101_211_340_800
    assert sum(0.9 * float(r["firing_rate"]) * x for r, x in zip(rows, raw)) * 1e-9 == pytest.approx(34.489, abs=5e-4)

    rates = {g.unit: float(r["firing_rate"]) for r, g in zip(rows, geom) if g.spiking}
    report = estimate_energy(geom, rates)
    assert report.energy_mJ == pytest.approx(35.38, abs=0.005)
    assert report.energy_mJ == pytest.approx(by_hand_snn, rel=1e-12)
    assert report.ann_energy_mJ == pytest.approx(480.77, abs=0.005)
    assert report.ratio == pytest.approx(480.766 / 35.3767, rel=1e-4)
    assert report.layers[0].kind == "MAC" and report.layers[0].energy_pJ == pytest.approx(4.6 * 240_844_800)
    # first layer charged as AC instead: the stem costs 0.9 pJ per MAC
    as_ac = estimate_energy(geom, rates, first_layer="ac")
    assert as_ac.energy_mJ == pytest.approx(by_hand_snn - 3.7 * 240_844_800 * 1e-9, rel=1e-12)
    assert as_ac.synops == report.synops and as_ac.effective_macs == report.effective_macs == 240_844_800
    # stages by layer index: 0-9 backbone, 10-25 neck, 26 head
    roles = spikeyolo.build_model("n").roles
    assert [stage_of(n, roles) for n in ("layers.9.cv2", "layers.10", "layers.25.conv2", "layers.26.box.0.0")] == [
        "backbone", "neck", "neck", "head"]
    stages = report.by_stage()
    assert sum(stages.values()) == pytest.approx(report.energy_mJ)
    assert all(v > 0 for v in stages.values())


# -- the monitor on a hand-built case -------------------------------------------------------------------------------
class _OneUnit(nn.Module):
    """``[B, T, C, H, W] -> I-LIF -> 3x3 conv``: one fused unit, T from the input."""

    def __init__(self, D=4, cout=3, groups=1):
        super().__init__()
        self.unit = FusedUnit(ILIF(D=D), nn.Conv2d(2, cout, 3, 1, 1, groups=groups))

    def forward(self, x):
        return self.unit(x.transpose(0, 1))


def test_monitor_weights_by_elements_not_by_batch():
    model = _OneUnit()
    a = torch.empty(1, 1, 2, 4, 4)
    a[:, :, 0], a[:, :, 1] = 3.7, 0.3  # -> spikes 4 and 0
    b = torch.empty(3, 1, 2, 4, 4)
    b[:, :, 0], b[:, :, 1] = 1.2, -3.0  # -> spikes 1 and 0
    mon = FiringRateMonitor(model, synops=False)
    with mon:
        model(a)
        model(b)
    model(a)  # detached: not counted
    s = mon.stats()["unit"]
    assert (s.total, s.elements, s.nonzero) == (4 * 16 + 1 * 48, 32 + 96, 16 + 48)
    assert s.firing_rate == pytest.approx(112 / 128)  # 0.875; the mean of the batch means would be 1.25
    assert s.rate_per_step == pytest.approx(112 / 128 / 4)
    assert s.silent == pytest.approx(64 / 128)
    assert (s.channels, s.dead_channels) == (2, 1)  # channel 1 never fired
    assert mon.inputs.images == 4 and dict(mon.inputs.sizes) == {(4, 4): 4}
    assert mon.firing_rate() == pytest.approx(0.875)


def test_monitor_T2_rate_is_per_timestep():
    model = _OneUnit()
    x = torch.full((2, 2, 2, 3, 3), 0.6)  # B=2, T=2: u=0.6 -> 1, then 0.25*(0.6-1)+0.6 = 0.5 -> 0 (half to even)
    mon = FiringRateMonitor(model, synops=False)
    with mon:
        model(x)
    s = mon.stats()["unit"]
    assert s.elements == 2 * 2 * 2 * 9 and s.total == 2 * 2 * 9
    assert s.firing_rate == pytest.approx(0.5) and mon.timesteps == 2 and mon.inputs.images == 2


# -- the AC formula on a small model, by brute force ----------------------------------------------------------------
def _firing_model(T=1, seed=0):
    """A tiny s model whose BatchNorms are set so that most neurons fire (a fresh one is nearly silent)."""
    torch.manual_seed(seed)
    model = spikeyolo.build_model("s", nc=3, width=0.125, T=T, imgsz=64)
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.bias.data = torch.rand(m.num_features, generator=g) * 2 - 0.3
            m.weight.data = torch.rand(m.num_features, generator=g) + 0.5
    return model.eval()


def _brute_force_energy(fused, batches, T, e_mac=4.6, e_ac=0.9):
    """Per image, from each conv's own input and output tensors: stem 4.6 pJ per MAC once per image, every other
    conv 0.9 pJ * MACs per image per timestep * (mean input over everything it saw) * T."""
    seen = {}
    stem = fused.layers[1].conv

    def hook(conv, inputs, out):
        x = inputs[0]
        rec = seen.setdefault(conv, [0.0, 0, None])
        rec[0] += float(x.double().sum())
        rec[1] += x.numel()
        rec[2] = conv.in_channels * conv.out_channels * conv.kernel_size[0] ** 2 * out.shape[-2] * out.shape[-1] \
            // conv.groups

    handles = [m.register_forward_hook(hook) for m in fused.modules() if isinstance(m, nn.Conv2d)]
    with torch.no_grad():
        for x in batches:
            fused(x)
    for h in handles:
        h.remove()
    energy = ann = 0.0
    for conv, (total, n, macs) in seen.items():
        ann += e_mac * macs
        energy += e_mac * macs if conv is stem else e_ac * macs * (total / n) * T
    return energy * 1e-9, ann * 1e-9, seen


@pytest.fixture(scope="module")
def tiny():
    """A firing tiny model in its three forms, and two batches (weighting is tested by hand above)."""
    model = _firing_model(T=1)
    fused = spikeyolo.fuse(model)
    g = torch.Generator().manual_seed(1)
    return model, fused, spikeyolo.to_spike_driven(fused), [torch.rand(2, 3, 64, 64, generator=g) for _ in range(2)]


@pytest.mark.parametrize("T", [1, 2])
def test_ac_formula_brute_force(T, tiny):
    if T == 1:
        model, fused, _, batches = tiny
    else:
        model = _firing_model(T)  # one image per batch: the convs see T * 1 = 2 images, as with T = 1
        fused, batches = spikeyolo.fuse(model), [x[:1] for x in tiny[3]]
    energy, ann, seen = _brute_force_energy(fused, batches, T)
    assert len(seen) == 89

    # the validator's protocol; with T = 2 also the trainer's hand-off: no model until start()
    meter = EnergyMeter(model if T == 1 else None, synops=False)
    meter.start(fused)
    with torch.no_grad():
        for x in batches:
            fused(x)
    summary = meter.stop()
    report = meter.report()
    assert report.imgsz == (64, 64) and report.images == sum(len(x) for x in batches) and report.T == T
    assert report.energy_mJ == pytest.approx(energy, rel=1e-9)
    assert report.ann_energy_mJ == pytest.approx(ann, rel=1e-12)
    assert summary["snn/energy_mJ"] == pytest.approx(energy, rel=1e-9)
    assert summary["snn/synops"] == pytest.approx(report.synops)
    assert 0.2 < report.firing_rate < 3.5  # the model does fire: the test is not about zeros
    assert sum(1 for r in report.layers if r.firing_rate) > 80
    # e_ac = 0 leaves the stem alone; e_mac scales the ANN twin
    zero_ac = meter.report(e_ac=0.0, e_mac=1.0)
    assert zero_ac.energy_mJ == pytest.approx(report.layers[0].macs * 1e-9)
    assert zero_ac.ann_energy_mJ == pytest.approx(ann / 4.6)


def test_same_statistics_in_every_form(tiny):
    """Each neuron sits at the same unit path in the train, fused and spike-driven forms; the spike-driven form's
    binary virtual steps give the same counts as the fused form's integers."""
    model, fused, sd, batches = tiny
    names = []
    for m in (model, fused, sd):
        with FiringRateMonitor(m, synops=False) as mon:
            names.append(list(mon.stats()))
    assert names[0] == names[1] == names[2] and len(names[0]) == 88
    meter = EnergyMeter(model)
    reports = []
    for form in (fused, sd):
        with meter.monitor(form), torch.no_grad():
            form(batches[0])
        reports.append(meter.report())
    a, b = reports
    assert [r.name for r in a.layers] == [r.name for r in b.layers]
    for x, y in zip(a.layers[1:], b.layers[1:]):  # equal up to float summation order (a rare flipped spike)
        assert y.firing_rate == pytest.approx(x.firing_rate, rel=1e-3, abs=1e-4)
        assert y.synops_measured == pytest.approx(x.synops_measured, rel=1e-3, abs=1)
    assert b.energy_mJ == pytest.approx(a.energy_mJ, rel=1e-4)
    assert a.synops_measured <= a.synops  # stride-1 convs dominate; see test_energy_synops.py
