"""Batch-1 inference latency of the train, fused and spike-driven forms, printed as a table.

    python benchmarks/infer.py [--scales n s] [--sizes 320 640] [--repeats 3] [--threads N] [--device cuda]

The forms run side by side in one process, so the ratios are comparable even on a busy machine; the max
output difference is taken against the train form on the same input.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

import spikeyolo


def latency(model, x, repeats: int) -> tuple[float, torch.Tensor]:
    sync = torch.cuda.synchronize if x.is_cuda else (lambda: None)
    with torch.inference_mode():
        out = model(x)  # warm-up (allocator, oneDNN / cuDNN algorithm caches)
        times = []
        for _ in range(repeats):
            sync()
            t0 = time.perf_counter()
            out = model(x)
            sync()
            times.append(time.perf_counter() - t0)
    return statistics.median(times), out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--scales", nargs="+", default=["n", "s"])
    p.add_argument("--sizes", nargs="+", type=int, default=[320, 640])
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--device", default="cpu")
    p.add_argument("--skip-spike-driven", action="store_true", help="the spike-driven form is D times the work")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    where = torch.cuda.get_device_name() if args.device.startswith("cuda") else f"{torch.get_num_threads()} threads"
    print(f"torch {torch.__version__}, {args.device} ({where}), batch 1, float32, median of {args.repeats}")
    print(f"{'scale':>5} {'size':>5} {'form':>13} {'ms':>9} {'vs train':>9} {'max |diff|':>11}")
    for scale in args.scales:
        model = spikeyolo.build_model(scale, nc=80).eval().to(args.device)
        forms = {"train": model, "fused": spikeyolo.fuse(model)}
        if not args.skip_spike_driven:
            forms["spike-driven"] = spikeyolo.to_spike_driven(model)
        for size in args.sizes:
            x = torch.rand(1, 3, size, size, device=args.device)
            base, ref = None, None
            for name, m in forms.items():
                t, out = latency(m, x, args.repeats)
                base = base or t
                ref = out if ref is None else ref
                diff = (out - ref).abs().max().item()
                print(f"{scale:>5} {size:>5} {name:>13} {t * 1e3:9.1f} {base / t:8.2f}x {diff:11.2e}", flush=True)


if __name__ == "__main__":
    main()
