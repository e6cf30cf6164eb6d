"""The trainer's public shape: state exists after __init__ from one resolved, immutable config; callbacks fire
with the trainer at each event in order; the CLI prints what ultralytics users expect (quiet with --quiet)."""

import dataclasses
import math
import re

import pytest

from _train_data import make_dataset
from spikeyolo.cli import main
from spikeyolo.engine.trainer import CALLBACK_EVENTS, TrainConfig, Trainer, capped_workers

TINY = dict(model="n", width=0.0625, imgsz=64, batch=2, nbs=4, workers=0, device="cpu", warmup_epochs=1,
            warmup_min_iters=2, close_mosaic=0, seed=3, progress=False, verbose=False, plots=False)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_dataset(tmp_path_factory.mktemp("ds"), n_train=4, n_val=2)


def test_state_exists_after_init_and_the_config_never_changes(data, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    t = Trainer(TrainConfig(data=str(data), project="runs", epochs=1, **TINY))
    before = set(vars(t))
    cfg = t.cfg
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.epochs = 3  # immutable
    for name in ("model", "optimizer", "schedule", "ema", "validator", "train_loader", "save_dir", "names",
                 "best_fitness", "epoch", "metrics", "callbacks", "result"):
        assert name in before, name
    assert t.best_fitness == -math.inf and t.result is None and t.model is None
    t.train()
    assert set(vars(t)) == before  # no attribute first set outside __init__
    assert t.cfg is cfg  # never rewritten
    assert t.model is not None and t.result["epochs_done"] == 1


def test_callbacks_fire_with_the_trainer_at_each_event_in_order(data, tmp_path):
    t = Trainer(TrainConfig(data=str(data), project=str(tmp_path), epochs=2, **TINY))
    seen = []
    for event in CALLBACK_EVENTS:
        t.add_callback(event, lambda tr, e=event: seen.append((e, tr, tr.epoch)))
    t.add_callback("on_epoch_end", lambda tr: seen.append(("metrics", tr, "map50" in tr.metrics)))
    t.train()
    assert all(tr is t for _, tr, _ in seen)
    # 4 train images, batch 2: two batches an epoch
    batches = [("on_batch_end", e) for e in (0, 0)]
    expected = [("on_train_start", 0),
                ("on_epoch_start", 0), *batches, ("on_epoch_end", 0), ("metrics", True),
                ("on_epoch_start", 1), *[("on_batch_end", 1)] * 2, ("on_epoch_end", 1), ("metrics", True),
                ("on_fit_end", 1)]
    assert [(e, x) for e, _, x in seen] == expected
    with pytest.raises(ValueError, match="on_epoch_start"):
        t.add_callback("on_epoch_begin", print)


def test_workers_are_capped_at_cpus_and_batches():
    n, note = capped_workers(1000, 3)
    assert n == min(3, __import__("os").cpu_count()) and "--workers 1000" in note and str(n) in note
    assert capped_workers(0, 5) == (0, None)
    assert capped_workers(1, 5) == (1, None)


def test_train_prints_summary_epoch_lines_table_and_where_results_are(data, tmp_path, capsys):
    argv = ["train", "--data", str(data), "--model", "n", "--width", "0.0625", "--imgsz", "64", "--batch", "2",
            "--device", "cpu", "--workers", "1000", "--no-plots", "--epochs", "1", "--project", str(tmp_path)]
    assert main([*argv, "--name", "loud"]) == 0
    out = capsys.readouterr().out
    assert re.search(r"SpikeYOLO summary: \d+ layers, [\d,]+ parameters, [\d,]+ gradients", out)
    assert re.search(r"epoch 1/1 done in [\d.]+s: box [\d.]+ cls [\d.]+ dfl [\d.]+ \| P [\d.]+ R [\d.]+ "
                     r"mAP50 [\d.]+ mAP50-95 [\d.]+", out)
    assert re.search(r"all\s+2\s+\d+", out)  # the final validation table: class all, 2 images
    assert f"Results saved to {tmp_path / 'loud'}" in out
    assert out.count("--workers 1000: using") == 1  # said once
    assert main([*argv, "--name", "quiet", "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "summary:" not in out and "done in" not in out and "Results saved" not in out
