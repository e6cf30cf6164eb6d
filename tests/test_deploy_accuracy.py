"""mAP-level agreement of the deploy precisions on a briefly trained model (slow: trains on the bundled trees).

Float32 is not bit-stable across forms, so precisions are compared by held-out mAP50 of trained weights, never by
output tensors of an untrained network (see docs/deploy.md)."""

import pytest

from spikeyolo.demo import DEMO_DEFAULTS
from spikeyolo.demo.trees import prepare_tree_dataset
from spikeyolo.engine.trainer import TrainConfig, Trainer
from spikeyolo.engine.validator import validate

pytest.importorskip("onnxruntime")


@pytest.mark.slow
def test_bf16_and_int8_keep_heldout_map50_within_001_of_fp32(tmp_path):
    data = prepare_tree_dataset(tmp_path / "trees")
    settings = {**DEMO_DEFAULTS, "epochs": 60, "nbs": DEMO_DEFAULTS["batch"], "close_mosaic": 5}
    cfg = TrainConfig.from_dict({**settings, "data": str(data), "project": str(tmp_path / "runs"), "name": "t",
                                 "progress": False, "plots": False})
    best = Trainer(cfg).train()["best"]
    maps = {}
    for precision, backend in ((None, None), ("fp32", "torch"), ("bf16", "torch"), ("int8", "onnxruntime")):
        metrics, _ = validate(best, data, cfg.imgsz, batch=4, workers=0, plots=False, progress=False,
                              project=str(tmp_path / "val"), precision=precision, backend=backend)
        maps[precision or "train"] = metrics["map50"]
    assert maps["fp32"] > 0.05, f"the model did not learn enough to compare precisions: {maps}"
    assert abs(maps["fp32"] - maps["train"]) <= 0.01, maps
    assert abs(maps["bf16"] - maps["fp32"]) <= 0.01, maps
    assert abs(maps["int8"] - maps["fp32"]) <= 0.01, maps
