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


COMMANDS = {
    "info": (add_info_args, run_info, "parameters, MACs per form, layer table"),
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
