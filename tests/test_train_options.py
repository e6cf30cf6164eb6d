"""Training options users of YOLOv8 reach for: labels.jpg and train_batch*.jpg, --patience, --save-period,
--exist-ok, --freeze, --single-cls, --cache ram and optional TensorBoard logging."""

import sys
import types

import numpy as np
import pytest
import torch

import spikeyolo
from _train_data import make_dataset
from spikeyolo.cli import main
from spikeyolo.data import build_dataset
from spikeyolo.engine import trainer as trainer_module
from spikeyolo.engine.trainer import TrainConfig, Trainer

TINY = dict(model="n", width=0.0625, imgsz=64, batch=2, nbs=2, workers=0, device="cpu", warmup_epochs=1,
            warmup_min_iters=2, close_mosaic=0, seed=3, progress=False, verbose=False, plots=False)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_dataset(tmp_path_factory.mktemp("ds"), n_train=4, n_val=2)


def test_cli_options_freeze_single_cls_save_period_exist_ok_cache(data, tmp_path):
    base = ["train", "--data", str(data), "--model", "n", "--width", "0.0625", "--imgsz", "64", "--batch", "2",
            "--workers", "0", "--device", "cpu", "--close-mosaic", "0", "--project", str(tmp_path), "--name", "run",
            "--no-tensorboard"]
    assert main([*base, "--epochs", "2", "--freeze", "2", "--single-cls", "--save-period", "1", "--cache", "ram"]) == 0
    run = tmp_path / "run"
    model = spikeyolo.load(run / "weights" / "best.pt")
    assert model.nc == 1 and model.names == ["item"]  # two classes trained as one
    e1 = torch.load(run / "weights" / "epoch1.pt", weights_only=True)["state_dict"]
    e2 = torch.load(run / "weights" / "epoch2.pt", weights_only=True)["state_dict"]
    params = [k for k, _ in model.named_parameters()]
    frozen = [k for k in params if k.startswith(("layers.0.", "layers.1."))]
    trained = [k for k in params if not k.startswith(("layers.0.", "layers.1."))]
    assert frozen and all(torch.equal(e1[k], e2[k]) for k in frozen)
    assert any(not torch.equal(e1[k], e2[k]) for k in trained)
    # --exist-ok writes into the same folder instead of run2
    assert main([*base, "--epochs", "1", "--exist-ok", "--no-val"]) == 0
    assert not (tmp_path / "run2").exists()


def test_train_writes_labels_and_batch_pictures_and_val_plots(data, tmp_path):
    r = Trainer(TrainConfig(data=str(data), project=str(tmp_path), epochs=1, **{**TINY, "plots": True})).train()
    run = tmp_path / "train"
    assert r["save_dir"] == str(run)
    for f in ("labels.jpg", "train_batch0.jpg", "train_batch1.jpg", "confusion_matrix.png",
              "confusion_matrix_normalized.png", "P_curve.png", "R_curve.png", "F1_curve.png", "PR_curve.png"):
        assert (run / f).stat().st_size > 5000, f
    assert not (run / "train_batch2.jpg").exists()  # 4 images in batches of 2: two batches


def test_patience_stops_when_fitness_stalls(data, tmp_path, monkeypatch):
    monkeypatch.setattr(trainer_module, "fitness", lambda m: 0.5)  # epoch 1 is best, then never better
    r = Trainer(TrainConfig(data=str(data), project=str(tmp_path), epochs=6, patience=2, **TINY)).train()
    assert r["epochs_done"] == 3 and r["stopped"] is None
    assert "epoch 1" in r["early_stopped"] and r["best_metrics"]["epoch"] == 1
    rows = (tmp_path / "train" / "results.csv").read_text().strip().splitlines()
    assert len(rows) == 1 + 3


def test_patience_rule():
    out = trainer_module._patience_out
    assert out(3, 3, {"epoch": 2}) is None  # 2 epochs after the best one
    assert "--patience 3" in out(3, 4, {"epoch": 2})
    assert out(0, 50, {"epoch": 1}) is None and out(3, 9, None) is None


def test_cache_ram_serves_the_same_items_without_reading_files(data):
    plain = build_dataset(data, "train", imgsz=64, augment=True, progress=False)
    ram = build_dataset(data, "train", imgsz=64, augment=True, cache_ram=True, progress=False)
    assert ram.stats["cached_bytes"] > 0
    images = sorted((data.parent / "images" / "train").iterdir())
    moved = [p.rename(p.with_suffix(".moved")) for p in images]  # the cache must not need the files
    try:
        for i in range(len(ram)):
            assert ram[i]["img"].shape == (3, 64, 64)
        with pytest.raises(OSError):
            plain.load(0)
    finally:
        for p, q in zip(images, moved):
            q.rename(p)
    for i in range(len(ram)):
        assert torch.equal(plain[i]["img"], ram[i]["img"]) and torch.equal(plain[i]["bboxes"], ram[i]["bboxes"])


def test_single_cls_dataset_merges_classes(data):
    ds = build_dataset(data, "val", imgsz=64, single_cls=True, progress=False)
    both = build_dataset(data, "val", imgsz=64, progress=False)
    assert ds.names == ["item"] and ds.nc == 1
    for i in range(len(ds)):
        assert (ds.ground_truth(i)["cls"] == 0).all()
        assert np.array_equal(ds.ground_truth(i)["boxes_xyxy"], both.ground_truth(i)["boxes_xyxy"])
    assert len(set(np.concatenate([both.ground_truth(i)["cls"] for i in range(len(both))]))) == 2


class FakeWriter:
    scalars: list = []

    def __init__(self, log_dir):
        self.log_dir = log_dir

    def add_scalar(self, tag, value, step):
        FakeWriter.scalars.append((tag, value, step))

    def flush(self):
        pass

    def close(self):
        pass


def test_tensorboard_logs_results_columns(data, tmp_path, monkeypatch):
    fake = types.ModuleType("torch.utils.tensorboard")
    fake.SummaryWriter = FakeWriter
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", fake)
    FakeWriter.scalars = []
    Trainer(TrainConfig(data=str(data), project=str(tmp_path), epochs=1, **TINY)).train()
    tags = {t for t, _, step in FakeWriter.scalars if step == 1}
    assert {"train/box_loss", "metrics/mAP50(B)", "lr/pg0", "snn/firing_rate", "snn/energy_mJ"} <= tags
    csv_row = (tmp_path / "train" / "results.csv").read_text().splitlines()
    cols, vals = csv_row[0].split(","), csv_row[1].split(",")
    logged = {t: v for t, v, _ in FakeWriter.scalars}
    assert logged["snn/firing_rate"] == pytest.approx(float(vals[cols.index("snn/firing_rate")]))


def test_tensorboard_missing_is_a_note(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # import fails as if not installed
    notes = []
    assert trainer_module.open_tensorboard(tmp_path, notes.append) is None
    assert "pip install tensorboard" in notes[0]
