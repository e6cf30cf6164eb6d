"""Validation on event recordings reports the per-sample COCO numbers and the Prophesee protocol, each named."""

import numpy as np

import spikeyolo
from _event_data import write_gen1
from spikeyolo.cli import main

# labels at 0.4 s (inside the 0.5 s the Prophesee protocol skips), 0.6 s and 0.7 s
BOXES = [  # t, x, y, w, h, class, track
    (400_000, 10, 20, 60, 40, 0, 1),
    (600_000, 10, 20, 60, 40, 0, 1),
    (600_000, 100, 100, 8, 40, 1, 2),  # side < 10 px: filtered out by the protocol
    (700_000, 12, 22, 60, 40, 0, 1),
    (700_000, 150, 120, 30, 30, 1, 2),
]


def test_val_on_gen1_names_both_protocols(tmp_path, capsys):
    data = write_gen1(tmp_path / "gen1", BOXES, np.random.default_rng(0), n=20_000, t_max=750_000,
                      window_us=100_000, T=2, representation="counts")
    model = spikeyolo.build_model("n", nc=2, width=0.125, T=2, in_channels=2, names=["car", "pedestrian"])
    weights = spikeyolo.save(model, tmp_path / "ev.pt")
    assert main(["val", "--weights", str(weights), "--data", str(data), "--imgsz", "64", "--batch", "2",
                 "--workers", "0", "--project", str(tmp_path / "runs"), "--json"]) == 0
    import json

    printed = capsys.readouterr().out
    assert "protocol: per-sample" in printed and "protocol prophesee" in printed and "mJ per image" in printed
    out = json.loads(printed.strip().splitlines()[-1])
    assert out["protocol"] == "per-sample" and out["images"] == 3 and out["instances"] == 5
    p = out["prophesee"]
    # by hand: timestamps after 0.5 s are 0.6 and 0.7 s; of their 3 boxes, the 8 px wide one is filtered
    assert p["protocol"] == "prophesee" and p["images"] == 2 and p["gt_boxes"] == 3
    assert 0 <= p["AP50"] <= 1
    assert 0 <= out["snn/firing_rate"] <= 4 and out["snn/energy_mJ"] > 0
    assert (tmp_path / "runs" / "val" / "energy_layers.csv").is_file()

    # a checkpoint trained with other event inputs than the data YAML's: validation says so
    import warnings

    from spikeyolo.engine.validator import validate

    def val_warnings(events, name):
        model.config["events"] = events
        w = spikeyolo.save(model, tmp_path / f"{name}.pt")
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            validate(w, data, imgsz=64, batch=2, workers=0, project=str(tmp_path / "runs"), name=name, plots=False,
                     progress=False)
        return [str(c.message) for c in caught if "event inputs differ" in str(c.message)]

    same = {"window_us": 100_000, "representation": "counts", "representation_opts": {}}
    assert val_warnings(same, "same") == []
    (msg,) = val_warnings({**same, "window_us": 250_000}, "other")
    assert "'window_us': (250000, 100000)" in msg and str(data) in msg
