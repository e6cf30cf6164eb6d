"""mAP-level agreement of the deploy precisions on a briefly trained model (slow: trains on the bundled trees).

Float32 is not bit-stable across forms, so precisions are compared by held-out mAP50 of trained weights, never by
output tensors of an untrained network (see docs/deploy.md). The held-out tiles are too few to resolve 0.01 of
mAP50, so they are enlarged to their 8 dihedral views and the difference to the train form is judged by its
paired bootstrap 95% interval over source tiles (benchmarks/precision_eval.py)."""

import sys
from pathlib import Path

import pytest

from spikeyolo.demo import DEMO_DEFAULTS
from spikeyolo.demo.trees import prepare_tree_dataset
from spikeyolo.engine.trainer import TrainConfig, Trainer

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from precision_eval import compare_forms  # noqa: E402

pytest.importorskip("onnxruntime")

TOLERANCE = 0.01  # issue 10: held-out mAP50 within 0.01 of fp32


@pytest.mark.slow
def test_bf16_and_int8_keep_heldout_map50_within_001_of_fp32(tmp_path):
    data = prepare_tree_dataset(tmp_path / "trees")
    settings = {**DEMO_DEFAULTS, "epochs": 60, "nbs": DEMO_DEFAULTS["batch"], "close_mosaic": 5}
    cfg = TrainConfig.from_dict({**settings, "data": str(data), "project": str(tmp_path / "runs"), "name": "t",
                                 "progress": False, "plots": False})
    best = Trainer(cfg).train()["best"]
    res = compare_forms(best, data, splits=("val", "test"), forms=("deploy-bf16", "deploy-int8", "ort-int8"),
                        imgsz=cfg.imgsz, resamples=1000)
    pooled = res["sets"]["pooled"]
    for form, r in pooled.items():  # shown with -s: what the assertion judged
        print(f"{form}: mAP50 {r['map50']:.4f}, minus train {r['d_map50']:+.4f} {r['d_map50_ci']}")
    assert pooled["train"]["map50"] > 0.05, f"the model did not learn enough to compare precisions: {pooled}"
    # each form passes when no loss is shown (the interval reaches 0) or the loss is shown to be within tolerance
    missed = {form: (round(pooled[form]["d_map50"], 4), pooled[form]["d_map50_ci"])
              for form in ("deploy-bf16", "deploy-int8", "ort-int8")
              if not (pooled[form]["d_map50_ci"][1] >= 0 or pooled[form]["d_map50_ci"][0] >= -TOLERANCE)}
    assert not missed, f"mAP50 minus the train form's, (full set, 95% interval): {missed}"
