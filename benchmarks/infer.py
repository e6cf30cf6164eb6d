"""Inference latency, peak memory and accuracy of every form and precision, printed as a table.

    python benchmarks/infer.py                                   # quick: n@320, batch 1 (a few minutes, 2 cores)
    python benchmarks/infer.py --scales n s --sizes 320 640 --batches 1 8 --memory   # the full grid
    python benchmarks/infer.py --weights runs/demo/trees/weights/best.pt --data runs/demo/trees_data/data.yaml \
        --calibration runs/demo/trees_data/images/train

Forms: train, fused, deploy fp32 / bf16 / int8 (torch), deploy fp32 / int8 (onnxruntime), and with --spike-driven the
spike-driven form (D times the conv work). Every round runs each form once, in turn, so the ratios to the train
form survive a noisy machine; the latency is the median over rounds. ``--memory`` measures, in a fresh
subprocess per form (Linux), the resident memory the converted model adds to a bare process and the peak a
forward pass adds on top of that.
``--weights`` / ``--data`` add the held-out mAP50 of a trained checkpoint under each form and its difference to
the train form: val and test images in 8 dihedral views each (``benchmarks/precision.py`` gives the intervals;
the timings always use random weights at full width).
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import statistics
import subprocess
import sys
import time

import torch

import spikeyolo
from precision_eval import FORMS as EVAL_FORMS  # benchmarks/ is on sys.path when this script runs
from precision_eval import compare_forms
from spikeyolo.inference import deploy

FORMS = ("train", "fused", "deploy-fp32", "deploy-bf16", "deploy-int8", "ort-fp32", "ort-int8", "spike-driven")


def make_form(model, form: str, imgsz: int):
    if form == "train":
        return model
    if form == "fused":
        return spikeyolo.fuse(model)
    if form == "spike-driven":
        return spikeyolo.to_spike_driven(model)
    precision, backend = EVAL_FORMS[form]  # the deploy forms' (precision, backend), named as precision.py names them
    return deploy(model, precision, backend, **({"imgsz": imgsz} if backend == "onnxruntime" else {}))


def time_forms(forms: dict, x: torch.Tensor, rounds: int) -> dict[str, float]:
    times = {name: [] for name in forms}
    with torch.inference_mode():
        for m in forms.values():
            m(x)  # warm-up: allocator, oneDNN primitive caches, ORT session
        for _ in range(rounds):
            for name, m in forms.items():
                t0 = time.perf_counter()
                m(x)
                times[name].append(time.perf_counter() - t0)
    return {name: statistics.median(t) for name, t in times.items()}


def proc_status_mb(key: str) -> float:
    """A memory figure of this process from /proc/self/status (VmRSS: now; VmHWM: peak since the last reset)."""
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(key + ":")) / 1024


def release_free_memory() -> None:
    """Hand memory freed by Python and torch back to the OS (glibc ``malloc_trim``), so RSS shows what is live."""
    gc.collect()
    ctypes.CDLL("libc.so.6").malloc_trim(0)


def memory_of_form(form: str, scale: str, size: int, batch: int) -> tuple[float, float]:
    """(model MB, forward MB) of ``form``: resident memory the converted model adds to a bare process, and the
    peak a forward pass adds on top of it (freed memory is released and the peak counter reset first; Linux)."""
    release_free_memory()
    bare = proc_status_mb("VmRSS")
    model = spikeyolo.build_model(scale, nc=80).eval()
    m = make_form(model, form, size)
    if m is not model:
        del model
    x = torch.rand(batch, 3, size, size)
    with torch.inference_mode():
        m(x)  # first call: oneDNN packs weights, ORT plans its arena; they belong to the model's footprint
        release_free_memory()
        loaded = proc_status_mb("VmRSS")
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # reset VmHWM, the peak resident size
        m(x)
    return loaded - bare, proc_status_mb("VmHWM") - loaded


def peak_memory_mb(form: str, scale: str, size: int, batch: int, threads: int) -> tuple[float, float]:
    """:func:`memory_of_form` measured in a fresh process."""
    cmd = [sys.executable, __file__, "--_memory-of", form, "--scales", scale, "--sizes", str(size), "--batches",
           str(batch), "--threads", str(threads)]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    model_mb, forward_mb = out.strip().splitlines()[-1].split()
    return float(model_mb), float(forward_mb)


def accuracy_column(weights: str, data: str, forms: list[str], calibration: str | None) -> dict[str, str]:
    """``{form: "mAP50 (minus train)"}``: the pooled held-out mAP50 of a trained checkpoint on the 8 dihedral
    views of its val and test images (:func:`precision_eval.compare_forms`; ``benchmarks/precision.py`` prints
    the intervals and flip rates). Forms the comparison does not run (fused, spike-driven) are left out."""
    wanted = [f for f in forms if f in EVAL_FORMS] + (["deploy-int8-cal"] if calibration else [])
    pooled = compare_forms(weights, data, forms=wanted, calibration=calibration)["sets"]["pooled"]
    return {f: f"{r['map50']:.3f} ({r['d_map50']:+.3f})" for f, r in pooled.items()}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--scales", nargs="+", default=["n"])
    p.add_argument("--sizes", nargs="+", type=int, default=[320])
    p.add_argument("--batches", nargs="+", type=int, default=[1])
    p.add_argument("--rounds", type=int, default=3, help="timed rounds (each runs every form once)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--forms", nargs="+", default=[f for f in FORMS if f != "spike-driven"], choices=FORMS)
    p.add_argument("--spike-driven", action="store_true", help="also the spike-driven form (D times the work)")
    p.add_argument("--memory", action="store_true", help="peak resident memory per form (a subprocess each)")
    p.add_argument("--weights", default=None, help="trained checkpoint: its held-out mAP50 per form")
    p.add_argument("--data", default=None, help="data YAML for --weights (its val and test splits)")
    p.add_argument("--calibration", default=None, help="training images: also time and score calibrated int8")
    p.add_argument("--_memory-of", dest="memory_of", default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    forms_wanted = ["train"] + [f for f in args.forms if f != "train"] + (["spike-driven"] if args.spike_driven else [])
    if args.memory_of:  # child process of --memory
        print(*memory_of_form(args.memory_of, args.scales[0], args.sizes[0], args.batches[0]))
        return
    maps = {}
    if args.weights:
        if not args.data:
            p.error("--weights needs --data")
        maps = accuracy_column(args.weights, args.data, forms_wanted, args.calibration)

    print(f"torch {torch.__version__}, CPU, {torch.get_num_threads()} threads, float32 input, median of "
          f"{args.rounds} alternating rounds; random weights (mAP50 column: {args.weights or 'not measured'})")
    if "deploy-int8-cal" in maps:
        print(f"deploy-int8 with calibration on {args.calibration}: mAP50 (- train) {maps['deploy-int8-cal']}; "
              f"it runs as fast as deploy-int8")
    print(f"| scale | size | batch | {'form':<12} | {'ms':>9} | vs train | model MB | forward MB | "
          f"{'mAP50 (- train)':>15} |")
    print("|---|---|---|---|---|---|---|---|---|")
    torch.manual_seed(0)
    for scale in args.scales:
        model = spikeyolo.build_model(scale, nc=80).eval()
        for size in args.sizes:
            forms = {f: make_form(model, f, size) for f in forms_wanted}
            for batch in args.batches:
                x = torch.rand(batch, 3, size, size)
                t = time_forms(forms, x, args.rounds)
                for f in forms_wanted:
                    mem = peak_memory_mb(f, scale, size, batch, args.threads) if args.memory else None
                    model_mb, fwd_mb = (f"{v:.0f}" for v in mem) if mem else ("-", "-")
                    acc = maps.get(f, "-")
                    print(f"| {scale} | {size} | {batch} | {f:<12} | {t[f] * 1e3:9.1f} | {t['train'] / t[f]:7.2f}x "
                          f"| {model_mb:>8} | {fwd_mb:>10} | {acc:>15} |", flush=True)


if __name__ == "__main__":
    main()
