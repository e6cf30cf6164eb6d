"""`spikeyolo energy` end to end on a tiny checkpoint and a tiny generated YOLO dataset."""

from __future__ import annotations

import argparse
import csv
import json

import cv2
import numpy as np
import pytest
import torch
from torch import nn

import spikeyolo
from spikeyolo.cli import COMMANDS, add_energy_args, run_energy
from spikeyolo.nn.neuron import ILIF


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("energy_cli")
    (root / "images").mkdir()
    (root / "labels").mkdir()
    rng = np.random.default_rng(0)
    for i in range(5):  # 64x64: the letterbox leaves them as they are
        cv2.imwrite(str(root / "images" / f"im{i}.png"), rng.integers(0, 256, (64, 64, 3), dtype=np.uint8))
        (root / "labels" / f"im{i}.txt").write_text("0 0.5 0.5 0.25 0.25\n")
    (root / "data.yaml").write_text("train: images\nval: images\nnames: [a, b, c]\n")
    torch.manual_seed(0)
    model = spikeyolo.build_model("s", nc=3, width=0.125, imgsz=64)
    g = torch.Generator().manual_seed(0)
    for m in model.modules():  # make the neurons fire
        if isinstance(m, nn.BatchNorm2d):
            m.bias.data = torch.rand(m.num_features, generator=g) * 2 - 0.3
    spikeyolo.save(model, root / "w.pt")
    return root


def _run(capsys, root, *extra):
    """The registered `energy` command on its own parser (other commands' imports play no part)."""
    assert COMMANDS["energy"][:2] == (add_energy_args, run_energy)
    parser = argparse.ArgumentParser(prog="spikeyolo energy")
    add_energy_args(parser)
    argv = ["--weights", str(root / "w.pt"), "--data", str(root / "data.yaml"), "--imgsz", "64",
            "--batch", "2", "--json", *extra]
    assert run_energy(parser.parse_args(argv)) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    return json.loads(lines[-1]), "\n".join(lines[:-1])


def test_energy_cli_json(tiny_run, capsys):
    root = tiny_run
    out, text = _run(capsys, root, "--out", str(root / "out"))
    for key in ("energy_mJ", "ann_energy_mJ", "synops", "synops_measured", "firing_rate", "layers", "ratio"):
        assert key in out
    assert out["images"] == 5 and out["imgsz"] == [64, 64] and len(out["layers"]) == 89
    layers = out["layers"]
    assert [r["kind"] for r in layers] == ["MAC"] + ["AC"] * 88
    assert {r["stage"] for r in layers} == {"backbone", "neck", "head"}
    # totals from the per-layer rows, by hand
    stem = layers[0]["cin"] * layers[0]["cout"] * 49 * 16 * 16
    assert layers[0]["macs"] == stem == 3 * 16 * 49 * 256
    assert out["energy_mJ"] == pytest.approx((4.6 * stem + 0.9 * sum(r["macs"] * r["firing_rate"]
                                                                     for r in layers[1:])) * 1e-9, rel=1e-9)
    assert out["ann_energy_mJ"] == pytest.approx(4.6 * sum(r["macs"] for r in layers) * 1e-9, rel=1e-12)
    assert out["synops_measured"] == pytest.approx(sum(r["synops_measured"] for r in layers[1:]))
    assert 0 < out["synops_measured"] <= out["synops"] * 1.2

    # the firing rate, independently: every I-LIF of the train form on the five images read with OpenCV
    model = spikeyolo.load(root / "w.pt")
    total, n = 0.0, 0

    def hook(_m, _i, y):
        nonlocal total, n
        total, n = total + float(y.double().sum()), n + y.numel()

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, ILIF)]
    with torch.no_grad():
        for i in range(5):
            img = cv2.imread(str(root / "images" / f"im{i}.png"))[:, :, ::-1].copy()
            model(torch.from_numpy(img).permute(2, 0, 1)[None].float() / 255)
    for h in handles:
        h.remove()
    assert out["firing_rate"] == pytest.approx(total / n, rel=1e-3)
    assert 0.05 < out["firing_rate"] < 4

    # files: per-layer CSV, JSON, two plots; the table on stdout
    saved = root / "out"
    rows = list(csv.DictReader((saved / "energy_layers.csv").open()))
    assert len(rows) == 89 and rows[0]["name"] == "layers.1"
    assert json.loads((saved / "energy.json").read_text())["energy_mJ"] == pytest.approx(out["energy_mJ"])
    for png in ("firing_rates.png", "energy_by_stage.png"):
        assert (saved / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "layers.2.sep.pw" in text and "energy: SNN" in text


def test_energy_cli_options(tiny_run, capsys):
    root = tiny_run
    out, _ = _run(capsys, root, "--out", str(root / "o2"), "--e-ac", "0", "--e-mac", "1", "--max-batches", "1",
                  "--no-plots", "--no-synops")
    assert out["images"] == 2  # one batch of two
    assert out["energy_mJ"] == pytest.approx(out["layers"][0]["macs"] * 1e-9)  # only the stem, at 1 pJ
    assert "synops_measured" not in out
    assert not (root / "o2" / "firing_rates.png").exists()
