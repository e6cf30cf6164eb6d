"""``spikeyolo demo``: train SpikeYOLO on the bundled tree photos on a CPU and evaluate on held-out ground.

The three aerial photos (DeepForest / NEON, MIT licence) are cut into 320-pixel tiles by
:func:`spikeyolo.demo.trees.prepare_tree_dataset`, with a *spatial* split: the right 30% of every photo is
held out, so no held-out tree was ever seen in training, not even in part. The held-out strip is cut in two:
its top half is the validation region (validated during training; it picks ``best.pt``), its bottom half the
test region, used for nothing but the final report. One class: Tree.

The model is SpikeYOLO at scale ``n`` with a reduced width multiplier (the demo default 0.125 instead of the
scale's 0.375, about 1.7 M parameters instead of 13 M), trained from scratch with the reference recipe
(SGD, warm-up, linear decay, EMA, mosaic until the last 10 epochs) but sized to finish in about five minutes on
two CPU cores: 256-pixel inputs, batch 4, 220 epochs of the 20 training tiles (1100 optimizer steps).
These settings were chosen from runs compared on the held-out mAP50 (docs/training.md has the numbers).
Augmentation is the training default: mosaic, random affine with scale jitter (``--scale``, 1 +- 0.5) and
HSV colour jitter (``--no-hsv`` turns it off), horizontal flips.
It then validates ``best.pt`` on the validation and test tiles (COCO mAP; the summary's ``map50`` is the
test region's), draws its predictions on the test images, saves every plot and the energy report of the test
validation, and writes the summary as ``demo.json`` in the run folder.
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

import yaml

from ..engine.predict_outputs import predict_source
from ..engine.predictor import Predictor
from ..engine.results import summary_table
from ..engine.trainer import TrainConfig, Trainer
from ..engine.validator import validate
from ..models.checkpoint import load
from ..nn.neuron import NEURONS
from ..utils.argtypes import image_size, nonneg_int, positive_float, positive_int
from ..utils.runs import plain, select_device
from .simulator import make_gen1_dataset
from .trees import prepare_tree_dataset, tree_event_splits

# Sized for a 2-core CPU (docs/training.md compares the runs behind them); every one can be overridden.
DEMO_DEFAULTS = dict(
    model="n",
    width=0.125,
    imgsz=256,  # the 320-pixel tiles shrunk to 256: 0.64x the compute per image, so more epochs fit
    epochs=220,
    batch=4,  # 20 training tiles: 5 optimizer steps an epoch, no gradient accumulation (nbs = batch)
    optimizer="SGD",
    lr0=0.01,
    lrf=0.01,
    warmup_epochs=3,
    warmup_min_iters=30,
    close_mosaic=10,
    val_period=10,
    patience=0,  # a fixed recipe: 54 validation boxes are too noisy to stop on (a lucky epoch 40 once ended a
    # run at 140, before the learning-rate decay in which it improves)
    workers=0,
    seed=0,
    neuron_kind="ilif",  # --neuron relu/silu: the ANN twin, same recipe (image demo only: the event demo has T=2)
)


def add_demo_options(p: argparse.ArgumentParser) -> None:
    d, e = DEMO_DEFAULTS, EVENT_DEMO_DEFAULTS

    def setting(flag, key, **kw):  # None = the (event) demo's own default, so --events keeps its settings
        p.add_argument(flag, default=None, help=f"default {d[key]} (--events: {e[key]})", **kw)

    p.add_argument("--project", default="runs/demo",
                   help="runs go to PROJECT/NAME; the tiles to PROJECT/trees_data")
    p.add_argument("--name", default=None, help="default trees (--events: trees_events)")
    setting("--epochs", "epochs", type=positive_int)
    setting("--imgsz", "imgsz", type=image_size)
    setting("--batch", "batch", type=positive_int)
    setting("--width", "width", type=positive_float)
    setting("--model", "model")
    setting("--optimizer", "optimizer", choices=["SGD", "AdamW"])
    setting("--lr0", "lr0", type=positive_float)
    setting("--close-mosaic", "close_mosaic", type=nonneg_int)
    setting("--workers", "workers", type=nonneg_int)
    setting("--seed", "seed", type=nonneg_int)
    setting("--neuron", "neuron_kind", dest="neuron_kind", choices=list(NEURONS))
    p.add_argument("--scale", type=float, default=None,
                   help="scale jitter: random zoom by 1 +- SCALE (default 0.5; --events: 0.5)")
    p.add_argument("--no-hsv", dest="hsv", action="store_false",
                   help="no HSV colour jitter (default on: hue 0.015, saturation 0.7, value 0.4; images only)")
    p.add_argument("--device", default="cpu",
                   help="cpu, 0, cuda:1 (default: cpu, which the demo's settings and times are for)")
    p.add_argument("--amp", action="store_true",
                   help="mixed precision: bfloat16 autocast on CPU (float16 on CUDA), as train --amp; default off "
                        "(the demo's settings and numbers are for float32)")
    p.add_argument("--events", action="store_true",
                   help="the event-camera variant: train on event recordings simulated from the same photos")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument("--prepare-only", action="store_true",
                   help="only write the dataset (tiles or recordings and data.yaml) and print where; no training")
    p.add_argument("--json", action="store_true", help="print one JSON object as the last stdout line")


def _train_and_validate(data: Path, project: Path, name: str, progress: bool, settings: dict):
    """Train with ``settings``, then validate best.pt on each held-out split of ``data`` (``val``, and ``test``
    when there is one) into ``<run>/<split>``.

    Returns ``(result, cfg, {split: (metrics, folder)})``; the dict is empty when training stopped early.
    """
    settings = {**settings, "nbs": settings["batch"]}  # tiny datasets: no gradient accumulation
    cfg = TrainConfig.from_dict({**settings, "data": str(data), "project": str(project), "name": name,
                                 "progress": progress})
    device = cfg.device or "the default device"
    print(f"SpikeYOLO-{cfg.model} width {cfg.width}, {cfg.epochs} epochs at {cfg.imgsz}px on {device}; "
          f"data in {data.parent}")
    result = Trainer(cfg).train()
    if result["stopped"]:
        return result, cfg, {}
    splits = [s for s in ("val", "test") if s in (yaml.safe_load(Path(data).read_text()) or {})]
    out = {}
    for split in splits:
        out[split] = validate(result["best"], data, cfg.imgsz, batch=cfg.batch, device=cfg.device, workers=0,
                              save_json=True, project=result["save_dir"], name=split, plots=True,
                              progress=progress, split=split, exist_ok=True)
    return result, cfg, out


def _region(metrics: dict, folder: Path) -> dict:
    keys = ("map50", "map", "precision", "recall", "images", "instances", "snn/firing_rate", "snn/energy_mJ")
    return {**{k: metrics.get(k) for k in keys}, "dir": str(folder)}


def _summary(result: dict, evaluated: dict, t: float, **extra) -> dict:
    """The demo's result: the top-level numbers are the test region's (the validation region's when there is
    no test split), and each region's under ``val`` / ``test``."""
    metrics, folder = evaluated.get("test") or evaluated["val"]
    return {"weights": result["best"], "save_dir": result["save_dir"], "heldout_dir": str(folder),
            "reported_on": "test" if "test" in evaluated else "val",
            **{k: metrics[k] for k in ("map50", "map", "precision", "recall", "images", "instances")},
            "energy_mJ": metrics.get("snn/energy_mJ"), "firing_rate": metrics.get("snn/firing_rate"),
            **{split: _region(m, d) for split, (m, d) in evaluated.items()},
            "best_epoch": (result.get("best_metrics") or {}).get("epoch"),
            "epochs": result["epochs_done"], "time_s": t, **extra}


def _stopped(result: dict, t0: float) -> dict:
    return {**result, "weights": result["best"], "map50": None, "map": None, "time_s": time.time() - t0}


def run_demo(project: str | Path = "runs/demo", name: str = "trees", progress: bool = True, **overrides) -> dict:
    """Prepare the tiles, train, validate best.pt on the held-out region, draw predictions. Returns a summary."""
    t0 = time.time()
    project = Path(project)
    data = prepare_tree_dataset(project / "trees_data")
    settings = {**DEMO_DEFAULTS, **{k: v for k, v in overrides.items() if v is not None}}
    print("demo: ", end="")
    result, cfg, evaluated = _train_and_validate(data, project, name, progress, settings)
    if not evaluated:
        return _stopped(result, t0)
    run = Path(result["save_dir"])
    test, test_dir = evaluated["test"]
    predictor = Predictor(load(result["best"]), cfg.imgsz, conf=0.25, device=select_device(cfg.device))
    drawn = predict_source(predictor, data.parent / "images" / "test", test_dir / "predictions", progress=False)
    t = time.time() - t0
    for split, (m, _) in evaluated.items():
        role = "selects best.pt" if split == "val" else "the reported number"
        print(f"\n{split} region ({m['images']} tiles, {m['instances']} trees; {role}), best.pt of epoch "
              f"{(result['best_metrics'] or {}).get('epoch')}:")
        print(summary_table(m, ["Tree"]))
    print(f"drawn predictions: {test_dir / 'predictions'} (e.g. {Path(drawn[0]['saved']).name}); "
          f"curves: {run / 'results.png'}, {test_dir / 'PR_curve.png'}")
    print(f"demo finished in {t / 60:.1f} min: test mAP50 {test['map50']:.3f} (validation "
          f"{evaluated['val'][0]['map50']:.3f}), test mAP50-95 {test['map']:.3f}")
    summary = _summary(result, evaluated, t, train_time_s=result["time_s"],
                       settings={**{k: getattr(cfg, k) for k in DEMO_DEFAULTS}, "amp": cfg.amp, "hyp": dict(cfg.hyp)})
    (run / "demo.json").write_text(json.dumps(plain(summary), indent=1))
    return summary


# The event-camera variant: recordings simulated from the same photos (views moving in front of a simulated
# 240x304 sensor), Gen1 layout, validated with COCO mAP on the held-out region's recordings.
# - Every photo region is filmed at one scale (0.6-0.9 photo pixels per sensor pixel), so trees are 30-60
#   sensor pixels in every split, held out or not.
# - Each training region is filmed 12 times for 1 s with different motions (variety of motion, not length);
#   each held-out region once for 2 s, so few of its windows reach before the recording's start.
# - T=2 time bins of the 250 ms window, as the released SpikeYOLO Gen1 checkpoint; lr0 0.02 as the official
#   Gen1 recipe; a 1-epoch warm-up (720 steps in all); 160 px inputs.
# - Random zoom and shift keep the model from learning the training recordings by heart.
#   docs/events.md compares the runs behind these settings.
EVENT_SIMULATION = {"recordings_per_image": {"train": 12, "val": 1},
                    "duration_us": {"train": 1_000_000, "val": 2_000_000},
                    "scale_range": [0.6, 0.9], "fps": 500}
EVENT_T = 2
EVENT_DEMO_DEFAULTS = {**DEMO_DEFAULTS, "imgsz": 160, "batch": 8, "epochs": 8, "close_mosaic": 0, "val_period": 4,
                       "lr0": 0.02, "warmup_epochs": 1, "hyp": {"scale": 0.5, "translate": 0.2}}


def prepare_event_data(out_dir: Path, progress: bool = True) -> Path:
    """Simulate the tree recordings (``out_dir/data.yaml``); reused while the simulation settings are the same."""
    y = Path(out_dir) / "data.yaml"
    if y.is_file():
        recorded = (yaml.safe_load(y.read_text()) or {}).get("simulation") or {}
        if all(recorded.get(k) == v for k, v in EVENT_SIMULATION.items()):
            return y
        print(f"{out_dir}: made with other simulation settings; simulating again")
        for split in ("train", "val"):  # only what an earlier simulation wrote: no stale recording stays
            for f in [*Path(out_dir, split).glob("*_td.dat"), *Path(out_dir, split).glob("*_bbox.npy")]:
                f.unlink()
        shutil.rmtree(Path(out_dir) / "cache", ignore_errors=True)
    splits = tree_event_splits()
    return make_gen1_dataset({k: splits[k] for k in ("train", "val")}, out_dir, names=("Tree",), T=EVENT_T,
                             progress=progress, **EVENT_SIMULATION)


def run_event_demo(project: str | Path = "runs/demo", name: str = "trees_events", progress: bool = True,
                   **overrides) -> dict:
    """Train on simulated event recordings of the tree photos and validate on the held-out region's ones."""
    t0 = time.time()
    project = Path(project)
    data = prepare_event_data(project / "trees_events_data", progress)
    settings = {**EVENT_DEMO_DEFAULTS, **{k: v for k, v in overrides.items() if v is not None}}
    print("event demo, simulated recordings: ", end="")
    result, cfg, evaluated = _train_and_validate(data, project, name, progress, settings)
    if not evaluated:
        return _stopped(result, t0)
    metrics = evaluated["val"][0]
    t = time.time() - t0
    print(summary_table(metrics, ["Tree"]))
    print(f"event demo finished in {t / 60:.1f} min: mAP50 {metrics['map50']:.3f}, mAP50-95 {metrics['map']:.3f}")
    return _summary(result, evaluated, t, events=True, prophesee=metrics.get("prophesee"))


def demo_hyp(scale: float | None, hsv: bool) -> dict:
    """Augmentation overrides of the demo flags: ``--scale`` and ``--no-hsv`` (hue, saturation, value 0)."""
    hyp = {} if scale is None else {"scale": scale}
    return hyp if hsv else {**hyp, "hsv_h": 0.0, "hsv_s": 0.0, "hsv_v": 0.0}


def _prepare_only(project: Path, events: bool, progress: bool, as_json: bool) -> int:
    """``spikeyolo demo --prepare-only``: the bundled data as a ready dataset, to try the other commands on."""
    data = prepare_event_data(project / "trees_events_data", progress) if events else \
        prepare_tree_dataset(project / "trees_data")
    print(f"dataset ready: {data}\ntry (close to the {'event ' if events else ''}demo's recipe, which learns; "
          f"{'5.5' if events else 'about 5'} min on 2 CPU cores): spikeyolo train {train_flags(data, events)}")
    if as_json:
        print(json.dumps({"data": str(data)}), flush=True)
    return 0


def train_flags(data: Path, events: bool = False) -> str:
    """The ``spikeyolo train`` flags that reproduce the (event) demo's training on ``data``."""
    d = EVENT_DEMO_DEFAULTS if events else DEMO_DEFAULTS
    flags = [f"--data {data}", f"--model {d['model']}", f"--width {d['width']}", f"--imgsz {d['imgsz']}",
             f"--batch {d['batch']}", f"--nbs {d['batch']}", f"--epochs {d['epochs']}", f"--lr0 {d['lr0']}",
             f"--warmup-epochs {d['warmup_epochs']}", f"--close-mosaic {d['close_mosaic']}",
             f"--val-period {d['val_period']}", f"--patience {d['patience']}", f"--workers {d['workers']}"]
    flags += [f"--{k} {v}" for k, v in d.get("hyp", {}).items()]
    return " ".join(flags)


def run_demo_cli(args: argparse.Namespace) -> int:
    keys = ("epochs", "imgsz", "batch", "width", "model", "optimizer", "lr0", "close_mosaic", "device", "workers",
            "seed", "neuron_kind")
    given = {k: getattr(args, k) for k in keys}  # None: the demo's own default (run_*demo merge them)
    given["amp"] = True if args.amp else None  # None: TrainConfig's default (off on CPU, on for CUDA)
    if args.prepare_only:
        return _prepare_only(Path(args.project), args.events, not args.quiet, args.json)
    hyp = demo_hyp(args.scale, args.hsv)
    if hyp:
        given["hyp"] = {**(EVENT_DEMO_DEFAULTS["hyp"] if args.events else {}), **hyp}
    if args.events:
        summary = run_event_demo(args.project, args.name or "trees_events", progress=not args.quiet, **given)
    else:
        summary = run_demo(args.project, args.name or "trees", progress=not args.quiet, **given)
    if args.json:
        print(json.dumps(plain(summary)), flush=True)
    return 0 if summary.get("map50") is not None else 1
