"""`spikeyolo <command>`: the command line.

Each command is a pair of functions: `add_<name>_args(parser)` declares its flags and `run_<name>(args)` runs
it and returns an exit code. Commands with `--json` print one JSON object as the last stdout line.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from .checkpoint import load, read_checkpoint
from .demo import add_demo_options, run_demo_cli
from .energy.run import run
from .engine.predictor import predict
from .engine.report import metrics_json, summary_table
from .engine.trainer import TrainConfig, Trainer
from .engine.validator import validate
from .export import export_onnx
from .info import model_summary
from .neuron import NEURONS
from .runs import plain
from .version import __version__


def print_json(obj: dict) -> None:
    """Print one machine-readable JSON object on its own (last) stdout line."""
    print(json.dumps(obj, default=float), flush=True)


# --- info -----------------------------------------------------------------------------------------------------
def add_info_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default="s", help="scale n/s/m/l, a model YAML, or a checkpoint .pt")
    p.add_argument("--nc", type=int, default=80, help="number of classes (ignored for a checkpoint)")
    p.add_argument("--imgsz", type=int, default=640, help="square input size for the MAC count")
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
    p.add_argument("--imgsz", type=int, default=None, help="square input size (default: the checkpoint's)")
    p.add_argument("--batch", type=int, default=8, help="batch size")
    p.add_argument("--max-batches", type=int, default=None, help="stop after this many batches")
    p.add_argument("--device", default="cpu", help="cpu, 0, cuda:1, mps")
    p.add_argument("--workers", type=int, default=0, help="data-loading worker processes")
    p.add_argument("--e-mac", type=float, default=4.6, help="energy per MAC in pJ")
    p.add_argument("--e-ac", type=float, default=0.9, help="energy per AC in pJ")
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
    p.add_argument("--imgsz", type=int, default=640, help="square input size (a multiple of 32)")
    p.add_argument("--output", default=None, help="output file (default: the weights path with the new suffix)")
    p.add_argument("--opset", type=int, default=17)


def run_export(args: argparse.Namespace) -> int:
    out = Path(args.output) if args.output else Path(args.weights).with_suffix(".onnx")
    result = export_onnx(load(args.weights), out, args.imgsz, args.opset)
    check = "" if result["max_abs_diff"] is None else f", onnxruntime max |diff| {result['max_abs_diff']:.2e}"
    print(f"exported the fused form to {out}{check}")
    return 0


# --- train / val / predict / demo (engine) ------------------------------------------------------------------
def _no_flag(p: argparse.ArgumentParser, name: str, help_text: str) -> None:
    p.add_argument(f"--no-{name}", dest=name.replace("-", "_"), action="store_false", help=help_text)


def add_train_args(p: argparse.ArgumentParser) -> None:
    d = TrainConfig()
    p.add_argument("--data", help="data YAML (ultralytics convention; type: coco/voc/gen1 also)")
    p.add_argument("--model", default=d.model, help="scale n/s/m/l, a model YAML, or a checkpoint .pt to start from")
    p.add_argument("--epochs", type=int, default=d.epochs)
    p.add_argument("--imgsz", type=int, default=d.imgsz, help="square input size (multiple of 32)")
    p.add_argument("--batch", type=int, default=d.batch, help="total batch size over all processes")
    p.add_argument("--device", default=None, help="cpu, 0, 0,1 (torchrun for several GPUs); default: GPU 0 if any")
    p.add_argument("--workers", type=int, default=d.workers, help="dataloader workers per process")
    p.add_argument("--optimizer", default=d.optimizer, choices=["SGD", "AdamW"])
    p.add_argument("--lr0", type=float, default=d.lr0, help="initial learning rate")
    p.add_argument("--lrf", type=float, default=d.lrf, help="final lr = lr0 * lrf (the paper used 0.004)")
    p.add_argument("--momentum", type=float, default=d.momentum, help="SGD momentum / AdamW beta1")
    p.add_argument("--weight-decay", type=float, default=d.weight_decay, help="for batch 64; scaled to the batch")
    p.add_argument("--warmup-epochs", type=float, default=d.warmup_epochs, help="(at least 100 iterations)")
    p.add_argument("--cos-lr", action="store_true", help="cosine instead of linear lr decay")
    p.add_argument("--close-mosaic", type=int, default=d.close_mosaic, help="epochs at the end without mosaic")
    p.add_argument("--mosaic", type=float, default=None, help="mosaic probability (default 1.0; images only)")
    p.add_argument("--scale", type=float, default=None,
                   help="random zoom by 1 +- SCALE (default 0.5 for images, 0 for event data)")
    p.add_argument("--translate", type=float, default=None,
                   help="random shift, fraction of imgsz (default 0.1 for images, 0 for event data)")
    p.add_argument("--fliplr", type=float, default=None, help="horizontal flip probability (default 0.5)")
    p.add_argument("--seed", type=int, default=d.seed)
    _no_flag(p, "deterministic", "allow non-deterministic (faster) kernels")
    _no_flag(p, "amp", "no mixed precision on CUDA")
    _no_flag(p, "val", "no validation during training")
    _no_flag(p, "plots", "no plots")
    p.add_argument("--val-period", type=int, default=d.val_period, help="validate every N epochs (and the last)")
    p.add_argument("--T", type=int, default=d.T, help="timesteps (default: the data YAML's T for event data, else 1)")
    p.add_argument("--D", type=int, default=d.D, help="largest integer spike (virtual timesteps at inference)")
    p.add_argument("--decay", type=float, default=d.decay, help="I-LIF leak (the official Gen1 neuron: 0.5)")
    p.add_argument("--input-gain", type=float, default=d.input_gain,
                   help="I-LIF input gain (the official Gen1 neuron: 0.5)")
    p.add_argument("--neuron", dest="neuron_kind", default=d.neuron_kind, choices=list(NEURONS),
                   help="ilif (the SNN) or relu/silu: the ANN twin, same blocks and head, T must be 1")
    p.add_argument("--width", type=float, default=None, help="override the width multiplier (tiny models)")
    p.add_argument("--depth", type=float, default=None, help="override the depth multiplier")
    p.add_argument("--project", default=d.project, help="runs go to PROJECT/NAME (NAME2, ... if it exists)")
    p.add_argument("--name", default=d.name)
    p.add_argument("--resume", default=None, help="weights/last.pt (or its run folder) to continue from")
    p.add_argument("--json", action="store_true", help="print one JSON object as the last stdout line")


def _train_summary_json(result: dict) -> dict:
    best = result.get("best_metrics") or {}
    return {"save_dir": result["save_dir"], "weights": result["best"], "last": result["last"],
            "epochs": result["epochs_done"], "time_s": result["time_s"], "stopped": result["stopped"],
            **{k: best.get(k) for k in ("map50", "map", "precision", "recall", "fitness", "epoch")}}


def run_train(args: argparse.Namespace) -> int:
    if not args.data and not args.resume:
        print("error: --data is required (or --resume)", file=sys.stderr)
        return 2
    fields = {f: getattr(args, f) for f in TrainConfig.__dataclass_fields__ if hasattr(args, f)}
    hyp = {k: getattr(args, k) for k in ("mosaic", "scale", "translate", "fliplr")}
    fields["hyp"] = {k: v for k, v in hyp.items() if v is not None}
    result = Trainer(TrainConfig.from_dict(fields)).train()
    if args.json:
        print_json(plain(_train_summary_json(result)))
    return 1 if result["stopped"] else 0


def add_val_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--weights", required=True, help="checkpoint .pt (best.pt / last.pt of a run, or saved model)")
    p.add_argument("--data", required=True, help="data YAML")
    p.add_argument("--split", default="val", help="val (default) or test")
    p.add_argument("--imgsz", type=int, default=None, help="default: the size the checkpoint was trained at")
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--device", default=None)
    p.add_argument("--workers", type=int, default=4)
    p.add_argument("--conf", type=float, default=0.001)
    p.add_argument("--iou", type=float, default=0.7)
    p.add_argument("--max-det", type=int, default=300)
    p.add_argument("--save-json", action="store_true", help="write predictions.json (COCO results format)")
    _no_flag(p, "plots", "no PR curve or drawn batch")
    p.add_argument("--project", default="runs/detect")
    p.add_argument("--name", default="val")
    p.add_argument("--json", action="store_true", help="print one JSON object as the last stdout line")


def run_val(args: argparse.Namespace) -> int:
    metrics, save_dir = validate(args.weights, args.data, args.imgsz, args.batch, args.device, args.workers,
                                 args.conf, args.iou, args.max_det, args.save_json, args.project, args.name,
                                 args.plots, split=args.split)
    print(summary_table(metrics, _names_of(args.weights)))
    print(f"results in {save_dir}")
    if args.json:
        print(metrics_json(metrics, save_dir=str(save_dir), weights=str(args.weights)), flush=True)
    return 0


def _names_of(weights) -> list:
    return list(read_checkpoint(weights)["config"]["names"])


def add_predict_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--weights", required=True, help="checkpoint .pt")
    p.add_argument("--source", required=True,
                   help="image, folder, video (.mp4 ...) or event recording (.dat; .raw EVT2/EVT3, .aedat4, .es "
                        "with the [events] extra)")
    p.add_argument("--imgsz", type=int, default=None, help="default: the size the checkpoint was trained at")
    p.add_argument("--conf", type=float, default=0.25)
    p.add_argument("--iou", type=float, default=0.7)
    p.add_argument("--max-det", type=int, default=300)
    p.add_argument("--device", default=None)
    p.add_argument("--save", action=argparse.BooleanOptionalAction, default=True,
                   help="write annotated images/videos (default on; --no-save for labels and JSON only)")
    _no_flag(p, "save-txt", "no YOLO txt labels")
    p.add_argument("--project", default="runs/detect")
    p.add_argument("--name", default="predict")
    p.add_argument("--json", action="store_true", help="print one JSON object as the last stdout line")
    ev = p.add_argument_group("event recordings", "apply to event recordings only; ignored for images and videos")
    ev.add_argument("--window-us", type=_positive_int, default=None,
                    help="window length in microseconds (default: the checkpoint's training window, else 250000)")
    ev.add_argument("--step-us", type=_positive_int, default=None,
                    help="microseconds between window ends (default 50000; with --carry-state, the window)")
    ev.add_argument("--carry-state", action="store_true",
                    help="keep membrane potentials from one window to the next (use non-overlapping windows)")


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text!r}")
    return value


def run_predict(args: argparse.Namespace) -> int:
    summaries, save_dir = predict(args.weights, args.source, args.imgsz, args.conf, args.iou, args.max_det,
                                  args.device, save=args.save, save_txt=args.save_txt, project=args.project,
                                  name=args.name, window_us=args.window_us, step_us=args.step_us,
                                  carry_state=args.carry_state)
    for s in summaries:
        what = f"{s['frames']} frames, " if "frames" in s else ""
        print(f"{s['source']}: {what}{s.get('detections', '?')} detections")
    print(f"{len(summaries)} source(s); results in {save_dir}")
    if args.json:
        print_json({"save_dir": str(save_dir), "sources": summaries})
    return 0


def add_demo_args(p: argparse.ArgumentParser) -> None:
    add_demo_options(p)


def run_demo(args: argparse.Namespace) -> int:
    return run_demo_cli(args)


COMMANDS = {
    "info": (add_info_args, run_info, "parameters, MACs per form, layer table"),
    "train": (add_train_args, run_train, "train a detector (torchrun --nproc_per_node N for DDP)"),
    "val": (add_val_args, run_val, "COCO mAP, precision and recall of a checkpoint on a data split"),
    "predict": (add_predict_args, run_predict, "detect on images, folders, videos or event recordings"),
    "demo": (add_demo_args, run_demo, "train and evaluate on the bundled tree photos (CPU, ~10 min)"),
    "export": (add_export_args, run_export, "export the fused form to ONNX"),
    "energy": (add_energy_args, run_energy, "per-layer firing rate, operations and energy over a val split"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="spikeyolo", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"spikeyolo {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="command")
    for name, (add_args, _, help_text) in COMMANDS.items():
        add_args(sub.add_parser(name, help=help_text, description=help_text))
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return COMMANDS[args.command][1](args) or 0


if __name__ == "__main__":
    sys.exit(main())
