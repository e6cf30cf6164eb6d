"""Trainer: run folders, checkpoints, results.csv, resume equals an uninterrupted run, NaN stop."""

import csv

import pytest
import torch
import yaml

import spikeyolo
from _train_data import make_dataset
from spikeyolo.engine import loss as loss_module
from spikeyolo.engine.trainer import RESULTS_COLUMNS, TrainConfig, Trainer

TINY = dict(model="n", width=0.0625, imgsz=64, batch=2, nbs=4, workers=0, device="cpu", warmup_epochs=1,
            warmup_min_iters=2, close_mosaic=1, seed=3, progress=False, verbose=False, plots=False)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_dataset(tmp_path_factory.mktemp("ds"), n_train=4, n_val=2)


class Interrupted(Exception):
    pass


class StopAfterFirstEpoch(Trainer):
    """Dies right after epoch 1 is saved, as a killed process would."""

    def on_epoch_end(self, epoch, metrics):
        if epoch == 0:
            raise Interrupted


def cfg(data, tmp_path, **kw):
    return TrainConfig(data=str(data), project=str(tmp_path / "runs"), **{**TINY, **kw})


def weights(path):
    ckpt = torch.load(path, weights_only=True)  # must load without unpickling objects
    return ckpt["state_dict"], ckpt["train_state"]["model"], ckpt


def test_resume_gives_the_uninterrupted_result(data, tmp_path):
    straight = Trainer(cfg(data, tmp_path, epochs=2, name="straight")).train()
    with pytest.raises(Interrupted):
        StopAfterFirstEpoch(cfg(data, tmp_path, epochs=2, name="cut")).train()
    cut_dir = tmp_path / "runs" / "cut"
    assert weights(cut_dir / "weights" / "last.pt")[2]["train_state"]["epoch"] == 0
    resumed = Trainer(cfg(data, tmp_path, resume=str(cut_dir))).train()  # a run folder works as well as last.pt
    assert resumed["save_dir"] == str(cut_dir) and resumed["epochs_done"] == 2

    ema_a, raw_a, ck_a = weights(straight["last"])
    ema_b, raw_b, ck_b = weights(resumed["last"])
    assert ck_a["train_state"]["epoch"] == ck_b["train_state"]["epoch"] == 1
    assert ck_a["train_state"]["ema"]["updates"] == ck_b["train_state"]["ema"]["updates"] > 0
    for k in raw_a:
        assert torch.equal(raw_a[k], raw_b[k]), k
        assert torch.equal(ema_a[k], ema_b[k]), k
    # the first epoch changed the weights, so equality is not trivial
    init = spikeyolo.build_model("n", nc=2, width=0.0625).state_dict()
    assert any(not torch.equal(init[k], raw_a[k]) for k in raw_a if raw_a[k].is_floating_point())
    # results.csv of the resumed run has both epochs, same numbers as the uninterrupted one
    rows_a = list(csv.reader(open(tmp_path / "runs" / "straight" / "results.csv")))
    rows_b = list(csv.reader(open(cut_dir / "results.csv")))
    assert rows_a[0] == rows_b[0] == RESULTS_COLUMNS
    assert [r[:4] for r in rows_a] == [r[:4] for r in rows_b] and len(rows_a) == 3


def test_run_folder_checkpoints_and_results(data, tmp_path):
    a = Trainer(cfg(data, tmp_path, epochs=1, name="exp", plots=True, nbs=5)).train()
    b = Trainer(cfg(data, tmp_path, epochs=1, name="exp")).train()
    assert a["save_dir"].endswith("exp") and b["save_dir"].endswith("exp2")  # never overwrite a run
    run = tmp_path / "runs" / "exp"
    args = yaml.safe_load((run / "args.yaml").read_text())
    assert args["epochs"] == 1 and args["imgsz"] == 64 and args["optimizer"] == "SGD"
    rows = list(csv.DictReader(open(run / "results.csv")))
    assert len(rows) == 1 and rows[0]["epoch"] == "1"
    for k in ("train/box_loss", "metrics/mAP50(B)", "metrics/mAP50-95(B)", "val/box_loss", "lr/pg0"):
        assert float(rows[0][k]) == float(rows[0][k])  # a number, not empty or NaN
    # the default energy meter fills the SNN columns: a spike count in [0, D], positive operations and energy
    assert 0 <= float(rows[0]["snn/firing_rate"]) <= 4
    assert float(rows[0]["snn/synops"]) > 0 and float(rows[0]["snn/energy_mJ"]) > 0
    assert float(rows[0]["val/cls_loss"]) > 0
    for f in ("results.png", "PR_curve.png", "val_batch0_pred.jpg", "val_batch0_labels.jpg"):
        assert (run / f).is_file(), f
    best = spikeyolo.load(run / "weights" / "best.pt")  # the public loader reads a training checkpoint
    assert best.nc == 2 and best.names == ["box", "disc"]
    ck = torch.load(run / "weights" / "last.pt", weights_only=True)
    st = ck["train_state"]
    assert set(st) >= {"model", "optimizer", "schedule", "ema", "epoch", "best_fitness", "rng"}
    assert st["rng"][0]["numpy"]["keys"].dtype == torch.int64 and len(st["rng"][0]["python"]["state"]) == 625
    # batch 2, nominal batch 5: accumulate round(2.5) = 2 batches, decay 5e-4 * (2 * 2) / 5
    assert [g["weight_decay"] for g in st["optimizer"]["param_groups"]] == pytest.approx([0.0, 4e-4, 0.0])
    assert not list(run.glob("weights/.*tmp*"))  # atomic writes left no temporary file


def test_nan_loss_stops_and_keeps_last_good_checkpoint(data, tmp_path, monkeypatch):
    original = loss_module.DetectionLoss.__call__
    calls = {"n": 0}

    def poisoned(self, preds, batch):
        total, items = original(self, preds, batch)
        calls["n"] += 1
        if calls["n"] == 4:  # second epoch (2 batches per epoch)
            total = total * float("nan")
        return total, items

    monkeypatch.setattr(loss_module.DetectionLoss, "__call__", poisoned)
    out = Trainer(cfg(data, tmp_path, epochs=3, name="nan", val=False)).train()
    assert out["stopped"] and "nan" in out["stopped"] and "epoch 2" in out["stopped"]
    ck = torch.load(tmp_path / "runs" / "nan" / "weights" / "last.pt", weights_only=True)
    assert ck["train_state"]["epoch"] == 0  # the last good (first) epoch
    assert all(torch.isfinite(v).all() for v in ck["state_dict"].values() if v.is_floating_point())
    assert len(list(csv.reader(open(tmp_path / "runs" / "nan" / "results.csv")))) == 2  # header + epoch 1


def test_cpu_amp_runs_the_convs_in_bf16_and_is_off_by_default(data, tmp_path, monkeypatch):
    """``amp=True`` on CPU autocasts the training forward to bfloat16; the default (None) keeps CPU in float32."""
    seen = []
    real_conv = torch.nn.Conv2d._conv_forward

    def record(self, x, w, b):
        y = real_conv(self, x, w, b)
        if torch.is_grad_enabled():  # training steps, not validation
            seen.append(y.dtype)
        return y

    monkeypatch.setattr(torch.nn.Conv2d, "_conv_forward", record)
    result = Trainer(cfg(data, tmp_path, epochs=1, name="amp", amp=True)).train()
    assert result["stopped"] is None and seen and set(seen) == {torch.bfloat16}
    seen.clear()
    Trainer(cfg(data, tmp_path, epochs=1, name="fp32")).train()
    assert seen and set(seen) == {torch.float32}
