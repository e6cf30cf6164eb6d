"""Inference latency of the torch forms on one device (a GPU by default), printed as a table.

    python benchmarks/infer_gpu.py --device cuda --scales n s --sizes 640 --repeats 10

Forms: train, fused, spike-driven and the torch deploy form in fp32 and bf16 (int8 runs on x86 CPUs only:
``benchmarks/infer.py``). Each repeat runs every form once, in turn, synchronising the device around each call;
the latency is the median over repeats. ``max |diff|`` is each form's largest output difference to the train form
on the same input (float32: I-LIF rounding at .5 ties may flip a spike, docs/deploy.md).
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

import spikeyolo

FORMS = ("train", "fused", "spike-driven", "deploy-fp32", "deploy-bf16")


def make_form(model, form: str):
    if form == "train":
        return model
    if form == "fused":
        return spikeyolo.fuse(model)
    if form == "spike-driven":
        return spikeyolo.to_spike_driven(model)
    return spikeyolo.deploy(model, form.removeprefix("deploy-"), "torch")


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_forms(forms: dict, x: torch.Tensor, repeats: int) -> tuple[dict, dict]:
    """Median seconds per form, and each form's max |output - train output| on ``x``."""
    times = {name: [] for name in forms}
    with torch.inference_mode():
        ref = forms["train"](x).float()
        diffs = {name: float((m(x).float() - ref).abs().max()) for name, m in forms.items()}  # also a warm-up
        for _ in range(repeats):
            for name, m in forms.items():
                sync(x.device)
                t0 = time.perf_counter()
                m(x)
                sync(x.device)
                times[name].append(time.perf_counter() - t0)
    return {n: statistics.median(t) for n, t in times.items()}, diffs


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cuda", help="cuda, cuda:1, cpu")
    p.add_argument("--scales", nargs="+", default=["n"], choices=("n", "s", "m", "l"))
    p.add_argument("--sizes", nargs="+", type=int, default=[640])
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--repeats", type=int, default=10, help="timed repeats (each runs every form once)")
    p.add_argument("--forms", nargs="+", default=list(FORMS), choices=FORMS)
    p.add_argument("--width", type=float, default=None, help="override the scale's width (tiny test models)")
    return p


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    device = torch.device(args.device)
    forms_wanted = ["train"] + [f for f in args.forms if f != "train"]
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    print(f"torch {torch.__version__}, {device.type} ({name}), batch {args.batch}, float32 input, median of "
          f"{args.repeats}")
    print(f"{'scale':>5} {'size':>5} {'form':>13} {'ms':>9} {'vs train':>9} {'max |diff|':>11}")
    torch.manual_seed(0)
    for scale in args.scales:
        model = spikeyolo.build_model(scale, nc=80, width=args.width).eval().to(device)
        forms = {f: make_form(model, f) for f in forms_wanted}
        for size in args.sizes:
            x = torch.rand(args.batch, 3, size, size, device=device)
            t, diffs = time_forms(forms, x, args.repeats)
            for f in forms_wanted:
                print(f"{scale:>5} {size:>5} {f:>13} {t[f] * 1e3:9.1f} {t['train'] / t[f]:8.2f}x {diffs[f]:11.2e}",
                      flush=True)


if __name__ == "__main__":
    main()
