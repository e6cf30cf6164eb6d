"""`spikeyolo <command>`: the command line.

Each command is a pair of functions: `add_<name>_args(parser)` declares its flags and `run_<name>(args)` runs
it and returns an exit code. Commands with `--json` print one JSON object as the last stdout line.
"""

from __future__ import annotations

import argparse
import json
import sys


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
    from .info import model_summary

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
    from .energy.run import run

    report, out = run(args.weights, args.data, imgsz=args.imgsz, batch=args.batch, max_batches=args.max_batches,
                      workers=args.workers, device=args.device, out=args.out, plots=not args.no_plots,
                      e_mac=args.e_mac, e_ac=args.e_ac, first_layer=args.first_layer, geometry=args.geometry,
                      form=args.form, synops=not args.no_synops, progress=not args.json)
    print(report.table())
    print(f"results saved to {out}")
    if args.json:
        from .energy.report import plain_json

        print_json(plain_json({**report.to_dict(), "out": str(out)}))
    return 0


# --- export ---------------------------------------------------------------------------------------------------
def add_export_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--weights", required=True, help="checkpoint .pt")
    p.add_argument("--format", default="onnx", choices=["onnx"], help="export format")
    p.add_argument("--imgsz", type=int, default=640, help="square input size (a multiple of 32)")
    p.add_argument("--output", default=None, help="output file (default: the weights path with the new suffix)")
    p.add_argument("--opset", type=int, default=17)


def run_export(args: argparse.Namespace) -> int:
    from pathlib import Path

    from .checkpoint import load
    from .export import export_onnx

    out = Path(args.output) if args.output else Path(args.weights).with_suffix(".onnx")
    result = export_onnx(load(args.weights), out, args.imgsz, args.opset)
    check = "" if result["max_abs_diff"] is None else f", onnxruntime max |diff| {result['max_abs_diff']:.2e}"
    print(f"exported the fused form to {out}{check}")
    return 0


COMMANDS = {
    "info": (add_info_args, run_info, "parameters, MACs per form, layer table"),
    "export": (add_export_args, run_export, "export the fused form to ONNX"),
    "energy": (add_energy_args, run_energy, "per-layer firing rate, operations and energy over a val split"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="spikeyolo", description=__doc__.splitlines()[0])
    from . import __version__

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
