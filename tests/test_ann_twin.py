"""The ANN twin (``neuron="relu"/"silu"``): same architecture, real-valued activations, MAC energy, refusals,
and the nearly-silent-network warning of energy reports."""

from __future__ import annotations

import argparse
import json

import cv2
import numpy as np
import pytest
import torch
from torch import nn

import spikeyolo
from spikeyolo.cli import add_energy_args, add_train_args, run_energy, run_train
from spikeyolo.energy import EnergyMeter, estimate_energy
from spikeyolo.energy.ops import unit_geometry
from spikeyolo.energy.report import SILENT_FIRING_RATE
from spikeyolo.nn.neuron import ILIF, Activation

TINY = dict(nc=2, width=0.125, imgsz=64)


def _count(model, kind):
    return sum(isinstance(m, kind) for m in model.modules())


@pytest.mark.parametrize("kind", ["relu", "silu"])
def test_twin_has_the_same_blocks_with_an_activation_for_each_neuron(kind):
    snn = spikeyolo.build_model("s", **TINY)
    ann = spikeyolo.build_model("s", neuron=kind, **TINY)
    assert _count(ann, ILIF) == 0 and _count(ann, Activation) == _count(snn, ILIF) == 88
    assert [k for k, _ in ann.named_parameters()] == [k for k, _ in snn.named_parameters()]
    assert spikeyolo.models.checkpoint.count_parameters(ann) == spikeyolo.models.checkpoint.count_parameters(snn)
    assert ann.config["neuron"] == kind and ann.neuron.kind == kind and snn.neuron.kind == "ilif"


@pytest.mark.parametrize("kind,fn", [("relu", torch.relu), ("silu", nn.functional.silu)])
def test_twin_unit_computes_activation_then_conv_bn(kind, fn):
    torch.manual_seed(0)
    ann = spikeyolo.build_model("s", neuron=kind, **TINY).double().eval()
    unit = ann.layers[3]  # the first Downsample: activation -> conv(bias) -> BN
    x = torch.randn(1, 2, unit.conv.in_channels, 16, 16, dtype=torch.float64) * 3
    bn, conv = unit.bn, unit.conv
    expect = nn.functional.conv2d(fn(x).flatten(0, 1), conv.weight, conv.bias,
                                  conv.stride, conv.padding)
    expect = (expect - bn.running_mean.view(1, -1, 1, 1)) / torch.sqrt(bn.running_var.view(1, -1, 1, 1) + bn.eps)
    expect = expect * bn.weight.view(1, -1, 1, 1) + bn.bias.view(1, -1, 1, 1)
    got = unit(x).flatten(0, 1)
    assert torch.allclose(got, expect, atol=1e-12)
    assert (got != got.round()).any()  # real values, not spike counts


def test_twin_needs_T_1_and_unknown_neurons_are_rejected():
    with pytest.raises(ValueError, match="T must be 1"):
        spikeyolo.build_model("s", T=2, neuron="relu", **TINY)
    with pytest.raises(ValueError, match="unknown neuron 'gelu'"):
        spikeyolo.build_model("s", neuron="gelu", **TINY)


def test_twin_checkpoint_round_trip_and_fuse(tmp_path):
    torch.manual_seed(0)
    ann = spikeyolo.build_model("s", neuron="silu", **TINY)
    for m in ann.modules():  # non-trivial BN statistics
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
    spikeyolo.save(ann, tmp_path / "ann.pt")
    back = spikeyolo.load(tmp_path / "ann.pt").double()
    assert back.neuron.kind == "silu" and _count(back, ILIF) == 0
    x = torch.rand(1, 3, 64, 64, dtype=torch.float64)
    ref = ann.double().eval()(x)
    assert torch.equal(back(x), ref)
    assert torch.allclose(spikeyolo.fuse(back)(x), ref, atol=1e-9)  # fusion is linear algebra: allowed


def test_spike_only_forms_refuse_the_twin():
    ann = spikeyolo.build_model("s", neuron="relu", **TINY).eval()
    with pytest.raises(ValueError, match="ANN twin"):
        spikeyolo.to_spike_driven(ann)
    with pytest.raises(ValueError, match="ANN twin"):
        spikeyolo.audit(spikeyolo.fuse(ann), torch.rand(1, 3, 64, 64))


def test_twin_energy_is_every_mac_at_4_6_pj():
    ann = spikeyolo.build_model("s", neuron="relu", **TINY).eval()
    meter = EnergyMeter(ann)
    with meter.monitor(ann), torch.no_grad():
        ann(torch.rand(2, 3, 64, 64))
    r = meter.report()
    # independent count: every conv of the fused network, Cin*Cout*k*k*Hout*Wout/groups, one pass
    fused = spikeyolo.fuse(ann)
    macs = []
    hooks = [c.register_forward_hook(lambda c, i, o: macs.append(
        c.in_channels * c.out_channels * c.kernel_size[0] * c.kernel_size[1] * o.shape[-2] * o.shape[-1]
        // c.groups)) for c in fused.modules() if isinstance(c, nn.Conv2d)]
    with torch.no_grad():
        fused(torch.rand(1, 3, 64, 64))
    for h in hooks:
        h.remove()
    assert r.is_ann and r.neuron == "relu" and r.images == 2
    assert [layer.kind for layer in r.layers] == ["MAC"] * len(macs)
    assert r.energy_pJ == pytest.approx(4.6 * sum(macs), rel=1e-12)
    assert r.synops == 0 and r.warnings == []
    assert "ANN twin (neuron=relu)" in r.table() and "4.6 pJ" in r.table()
    assert r.to_dict()["neuron"] == "relu"


def test_silent_network_warning():
    snn = spikeyolo.build_model("s", **TINY).eval()
    geometry = unit_geometry(snn, 64)
    units = {g.unit for g in geometry if g.spiking}
    quiet = estimate_energy(geometry, {u: SILENT_FIRING_RATE / 2 for u in units})
    busy = estimate_energy(geometry, {u: 0.3 for u in units})
    assert quiet.firing_rate == pytest.approx(SILENT_FIRING_RATE / 2)
    assert len(quiet.warnings) == 1 and "nearly silent" in quiet.warnings[0]
    assert "WARNING: the network is nearly silent" in quiet.table() and quiet.to_dict()["warnings"]
    assert busy.warnings == [] and "WARNING" not in busy.table()


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    root = tmp_path_factory.mktemp("ann_cli")
    (root / "images").mkdir()
    (root / "labels").mkdir()
    rng = np.random.default_rng(0)
    for i in range(4):
        cv2.imwrite(str(root / "images" / f"im{i}.png"), rng.integers(0, 256, (64, 64, 3), dtype=np.uint8))
        (root / "labels" / f"im{i}.txt").write_text("0 0.5 0.5 0.25 0.25\n")
    (root / "data.yaml").write_text("train: images\nval: images\nnames: [a, b]\n")
    return root


def test_cli_trains_the_twin_and_reports_its_energy(tiny_data, tmp_path, capsys):
    p = argparse.ArgumentParser()
    add_train_args(p)
    args = p.parse_args(["--data", str(tiny_data / "data.yaml"), "--model", "s", "--width", "0.125", "--epochs", "1",
                         "--imgsz", "64", "--batch", "2", "--workers", "0", "--device", "cpu", "--neuron", "relu",
                         "--project", str(tmp_path), "--name", "ann", "--json"])
    assert run_train(args) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    ckpt = spikeyolo.models.checkpoint.read_checkpoint(out["last"])
    assert ckpt["config"]["neuron"] == "relu" and ckpt["train_args"]["neuron_kind"] == "relu"
    p = argparse.ArgumentParser()
    add_energy_args(p)
    assert run_energy(p.parse_args(["--weights", out["last"], "--data", str(tiny_data / "data.yaml"), "--imgsz",
                                    "64", "--out", str(tmp_path / "e"), "--json", "--no-plots"])) == 0
    text = capsys.readouterr().out
    report = json.loads(text.strip().splitlines()[-1])
    assert report["neuron"] == "relu" and report["ratio"] == pytest.approx(1.0)
    assert {r["kind"] for r in report["layers"]} == {"MAC"} and "ANN twin" in text


def test_cli_rejects_a_multi_step_twin(tiny_data, tmp_path):
    p = argparse.ArgumentParser()
    add_train_args(p)
    args = p.parse_args(["--data", str(tiny_data / "data.yaml"), "--width", "0.125", "--epochs", "1", "--imgsz",
                         "64", "--device", "cpu", "--workers", "0", "--neuron", "silu", "--T", "2",
                         "--project", str(tmp_path)])
    with pytest.raises(ValueError, match="T must be 1"):
        run_train(args)
