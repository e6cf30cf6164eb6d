"""`spikeyolo demo` end to end at toy size (the real run takes ~10 minutes): tiles, train, held-out val, drawing."""

import json

from spikeyolo.cli import main


def test_demo_flow_tiny(tmp_path, capsys):
    argv = ["demo", "--project", str(tmp_path), "--epochs", "1", "--imgsz", "64", "--width", "0.0625", "--batch", "8",
            "--quiet", "--json"]
    assert main(argv) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert out["weights"].endswith("trees/weights/best.pt") and 0 <= out["map50"] <= 1 and 0 <= out["map"] <= 1
    assert out["images"] > 0 and out["instances"] > 0 and out["settings"]["imgsz"] == 64
    held = tmp_path / "trees" / "heldout"
    assert (held / "predictions.json").is_file() and (held / "PR_curve.png").is_file()
    drawn = sorted((held / "predictions").glob("*.png"))
    assert len(drawn) == out["images"]  # every held-out tile drawn
    # the held-out tiles come from the right part of each photo, never from the training part
    train = {p.name for p in (tmp_path / "trees_data" / "images" / "train").iterdir()}
    assert not train & {p.name for p in drawn}
