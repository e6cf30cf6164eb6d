"""``spikeyolo demo``: train SpikeYOLO on the bundled tree photos on a CPU and evaluate on held-out ground.

The three aerial photos (DeepForest / NEON, MIT licence) are cut into 320-pixel tiles by
:func:`spikeyolo.data.trees.prepare_tree_dataset`, with a *spatial* split: the right 30% of every photo is
held out for validation, so no validation tree was ever seen in training, not even in part. One class: Tree.

The model is SpikeYOLO at scale ``n`` with a reduced width multiplier (the demo default 0.125 instead of the
scale's 0.375, about 1.7 M parameters instead of 13 M), trained from scratch with the reference recipe
(SGD, warm-up, linear decay, EMA, mosaic until the last epochs) but shorter: sized to finish in about ten
minutes on two CPU cores. It then validates ``best.pt`` on the held-out tiles (COCO mAP), draws its
predictions on the held-out images, saves the curves and prints a summary.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

# Settings chosen by experiment on a 2-core CPU (see the module docstring); every one can be overridden.
DEMO_DEFAULTS = dict(
    model="n",
    width=0.125,
    imgsz=320,
    epochs=60,
    batch=8,
    nbs=8,  # no gradient accumulation: 20 training tiles make 3 batches an epoch
    optimizer="SGD",
    lr0=0.01,
    lrf=0.01,
    warmup_epochs=3,
    warmup_min_iters=30,
    close_mosaic=10,
    val_period=5,
    workers=0,
    seed=0,
)


def add_demo_options(p: argparse.ArgumentParser) -> None:
    d = DEMO_DEFAULTS
    p.add_argument("--project", default="runs/demo", help="runs go to PROJECT/NAME; the tiles to PROJECT/trees_data")
    p.add_argument("--name", default="trees")
    p.add_argument("--epochs", type=int, default=d["epochs"])
    p.add_argument("--imgsz", type=int, default=d["imgsz"])
    p.add_argument("--batch", type=int, default=d["batch"])
    p.add_argument("--width", type=float, default=d["width"], help="width multiplier of scale n (0.375 = full n)")
    p.add_argument("--model", default=d["model"], help="scale or model YAML")
    p.add_argument("--optimizer", default=d["optimizer"], choices=["SGD", "AdamW"])
    p.add_argument("--lr0", type=float, default=d["lr0"])
    p.add_argument("--close-mosaic", type=int, default=d["close_mosaic"])
    p.add_argument("--device", default="cpu")
    p.add_argument("--workers", type=int, default=d["workers"])
    p.add_argument("--seed", type=int, default=d["seed"])
    p.add_argument("--events", action="store_true",
                   help="the event-camera variant: train on event recordings simulated from the same photos")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument("--json", action="store_true", help="print one JSON object as the last stdout line")


def run_demo(project: str | Path = "runs/demo", name: str = "trees", progress: bool = True, **overrides) -> dict:
    """Prepare the tiles, train, validate best.pt on the held-out region, draw predictions. Returns a summary."""
    from .data.trees import prepare_tree_dataset
    from .engine.predictor import Predictor, predict_source
    from .engine.trainer import TrainConfig, Trainer
    from .engine.utils import select_device
    from .engine.validator import summary_table, validate

    t0 = time.time()
    project = Path(project)
    data = prepare_tree_dataset(project / "trees_data")
    settings = {**DEMO_DEFAULTS, **{k: v for k, v in overrides.items() if v is not None}}
    cfg = TrainConfig.from_dict({**settings, "data": str(data), "project": str(project), "name": name,
                                 "progress": progress})
    print(f"demo: SpikeYOLO-{cfg.model} width {cfg.width}, {cfg.epochs} epochs at {cfg.imgsz}px on {cfg.device}; "
          f"tiles in {data.parent}")
    result = Trainer(cfg).train()
    if result["stopped"]:
        return {**result, "weights": result["best"], "map50": None, "map": None, "time_s": time.time() - t0}
    run = Path(result["save_dir"])

    metrics, val_dir = validate(result["best"], data, cfg.imgsz, batch=cfg.batch, device=cfg.device, workers=0,
                                save_json=True, project=str(run), name="heldout", plots=True, progress=progress,
                                exist_ok=True)
    from .checkpoint import load

    predictor = Predictor(load(result["best"]), cfg.imgsz, conf=0.25, device=select_device(cfg.device))
    drawn = predict_source(predictor, data.parent / "images" / "val", val_dir / "predictions", progress=False)
    t = time.time() - t0
    print(f"\nheld-out region ({metrics['images']} tiles, {metrics['instances']} trees), best.pt of epoch "
          f"{(result['best_metrics'] or {}).get('epoch')}:")
    print(summary_table(metrics, ["Tree"]))
    print(f"drawn predictions: {val_dir / 'predictions'} (e.g. {Path(drawn[0]['saved']).name}); "
          f"curves: {run / 'results.png'}, {val_dir / 'PR_curve.png'}")
    print(f"demo finished in {t / 60:.1f} min: mAP50 {metrics['map50']:.3f}, mAP50-95 {metrics['map']:.3f}")
    return {"weights": result["best"], "save_dir": str(run), "heldout_dir": str(val_dir),
            "map50": metrics["map50"], "map": metrics["map"], "precision": metrics["precision"],
            "recall": metrics["recall"], "images": metrics["images"], "instances": metrics["instances"],
            "epochs": result["epochs_done"], "time_s": t, "train_time_s": result["time_s"],
            "settings": {k: getattr(cfg, k) for k in DEMO_DEFAULTS}}


def run_demo_cli(args: argparse.Namespace) -> int:
    from .engine.validator import plain

    if args.events:
        try:
            from .events.demo import run_event_demo
        except ImportError:
            print("the event-camera demo (spikeyolo.events.demo.run_event_demo) is not available in this build")
            return 2
        summary = run_event_demo(project=args.project, device=args.device, progress=not args.quiet)
    else:
        keys = ("epochs", "imgsz", "batch", "width", "model", "optimizer", "lr0", "close_mosaic", "device",
                "workers", "seed")
        summary = run_demo(args.project, args.name, progress=not args.quiet, **{k: getattr(args, k) for k in keys})
    if args.json:
        print(json.dumps(plain(summary)), flush=True)
    return 0 if summary.get("map50") is not None else 1
