"""`spikeyolo info`: MAC counts against the reference's recomputed numbers, and the CLI's JSON line."""

import json
import subprocess
import sys

import pytest

from spikeyolo.cli import main
from spikeyolo.energy.summary import model_summary


def test_s_at_640_matches_the_reference_counts():
    s = model_summary("s", nc=80, imgsz=640)
    assert s.params == 23_153_024
    assert s.macs["first_layer"] == 240_844_800  # 3*64*7*7*160*160
    assert round(s.macs["fused"] / 1e9, 2) == 104.51
    assert round(s.macs["train"] / 1e9, 2) == 60.55
    # deploy: BN folded, RepConv / SepRepConv chains kept (fewer MACs than dense 3x3), so below both
    assert s.macs["deploy"] < s.macs["train"] < s.macs["fused"]


@pytest.mark.parametrize("scale,fused", [("n", 59.29), ("m", 217.30), ("l", 312.10)])
def test_other_scales_fused_macs(scale, fused):
    assert round(model_summary(scale, nc=80, imgsz=640).macs["fused"] / 1e9, 2) == fused


def test_cli_json_last_line(capsys):
    assert main(["info", "--model", "n", "--nc", "3", "--imgsz", "64", "--json"]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    data = json.loads(out[-1])
    assert data["params"] == model_summary("n", nc=3, imgsz=64).params
    assert set(data["macs"]) == {"train", "fused", "deploy", "first_layer"}
    assert data["macs"]["first_layer"] == 3 * 48 * 7 * 7 * 16 * 16
    assert any("SNNBlock2" in line for line in out)


def test_console_script_help():
    result = subprocess.run([sys.executable, "-m", "spikeyolo", "info", "--help"], capture_output=True, text=True)
    assert result.returncode == 0 and "--imgsz" in result.stdout
