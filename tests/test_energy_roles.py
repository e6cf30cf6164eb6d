"""Energy stages come from the model's own layer table: a custom YAML with one more backbone block moves the
SPPF, the neck and the head one layer down, and the report follows (issue 19: the import-time globals did not)."""

import pytest
import yaml

import spikeyolo
from spikeyolo.energy import estimate_energy, unit_geometry
from spikeyolo.models.yolo import load_spec

# the shipped table with one more SNNBlock2 after layer 8, written out by hand: every later index moves by one
LAYERS = [
    [-1, 1, "Input", []], [-1, 1, "Stem", [128, 7, 4, 2]], [-1, 3, "SNNBlock1", [4, 7]],
    [-1, 1, "Downsample", [256, 3, 2, 1]], [-1, 6, "SNNBlock1", [4, 7]], [-1, 1, "Downsample", [512, 3, 2, 1]],
    [-1, 9, "SNNBlock2", [3, 7]], [-1, 1, "Downsample", [1024, 3, 2, 1]], [-1, 3, "SNNBlock2", [2, 7]],
    [-1, 1, "SNNBlock2", [2, 7]],  # 9: the extra backbone block
    [-1, 1, "SPPF", [1024, 5]],  # 10: the backbone's last layer
    [-1, 1, "SpikeConv", [512, 1, 1]],  # 11: the neck starts here
    [-1, 1, "Upsample", [2]], [-1, 1, "SNNBlock2", [3, 7]], [[-1, 6], 1, "Concat", []],
    [-1, 1, "SpikeConv", [256, 1, 1]], [-1, 1, "Upsample", [2]], [-1, 1, "SNNBlock1", [4, 7]],
    [[-1, 4], 1, "Concat", []], [-1, 1, "SpikeConv", [256, 1, 1]], [-1, 1, "SNNBlock1", [4, 7]],
    [-1, 1, "SpikeConv", [256, 3, 2]], [[-1, 15], 1, "Concat", []], [-1, 1, "SNNBlock2", [3, 7]],
    [-1, 1, "SpikeConv", [512, 3, 2]], [[-1, 11], 1, "Concat", []],
    [-1, 1, "SNNBlock2", ["p5_ratio", 7]],  # 26: the last neck block
    [[20, 23, 26], 1, "Detect", ["nc"]],  # 27: the head
]


def expected_stage(layer: int) -> str:
    return "backbone" if layer <= 10 else "neck" if layer <= 26 else "head"


def test_custom_yaml_stages_in_geometry_and_report(tmp_path):
    spec = {**load_spec(), "layers": LAYERS}
    path = tmp_path / "deeper.yaml"
    path.write_text(yaml.safe_dump(spec))
    model = spikeyolo.build_model(str(path), nc=2, width=0.0625, imgsz=64)
    assert model.roles == {"stem": 1, "neck_start": 11, "head": 27}
    geometry = unit_geometry(model, 64)
    assert {g.layer for g in geometry} >= {10, 11, 26, 27}
    for g in geometry:
        assert g.stage == expected_stage(g.layer), g.unit
    report = estimate_energy(geometry, {g.unit: 1.0 for g in geometry if g.spiking})
    assert [r.stage for r in report.layers] == [expected_stage(r.layer) for r in report.layers]
    sppf = [r for r in report.layers if r.layer == 10]
    assert sppf and all(r.stage == "backbone" for r in sppf)
    by_stage = report.by_stage()
    assert by_stage["head"] == pytest.approx(sum(r.energy_pJ for r in report.layers if r.layer == 27) * 1e-9)
