"""Named recipes: the official COCO s recipe resolves, through the CLI, to the official run's settings; typed flags
override a recipe; an unknown recipe or setting is one clear error; a run records the recipe it started from."""

import dataclasses

import pytest
import torch
import yaml

from _train_data import make_dataset
from spikeyolo.cli import build_parser, main, train_config
from spikeyolo.engine.trainer import TrainConfig
from spikeyolo.models.recipes import load_recipe, recipe_names
from spikeyolo.utils.errors import FileFormatError, InputError

# The official 23M COCO run, written by hand from BICLab/SpikeYOLO logs_23M/args.yaml at HEAD 309ef5e (model
# snn_yolov8s.yaml, epochs 300, patience 100, batch 40 on devices 0-3, imgsz 640, save_period -1, cache false,
# workers 8, optimizer SGD, seed 0, deterministic true, single_cls false, cos_lr false, close_mosaic 10, amp true,
# freeze null, val true, conf null (the validator's 0.001), iou 0.7, max_det 300, plots true, lr0 0.01,
# lrf 0.004, momentum 0.937, weight_decay 0.0005, warmup_epochs 10, warmup_momentum 0.8, warmup_bias_lr 0.1,
# box 7.5, cls 0.5, dfl 1.5, nbs 64, hsv_h 0.015, hsv_s 0.7, hsv_v 0.4, translate 0.1, scale 0.5, fliplr 0.5,
# mosaic 1.0), plus what that run fixed outside args.yaml: the ultralytics 8.0.197 trainer's EMA (0.9999, tau
# 2000), gradient clip 10 and warm-up floor of 100 iterations; the model's MS_GetT [3, 1] (T 1), MultiSpike4 (D 4)
# and mem_update's decay 0.25 with an unscaled input and a detached reset; the ultralytics-metric protocol of its
# results.csv, the crowd boxes its coco2yolo labels keep, and the official data pipeline.
OFFICIAL_COCO_S = {
    "model": "s", "epochs": 300, "patience": 100, "batch": 40, "imgsz": 640, "save_period": -1, "cache": None,
    "workers": 8, "optimizer": "SGD", "seed": 0, "deterministic": True, "single_cls": False, "cos_lr": False,
    "close_mosaic": 10, "amp": True, "freeze": 0, "val": True, "conf": 0.001, "iou": 0.7, "max_det": 300,
    "plots": True, "lr0": 0.01, "lrf": 0.004, "momentum": 0.937, "weight_decay": 5e-4, "warmup_epochs": 10,
    "warmup_momentum": 0.8, "warmup_bias_lr": 0.1, "box": 7.5, "cls": 0.5, "dfl": 1.5, "nbs": 64,
    "hyp": {"hsv_h": 0.015, "hsv_s": 0.7, "hsv_v": 0.4, "translate": 0.1, "scale": 0.5, "fliplr": 0.5, "mosaic": 1.0},
    "ema_decay": 0.9999, "ema_tau": 2000, "clip_grad": 10.0, "warmup_min_iters": 100,
    "T": 1, "D": 4, "decay": 0.25, "input_gain": 1.0, "detach_reset": True, "neuron_kind": "ilif",
    "width": None, "depth": None, "val_period": 1, "allow_no_boxes": False,
    "protocol": "ultralytics", "crowd_targets": True, "pipeline": "official",
}
# settings of a machine or a run, not of the recipe: the command line's values
RUN_SETTINGS = {"data": "coco.yaml", "device": None, "project": "runs/detect", "name": "train", "exist_ok": False,
                "resume": None, "progress": True, "verbose": True, "tensorboard": True, "window_us": None,
                "recipe": "official-coco-s@1"}

# the official Gen1 run, by hand from SpikeYOLO_for_Gen1 at HEAD 309ef5e: train.py (epochs 100), default.yaml
# (batch 80, imgsz 320, SGD, lr0 0.02, lrf 0.004, warmup_epochs 10, patience 200, every augmentation gain 0),
# gen1.yaml (gen1_yolo_T2), pre_gen1.py (250 ms), spikingjelly MultiStepLIFNode tau 2 (decay 0.5, gain 0.5)
OFFICIAL_GEN1 = {"model": "s", "epochs": 100, "batch": 80, "imgsz": 320, "optimizer": "SGD", "lr0": 0.02,
                 "lrf": 0.004, "warmup_epochs": 10, "patience": 200, "T": 2, "D": 4, "decay": 0.5, "input_gain": 0.5,
                 "window_us": 250_000, "amp": True,
                 "hyp": {k: 0.0 for k in ("mosaic", "translate", "scale", "hsv_h", "hsv_s", "hsv_v", "fliplr")}}


def resolve(*argv) -> TrainConfig:
    """Settings as `spikeyolo train ARGV` would train with (the CLI's own parsing path)."""
    return train_config(build_parser().parse_args(["train", *argv]))


def test_official_coco_s_recipe_is_the_official_run():
    cfg = dataclasses.asdict(resolve("--recipe", "official-coco-s", "--data", "coco.yaml"))
    expected = {**OFFICIAL_COCO_S, **RUN_SETTINGS}
    assert set(expected) == set(cfg), "every setting is in the table"
    for key, value in expected.items():
        assert cfg[key] == value, f"{key}: {cfg[key]!r} != official {value!r}"
    assert TrainConfig.from_dict(cfg).neuron.decay == 0.25


def test_official_gen1_recipe_and_the_l_recipe():
    gen1 = dataclasses.asdict(resolve("--recipe", "official-gen1-s", "--data", "gen1.yaml"))
    assert {k: gen1[k] for k in OFFICIAL_GEN1} == OFFICIAL_GEN1
    coco_l = dataclasses.asdict(resolve("--recipe", "official-coco-l", "--data", "coco.yaml"))
    coco_s = dataclasses.asdict(resolve("--recipe", "official-coco-s", "--data", "coco.yaml"))
    assert {k for k in coco_s if coco_s[k] != coco_l[k]} == {"model", "recipe"} and coco_l["model"] == "l"


def test_shipped_recipes_are_complete():
    # every setting except a machine's or a run's is fixed by each official recipe: nothing is left to defaults
    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    for name in recipe_names():
        recipe = load_recipe(name, fields)
        assert set(recipe.settings) == fields - set(RUN_SETTINGS) | {"window_us"}, name
        assert recipe.version >= 1 and recipe.description and recipe.source


def test_typed_flags_override_the_recipe_even_at_their_default():
    # --epochs 100 and --lrf 0.01 are the argparse defaults: typed, they still win over the recipe's 300 / 0.004
    cfg = resolve("--recipe", "official-coco-s", "--data", "d.yaml", "--epochs", "100", "--lrf", "0.01",
                  "--mosaic", "0", "--no-val", "--T", "2", "--no-amp")
    assert (cfg.epochs, cfg.lrf, cfg.val, cfg.T, cfg.amp) == (100, 0.01, False, 2, False)
    assert cfg.hyp == {**OFFICIAL_COCO_S["hyp"], "mosaic": 0.0}
    # flags not typed keep the recipe's values, not argparse's defaults (batch 16, warm-up 3, patience 100)
    assert (cfg.batch, cfg.warmup_epochs, cfg.lr0, cfg.protocol) == (40, 10, 0.01, "ultralytics")
    # without a recipe nothing changes
    plain = resolve("--data", "d.yaml")
    assert (plain.epochs, plain.lrf, plain.batch, plain.recipe, plain.protocol) == (100, 0.01, 16, None, "coco")


def test_unknown_recipe_or_setting_is_one_clear_error(tmp_path, capsys):
    assert main(["train", "--recipe", "official-coco-x", "--data", "d.yaml"]) == 1
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "official-coco-x: no such recipe" in err and "official-coco-s" in err
    bad = tmp_path / "mine.yaml"
    bad.write_text(yaml.safe_dump({"description": "x", "version": 1, "settings": {"epochs": 3, "lr_0": 0.1}}))
    assert main(["train", "--recipe", str(bad), "--data", "d.yaml"]) == 1
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and str(bad) in err and "unknown setting 'lr_0'" in err
    with pytest.raises(FileFormatError, match="unknown key 'setting'"):
        bad.write_text("version: 1\nsetting: {epochs: 3}\n")
        load_recipe(str(bad), TrainConfig.__dataclass_fields__)
    with pytest.raises(FileFormatError, match="'resume' cannot be set|unknown setting 'resume'"):
        bad.write_text("version: 1\nsettings: {resume: last.pt}\n")
        load_recipe(str(bad), TrainConfig.__dataclass_fields__)
    with pytest.raises(InputError, match="ships official-coco-s@1; version 7"):
        load_recipe("official-coco-s@7")
    assert load_recipe("official-coco-s@1").tag == "official-coco-s@1"


def test_recipes_listed_and_named_in_train_help(capsys):
    assert main(["recipes"]) == 0
    out = capsys.readouterr().out
    for name in recipe_names():
        assert f"{name}@1" in out
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    helptext = "".join(capsys.readouterr().out.split())  # argparse wraps lines at hyphens
    assert all(name in helptext for name in recipe_names())
    assert main(["recipes", "official-gen1-s"]) == 0
    shown = yaml.safe_load(capsys.readouterr().out)
    assert shown["lr0"] == 0.02 and shown["window_us"] == 250_000


def test_run_records_the_recipe_and_resolved_settings(tmp_path, capsys):
    data = make_dataset(tmp_path / "ds", n_train=2, n_val=1)
    argv = ["train", "--recipe", "official-coco-s", "--data", str(data), "--model", "n", "--width", "0.0625",
            "--imgsz", "64", "--batch", "2", "--epochs", "1", "--workers", "0", "--device", "cpu", "--no-amp",
            "--no-val", "--no-plots", "--no-tensorboard", "--project", str(tmp_path / "runs")]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "recipe official-coco-s@1, batch 2 = 1 process(es) x 2 images" in out
    run = tmp_path / "runs" / "train"
    args = yaml.safe_load((run / "args.yaml").read_text())
    assert args["recipe"] == "official-coco-s@1"
    assert (args["lrf"], args["warmup_epochs"], args["epochs"], args["protocol"]) == (0.004, 10, 1, "ultralytics")
    ckpt = torch.load(run / "weights" / "last.pt", weights_only=True)
    assert ckpt["train_args"]["recipe"] == "official-coco-s@1" and ckpt["train_args"]["hyp"]["hsv_s"] == 0.7
