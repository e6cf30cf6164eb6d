"""`spikeyolo <command>`: the command line.

Each command is a pair of functions: `add_<name>_args(parser)` declares its flags and `run_<name>(args)` runs
it and returns an exit code. Commands with `--json` print one JSON object as the last stdout line.
"""

from __future__ import annotations

import argparse
import errno
import json
import os
import sys
from pathlib import Path

import yaml

from .data.calibration import calibration_images
from .data.loader import default_workers
from .demo import add_demo_options, run_demo_cli
from .energy.run import run
from .energy.summary import model_summary
from .engine.predict_outputs import predict_to_folder
from .engine.results import metrics_json, summary_table
from .engine.trainer import RESUME_MAY_CHANGE, TrainConfig, Trainer
from .engine.validator import PROTOCOLS, validate
from .export.onnx import export
from .inference import InferenceModel
from .models.checkpoint import load_with_record, trained_imgsz
from .models.recipes import apply_recipe, load_recipe, recipe_names, recipe_table
from .nn.neuron import NEURONS
from .utils.argtypes import (
    below_one,
    image_size,
    nonneg_float,
    nonneg_int,
    open_unit,
    positive_float,
    positive_int,
    probability,
)
from .utils.errors import InputError, SpikeYOLOError
from .utils.runs import plain, select_device
from .utils.version import __version__

VERBOSE_ENV = "SPIKEYOLO_VERBOSE"  # set to 1 to see the traceback of a user error (as --verbose does)


def print_json(obj: dict) -> None:
    """Print one machine-readable JSON object on its own (last) stdout line."""
    print(json.dumps(obj, default=float), flush=True)


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows "(default: X)" where a flag has a default worth showing (not None, False or already in the text)."""

    def _get_help_string(self, action):
        text = action.help or ""
        # `is`, not `in`: 0 == False, and a default of 0 (--workers, --seed, --freeze) is worth showing
        if action.default is None or action.default is False or action.default == argparse.SUPPRESS \
                or "default" in text or action.nargs == 0:
            return text
        return super()._get_help_string(action)


# --- info -----------------------------------------------------------------------------------------------------
def add_info_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default="s", help="scale n/s/m/l, a model YAML, or a checkpoint .pt")
    p.add_argument("--nc", type=positive_int, default=80, help="number of classes (ignored for a checkpoint)")
    p.add_argument("--imgsz", type=image_size, default=640, help="square input size for the MAC count")
    p.add_argument("--json", action="store_true", help="print one JSON object as the last stdout line")


def run_info(args: argparse.Namespace) -> int:
    summary = model_summary(args.model, nc=args.nc, imgsz=args.imgsz)
    print(summary.table())
    if args.json:
        print_json(summary.to_dict())
    return 0


# --- energy ---------------------------------------------------------------------------------------------------
def add_energy_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--weights", required=True, help="a spikeyolo checkpoint .pt")
    p.add_argument("--data", required=True, help="data YAML; its val split is run")
    p.add_argument("--imgsz", type=image_size, default=None, help="square input size (default: the checkpoint's)")
    p.add_argument("--batch", type=positive_int, default=8, help="batch size")
    p.add_argument("--max-batches", type=positive_int, default=None,
                   help="stop after this many batches (default: the whole split)")
    p.add_argument("--device", default=None, help="cpu, 0, cuda:1, mps (default: GPU 0 if any, else cpu)")
    p.add_argument("--workers", type=nonneg_int, default=0,
                   help="data-loading worker processes (0: load in the main process)")
    p.add_argument("--e-mac", type=nonneg_float, default=4.6, help="energy per MAC in pJ")
    p.add_argument("--e-ac", type=nonneg_float, default=0.9, help="energy per AC in pJ")
    p.add_argument("--first-layer", choices=("mac", "ac"), default="mac", help="charge the stem as MACs or ACs")
    p.add_argument("--geometry", choices=("fused", "train"), default="fused",
                   help="conv shapes of the fused (paper) or the unfused train form")
    p.add_argument("--form", choices=("fused", "spike-driven", "train"), default="fused",
                   help="execution form the firing rates and measured synaptic operations come from")
    p.add_argument("--no-synops", action="store_true", help="skip measuring the synaptic operations performed")
    p.add_argument("--no-plots", action="store_true", help="write no PNG plots")
    p.add_argument("--out", default=None, help="output folder (default: runs/energy/exp, exp2, ...)")
    p.add_argument("--json", action="store_true", help="print one JSON object as the last stdout line")


def run_energy(args: argparse.Namespace) -> int:
    report, out = run(args.weights, args.data, imgsz=args.imgsz, batch=args.batch, max_batches=args.max_batches,
                      workers=args.workers, device=args.device, out=args.out, plots=not args.no_plots,
                      e_mac=args.e_mac, e_ac=args.e_ac, first_layer=args.first_layer, geometry=args.geometry,
                      form=args.form, synops=not args.no_synops, progress=not args.json)
    print(report.table())
    print(f"results saved to {out}")
    if args.json:
        print_json(plain({**report.to_dict(), "out": str(out)}))
    return 0


# --- export ---------------------------------------------------------------------------------------------------
def add_export_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--weights", required=True, help="checkpoint .pt")
    p.add_argument("--format", default="onnx", choices=["onnx"], help="export format")
    p.add_argument("--imgsz", type=image_size, default=None,
                   help="square input size, a multiple of 32 (default: the size the checkpoint was trained at)")
    p.add_argument("--precision", choices=["fp32", "int8"], default=None,
                   help="export the deploy form (fast, for `val`/`predict --weights file.onnx`) in this precision; "
                        "default: the fused form (one conv per neuron, for hardware mapping)")
    p.add_argument("--output", default=None, help="output file (default: the weights path with the new suffix)")
    p.add_argument("--opset", type=positive_int, default=17, help="ONNX opset version")


def run_export(args: argparse.Namespace) -> int:
    out = Path(args.output) if args.output else Path(args.weights).with_suffix(".onnx")
    model, record = load_with_record(args.weights)  # the checkpoint is read once
    imgsz = args.imgsz or trained_imgsz(record)
    form = "fused" if args.precision is None else "deploy"
    result = export(model, out, args.format, imgsz=imgsz, opset=args.opset, form=form,
                    precision=args.precision or "fp32")
    what = "the fused form" if form == "fused" else \
        f"the deploy form ({args.precision}, {result['int8_convs']} int8 convs)"
    check = "" if result["max_abs_diff"] is None else f", onnxruntime max |diff| {result['max_abs_diff']:.2e}"
    print(f"exported {what} at {imgsz}x{imgsz} to {out}{check}")
    return 0


def _add_precision_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--precision", choices=["fp32", "bf16", "int8"], default=None,
                   help="run the deploy form in this precision (bf16: torch; int8: torch on an x86 CPU, or "
                        "onnxruntime); default: the train form (with energy metrics)")
    p.add_argument("--backend", choices=["torch", "onnxruntime"], default=None,
                   help="deploy-form runtime (default: torch; onnxruntime for .onnx weights)")
    p.add_argument("--calibration", default=None, metavar="SOURCE",
                   help="int8 (torch): images (folder, .txt list or glob; up to 32 used) whose mean spikes correct "
                        "each int8 conv's bias for its weight rounding; default: no correction")


# --- train / val / predict / demo (engine) ------------------------------------------------------------------
def _no_flag(p: argparse.ArgumentParser, name: str, help_text: str) -> None:
    p.add_argument(f"--no-{name}", dest=name.replace("-", "_"), action="store_false", help=help_text)


def add_train_args(p: argparse.ArgumentParser) -> None:
    d = TrainConfig()
    p.add_argument("--data", help="data YAML (ultralytics convention; type: coco/voc/gen1 also)")
    p.add_argument("--recipe", default=None, metavar="NAME",
                   help=f"start from a named recipe: {', '.join(recipe_names())} (`spikeyolo recipes` lists them; "
                        "or a recipe .yaml); every flag typed here overrides it")
    p.add_argument("--model", default=d.model, help="scale n/s/m/l, a model YAML, or a checkpoint .pt to start from")
    p.add_argument("--epochs", type=positive_int, default=d.epochs, help="training epochs")
    p.add_argument("--imgsz", type=image_size, default=d.imgsz, help="square input size (multiple of 32)")
    p.add_argument("--batch", type=positive_int, default=d.batch, help="total batch size over all processes")
    p.add_argument("--device", default=None, help="cpu, 0, 0,1 (torchrun for several GPUs); default: GPU 0 if any")
    p.add_argument("--workers", type=nonneg_int, default=default_workers(),
                   help="dataloader workers per process (default: 8 or the number of CPUs if fewer)")
    p.add_argument("--optimizer", default=d.optimizer, choices=["SGD", "AdamW"],
                   help="SGD with Nesterov momentum (the reference recipe) or AdamW")
    p.add_argument("--lr0", type=positive_float, default=d.lr0, help="initial learning rate")
    p.add_argument("--lrf", type=positive_float, default=d.lrf, help="final lr = lr0 * lrf (the paper used 0.004)")
    p.add_argument("--momentum", type=below_one, default=d.momentum, help="SGD momentum / AdamW beta1")
    p.add_argument("--weight-decay", type=nonneg_float, default=d.weight_decay,
                   help="for batch 64; scaled to the batch")
    p.add_argument("--nbs", type=positive_int, default=d.nbs,
                   help="nominal batch: gradients accumulate over NBS/BATCH batches (tiny datasets: set it to --batch)")
    p.add_argument("--warmup-epochs", type=nonneg_float, default=d.warmup_epochs, help="(at least 100 iterations)")
    p.add_argument("--cos-lr", action="store_true", help="cosine instead of linear lr decay")
    p.add_argument("--close-mosaic", type=nonneg_int, default=d.close_mosaic, help="epochs at the end without mosaic")
    p.add_argument("--mosaic", type=probability, default=None, help="mosaic probability (default 1.0; images only)")
    p.add_argument("--scale", type=below_one, default=None,
                   help="random zoom by 1 +- SCALE (default 0.5 for images, 0 for event data)")
    p.add_argument("--translate", type=probability, default=None,
                   help="random shift, fraction of imgsz (default 0.1 for images, 0 for event data)")
    p.add_argument("--fliplr", type=probability, default=None, help="horizontal flip probability (default 0.5)")
    p.add_argument("--seed", type=nonneg_int, default=d.seed,
                   help="random seed of shuffling, augmentation and weight init (same seed, same run)")
    _no_flag(p, "deterministic", "allow non-deterministic (faster) kernels")
    p.add_argument("--amp", action=argparse.BooleanOptionalAction, default=None,
                   help="mixed precision: float16 autocast on CUDA (default on), bfloat16 autocast on CPU "
                        "(default off)")
    p.add_argument("--allow-no-boxes", action="store_true",
                   help="train even if the training split has no box at all (else an error)")
    _no_flag(p, "val", "no validation during training")
    _add_protocol_arg(p, d.protocol)
    _no_flag(p, "plots", "no plots")
    p.add_argument("--val-period", type=positive_int, default=d.val_period,
                   help="validate every N epochs (and the last)")
    p.add_argument("--T", type=positive_int, default=None,
                   help="timesteps (default: a checkpoint's own, the data YAML's T for event data, else 1)")
    p.add_argument("--D", type=positive_int, default=None,
                   help="largest integer spike, virtual timesteps at inference (default 4; a checkpoint's own)")
    p.add_argument("--decay", type=below_one, default=None,
                   help="I-LIF leak (default 0.25; the official Gen1 neuron: 0.5; not with a checkpoint)")
    p.add_argument("--input-gain", type=positive_float, default=None,
                   help="I-LIF input gain (default 1.0; the official Gen1 neuron: 0.5; not with a checkpoint)")
    p.add_argument("--width", type=positive_float, default=None,
                   help="override the width multiplier (tiny models; not with a checkpoint)")
    p.add_argument("--depth", type=positive_float, default=None,
                   help="override the depth multiplier (not with a checkpoint)")
    p.add_argument("--neuron", dest="neuron_kind", default="ilif", choices=list(NEURONS),
                   help="ilif (the SNN) or relu/silu: the ANN twin, same blocks and head, T must be 1")
    p.add_argument("--project", default=d.project, help="runs go to PROJECT/NAME (NAME2, ... if it exists)")
    p.add_argument("--name", default=d.name, help="run folder name")
    p.add_argument("--exist-ok", action="store_true", help="write into PROJECT/NAME even if it exists")
    p.add_argument("--resume", default=None, help="weights/last.pt (or its run folder) to continue from")
    p.add_argument("--patience", type=int, default=d.patience,
                   help="stop after this many epochs without a better fitness (0: never)")
    p.add_argument("--save-period", type=int, default=d.save_period,
                   help="also keep weights/epoch<N>.pt every N epochs (<= 0: off)")
    p.add_argument("--freeze", type=nonneg_int, default=d.freeze,
                   help="freeze the first N layers (their weights stay as loaded; 0: train all)")
    p.add_argument("--single-cls", action="store_true", help="train every class as one class")
    p.add_argument("--cache", choices=["ram", "disk"], default=None,
                   help="ram: resized images kept in memory; disk: stored once as .npy beside the label cache")
    _no_flag(p, "tensorboard", "no TensorBoard logging (it is on when the tensorboard package is installed)")
    p.add_argument("--quiet", action="store_true",
                   help="no model summary, per-epoch lines or final table (progress bars and warnings stay)")
    p.add_argument("--json", action="store_true", help="print one JSON object as the last stdout line")


def _train_summary_json(result: dict) -> dict:
    best = result.get("best_metrics") or {}
    return {"save_dir": result["save_dir"], "weights": result["best"], "last": result["last"],
            "epochs": result["epochs_done"], "time_s": result["time_s"], "stopped": result["stopped"],
            **{k: best.get(k) for k in ("map50", "map", "precision", "recall", "fitness", "epoch")}}


def _flags_given(args: argparse.Namespace, add_args) -> list[str]:
    """The flags of ``args`` whose values differ from their defaults, as ``--name`` (``--no-name`` for switches)."""
    p = argparse.ArgumentParser()
    add_args(p)
    defaults = vars(p.parse_args([]))
    given = []
    for action in p._actions:
        k = action.dest
        if k in defaults and getattr(args, k, defaults[k]) != defaults[k]:
            given.append(action.option_strings[-1] if action.option_strings else k)
    return given


def run_train(args: argparse.Namespace) -> int:
    if not args.data and not args.resume:
        print("error: --data is required (or --resume)", file=sys.stderr)
        return 2
    if args.resume:  # a resumed run keeps its own settings; a flag that would be ignored is refused
        allowed = {"--resume", "--json", "--quiet", *(f"--{k}" for k in RESUME_MAY_CHANGE)}
        other = [f for f in _flags_given(args, add_train_args) if f not in allowed]
        if other:
            may = sorted(allowed - {"--resume", "--json", "--quiet"})
            raise InputError(f"--resume continues {args.resume} with its own settings; {', '.join(other)} "
                             f"cannot change (only {', '.join(may)} can)")
    trainer = Trainer(train_config(args))
    try:
        result = trainer.train()
    except KeyboardInterrupt:
        run = trainer.save_dir
        if run is not None and (run / "weights" / "last.pt").exists():
            raise KeyboardInterrupt(f"resume with `spikeyolo train --resume {run}`") from None
        raise
    if args.json:
        print_json(plain(_train_summary_json(result)))
    return 1 if result["stopped"] else 0


HYP_FLAGS = ("mosaic", "scale", "translate", "fliplr")


def train_config(args: argparse.Namespace) -> TrainConfig:
    """The training settings of parsed ``train`` arguments: with ``--recipe``, the recipe's settings with every
    flag the user typed (``args._typed``, recorded by :class:`CommandParser`) on top."""
    # the top-level --verbose (tracebacks) is not TrainConfig.verbose (the trainer's log lines, on by default)
    fields = {f: getattr(args, f) for f in TrainConfig.__dataclass_fields__ if hasattr(args, f) and f != "verbose"}
    fields["verbose"] = not getattr(args, "quiet", False)
    hyp = {k: getattr(args, k) for k in HYP_FLAGS}
    fields["hyp"] = {k: v for k, v in hyp.items() if v is not None}
    if not getattr(args, "recipe", None):
        return TrainConfig.from_dict(fields)
    typed = getattr(args, "_typed", None)
    if typed is None:  # a namespace not parsed by CommandParser: flags that differ from their defaults
        typed = {f.lstrip("-").replace("-", "_").removeprefix("no_") for f in _flags_given(args, add_train_args)}
        typed = {"neuron_kind" if k == "neuron" else k for k in typed}
    given = {k: v for k, v in fields.items() if k in typed and k != "hyp"}
    given["hyp"] = {k: v for k, v in fields["hyp"].items() if k in typed}
    recipe = load_recipe(args.recipe, TrainConfig.__dataclass_fields__)
    return TrainConfig.from_dict(apply_recipe(recipe, given, fields))


def add_recipes_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("name", nargs="?", default=None, help="show this recipe's settings (default: list them all)")


def run_recipes(args: argparse.Namespace) -> int:
    if args.name is None:
        print(recipe_table())
        return 0
    recipe = load_recipe(args.name, TrainConfig.__dataclass_fields__)
    print(f"# {recipe.tag}: {recipe.description}\n# source: {recipe.source}")
    print(yaml.safe_dump(recipe.settings, sort_keys=False).rstrip())
    return 0


def _add_protocol_arg(p: argparse.ArgumentParser, default: str) -> None:
    p.add_argument("--protocol", choices=PROTOCOLS, default=default,
                   help="evaluation protocol: coco (pycocotools, 100 detections per image, crowd regions ignored) "
                        "or ultralytics (the AP behind the published SpikeYOLO numbers: multi-label NMS, 300 "
                        "detections, rectangular batches, crowd boxes as objects); see docs/training.md")


def add_val_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--weights", required=True,
                   help="checkpoint .pt (best.pt / last.pt of a run, or saved model), or a `spikeyolo export` .onnx")
    p.add_argument("--data", default=None, help="data YAML (default: the one the checkpoint was trained on)")
    _add_precision_args(p)
    p.add_argument("--split", default="val", choices=("train", "val", "test"), help="the split to score")
    p.add_argument("--imgsz", type=image_size, default=None, help="default: the size the checkpoint was trained at")
    p.add_argument("--batch", type=positive_int, default=16, help="batch size")
    p.add_argument("--device", default=None, help="cpu, 0, cuda:1, mps (default: GPU 0 if any, else cpu)")
    p.add_argument("--workers", type=nonneg_int, default=default_workers(),
                   help="data-loading worker processes (default: 8 or the number of CPUs if fewer)")
    p.add_argument("--conf", type=probability, default=0.001, help="confidence threshold")
    p.add_argument("--iou", type=open_unit, default=0.7, help="NMS IoU threshold")
    p.add_argument("--max-det", type=positive_int, default=300, help="most detections per image")
    p.add_argument("--save-json", action="store_true", help="write predictions.json (COCO results format)")
    _add_protocol_arg(p, "coco")
    _no_flag(p, "plots", "no PR curve or drawn batch")
    p.add_argument("--project", default="runs/detect", help="outputs go to PROJECT/NAME (NAME2, ... if it exists)")
    p.add_argument("--name", default="val", help="run folder name")
    p.add_argument("--json", action="store_true", help="print one JSON object as the last stdout line")


def recorded_data(model: InferenceModel) -> str:
    """The data YAML a checkpoint was trained on (its ``train_args``), when that file still exists."""
    weights = model.source
    if model.backend == "onnxruntime":
        raise InputError(f"--data is required: {weights} is an ONNX export, which records no training data")
    data = (model.record.get("train_args") or {}).get("data")
    if not data:
        raise InputError(f"--data is required: {weights} records no training data")
    if not Path(data).is_file():
        raise InputError(f"--data is required: {weights} was trained on {data}, which does not exist here")
    return str(data)


def run_val(args: argparse.Namespace) -> int:
    cal = args.calibration
    images = None if cal is None else lambda size: calibration_images(cal, size)
    model = InferenceModel.load(args.weights, args.precision, args.backend, args.imgsz, select_device(args.device),
                                images)  # every file is read once, here
    if args.data is None:
        args.data = recorded_data(model)
        print(f"data: {args.data} (recorded in {args.weights}; --data to use another)")
    metrics, save_dir = validate(model, args.data, None, args.batch, args.device, args.workers, args.conf, args.iou,
                                 args.max_det, args.save_json, args.project, args.name, args.plots, split=args.split,
                                 protocol=args.protocol)
    print(summary_table(metrics, model.names))
    print(f"results in {save_dir}")
    if args.json:
        form = {"name": model.form, "precision": model.precision, "backend": model.backend}
        print(metrics_json(metrics, save_dir=str(save_dir), weights=str(args.weights), form=form), flush=True)
    return 0


def add_predict_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--weights", required=True, help="checkpoint .pt, or a `spikeyolo export` .onnx (fused or deploy)")
    p.add_argument("--source", required=True,
                   help="image, folder, video (.mp4 ...), event recording (.dat; .raw, .aedat4, .es with the [events] "
                        "extra), glob pattern ('photos/*.jpg'), "
                        ".txt list of files, webcam index (0) or stream URL (rtsp://, http://, file://)")
    _add_precision_args(p)
    p.add_argument("--imgsz", type=image_size, default=None, help="default: the size the checkpoint was trained at")
    p.add_argument("--conf", type=probability, default=0.25, help="confidence threshold")
    p.add_argument("--iou", type=open_unit, default=0.7, help="NMS IoU threshold")
    p.add_argument("--max-det", type=positive_int, default=300, help="most detections per image")
    p.add_argument("--device", default=None, help="cpu, 0, cuda:1, mps (default: GPU 0 if any, else cpu)")
    p.add_argument("--classes", type=nonneg_int, nargs="+", default=None, help="keep only these class ids (e.g. 0 2)")
    p.add_argument("--batch", type=positive_int, default=1, help="images or video frames per forward pass")
    p.add_argument("--vid-stride", type=positive_int, default=1, help="keep every n-th video or stream frame")
    p.add_argument("--save", action=argparse.BooleanOptionalAction, default=True,
                   help="write annotated images/videos (default on; --no-save for labels and JSON only)")
    _no_flag(p, "save-txt", "no YOLO txt labels")
    p.add_argument("--project", default="runs/detect", help="outputs go to PROJECT/NAME (NAME2, ... if it exists)")
    p.add_argument("--name", default="predict", help="run folder name")
    p.add_argument("--json", action="store_true", help="print one JSON object as the last stdout line")
    ev = p.add_argument_group("event recordings", "apply to event recordings only; ignored for images and videos")
    ev.add_argument("--window-us", type=positive_int, default=None,
                    help="window length in microseconds (default: the checkpoint's training window, else 250000)")
    ev.add_argument("--step-us", type=positive_int, default=None,
                    help="microseconds between window ends (default 50000; with --carry-state, the window)")
    ev.add_argument("--carry-state", action="store_true",
                    help="keep membrane potentials from one window to the next (use non-overlapping windows)")


def run_predict(args: argparse.Namespace) -> int:
    summaries, save_dir = predict_to_folder(
        args.weights, args.source, args.imgsz, args.conf, args.iou, args.max_det, args.device, save=args.save,
        save_txt=args.save_txt, project=args.project, name=args.name, classes=args.classes, batch=args.batch,
        vid_stride=args.vid_stride, window_us=args.window_us, step_us=args.step_us, carry_state=args.carry_state,
        precision=args.precision, backend=args.backend, calibration=args.calibration)
    done = [s for s in summaries if "skipped" not in s]
    skipped = [s for s in summaries if "skipped" in s]
    for s in done:
        what = f"{s['frames']} frames, " if "frames" in s else ""
        print(f"{s['source']}: {what}{s.get('detections', '?')} detections")
    if skipped:
        print(f"skipped {len(skipped)} file(s):")
        for s in skipped:
            print(f"  {s['source']}: {s['skipped']}")
    print(f"{len(done)} source(s); " + (f"results in {save_dir}" if save_dir.is_dir() else "nothing written"))
    if args.json:
        print_json({"save_dir": str(save_dir), "sources": done, "skipped": skipped})
    return 0 if done else 1


def add_demo_args(p: argparse.ArgumentParser) -> None:
    add_demo_options(p)


def run_demo(args: argparse.Namespace) -> int:
    return run_demo_cli(args)


COMMANDS = {
    "info": (add_info_args, run_info, "parameters, MACs per form, layer table"),
    "train": (add_train_args, run_train, "train a detector (torchrun --nproc_per_node N for DDP)"),
    "recipes": (add_recipes_args, run_recipes, "list the named training recipes (official runs), or show one"),
    "val": (add_val_args, run_val, "COCO mAP, precision and recall of a checkpoint on a data split"),
    "predict": (add_predict_args, run_predict, "detect on images, folders, videos or event recordings"),
    "demo": (add_demo_args, run_demo, "train and evaluate on the bundled tree photos (CPU, about 5 min on 2 cores)"),
    "export": (add_export_args, run_export, "export the fused or deploy (fp32/int8) form to ONNX"),
    "energy": (add_energy_args, run_energy, "per-layer firing rate, operations and energy over a val split"),
}


class CommandParser(argparse.ArgumentParser):
    """A command's parser that also records which flags were typed (``args._typed``, their destinations), so a
    recipe yields to what the user typed, never to an argparse default."""

    def parse_known_args(self, args=None, namespace=None):
        parsed, extras = super().parse_known_args(args, namespace)
        defaults = [(a, a.default) for a in self._actions]
        try:  # parse again with every default suppressed: only typed flags reach the namespace
            for a, _ in defaults:
                a.default = argparse.SUPPRESS
            typed, _ = super().parse_known_args(args, None)
        finally:
            for a, default in defaults:
                a.default = default
        parsed._typed = set(vars(typed))
        return parsed, extras


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="spikeyolo", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"spikeyolo {__version__}")
    parser.add_argument("--verbose", action="store_true",
                        help=f"show the full traceback of an error (or set {VERBOSE_ENV}=1)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="command", parser_class=CommandParser)
    for name, (add_args, _, help_text) in COMMANDS.items():
        add_args(sub.add_parser(name, help=help_text, description=help_text, formatter_class=HelpFormatter))
    return parser


def user_message(e: BaseException) -> str | None:
    """The one-line message for an error caused by the user's input or machine (a file, a flag, a full disk);
    ``None`` for anything else, which is a bug and keeps its traceback."""
    if isinstance(e, OSError) and e.errno == errno.ENOSPC:
        where = f" on the disk holding {e.filename}" if e.filename else " on the device"
        return f"no space left{where}; free some space and run again"
    if isinstance(e, SpikeYOLOError | OSError):
        return str(e) or type(e).__name__
    return None


def main(argv: list[str] | None = None) -> int:
    """Run one command. Exit codes: 0 done, 1 an error in the input (one line on stderr), 2 a usage error,
    130 interrupted (Ctrl-C). ``--verbose`` or ``SPIKEYOLO_VERBOSE=1`` shows tracebacks of input errors too."""
    args = build_parser().parse_args(argv)
    verbose = args.verbose or os.environ.get(VERBOSE_ENV, "") not in ("", "0")
    try:
        return COMMANDS[args.command][1](args) or 0
    except KeyboardInterrupt as e:
        print(f"\ninterrupted{f'; {e}' if str(e) else ''}", file=sys.stderr)
        return 130
    except Exception as e:
        message = user_message(e)
        if message is None or verbose:
            raise
        print(f"error: {message}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
