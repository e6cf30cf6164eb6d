"""Training throughput and memory: images/s of full training steps, peak memory, and data-loading images/s.

    python benchmarks/train.py                     # scale n, 320 px, batch 8, on the bundled tree tiles
    python benchmarks/train.py --scale s --imgsz 640 --batch 16 --device 0
    python benchmarks/train.py --amp                # bfloat16 autocast on CPU (float16 on CUDA), as train --amp
    python benchmarks/train.py --amp-vs-fp32        # fp32 and amp steps alternated in one process

A training step is the trainer's own ``Trainer.train_step`` (forward in train mode, detection loss, backward,
gradient clipping, SGD step and EMA update; AMP on CUDA; ``nbs`` = batch so every step updates the weights).
Data loading is the training dataloader alone (mosaic + affine + HSV + flip),
timed separately so the two can be compared (if loading is slower than training, add workers). Peak memory is
the process's maximum resident set size (``resource.getrusage``), which includes the model, activations and
the loader; on CUDA the peak allocated GPU memory is reported as well.
"""

from __future__ import annotations

import argparse
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch


def maxrss_mb() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return r / 1024 / 1024 if sys.platform == "darwin" else r / 1024  # bytes on macOS, KiB on Linux


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scale", default="n")
    ap.add_argument("--width", type=float, default=None, help="override the width multiplier")
    ap.add_argument("--imgsz", type=int, default=320)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--iters", type=int, default=5, help="timed training steps")
    ap.add_argument("--warmup", type=int, default=1, help="untimed steps first")
    ap.add_argument("--workers", type=int, nargs="+", default=[0], help="loader worker counts to time")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    ap.add_argument("--amp", action="store_true", help="autocast the forward (bfloat16 on CPU, float16 on CUDA)")
    ap.add_argument("--amp-vs-fp32", action="store_true",
                    help="time fp32 and amp steps alternately on the same batches (two trainers); peak memory is "
                         "then that of both, so measure memory with separate --amp / plain runs")
    ap.add_argument("--data", default=None, help="data YAML (default: the bundled tree tiles in a temp folder)")
    args = ap.parse_args(argv)

    from spikeyolo.data import build_dataloader, build_dataset
    from spikeyolo.engine.trainer import TrainConfig, Trainer
    from spikeyolo.utils.runs import select_device

    if args.threads:
        torch.set_num_threads(args.threads)
    device = select_device(args.device)
    tmp = None
    if args.data is None:
        from spikeyolo.demo.trees import prepare_tree_dataset

        tmp = tempfile.TemporaryDirectory()
        args.data = str(prepare_tree_dataset(Path(tmp.name) / "trees"))
    dataset = build_dataset(args.data, "train", imgsz=args.imgsz, augment=True)

    # data loading alone
    load_rows = []
    for w in args.workers:
        loader = build_dataloader(dataset, args.batch, workers=w, shuffle=True, seed=0)
        n, t0 = 0, None
        for epoch in range(100):
            loader.set_epoch(epoch)
            for b in loader:
                if t0 is None:  # the first batch pays for worker start-up
                    t0 = time.perf_counter()
                    continue
                n += len(b["img"])
            if n >= max(4 * args.batch, 32):
                break
        load_rows.append((w, n / (time.perf_counter() - t0)))

    # training steps on real batches (collected first, so loading is not timed here)
    loader = build_dataloader(dataset, args.batch, workers=0, shuffle=True, seed=0)
    batches = []
    while len(batches) < args.iters + args.warmup:  # full batches only: an epoch's short last one is cheaper
        full = [b for b in loader if len(b["img"]) == args.batch]
        if not full:
            raise SystemExit(f"fewer than {args.batch} training images: lower --batch")
        batches += full
    batches = batches[: args.iters + args.warmup]
    runs = tempfile.TemporaryDirectory()
    modes = [False, True] if args.amp_vs_fp32 else [args.amp]
    trainers = {}
    for amp in modes:
        cfg = TrainConfig(data=args.data, model=args.scale, width=args.width, imgsz=args.imgsz, batch=args.batch,
                          nbs=args.batch, warmup_epochs=0, workers=0, val=False, plots=False, progress=False,
                          verbose=False, project=runs.name, name=f"amp{int(amp)}", device=args.device, amp=amp)
        trainers[amp] = Trainer(cfg)
        trainers[amp].setup(device)
    params = sum(p.numel() for p in trainers[modes[0]].model.parameters())
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    step_times = {amp: [] for amp in modes}
    for k, b in enumerate(batches):
        for amp, trainer in trainers.items():  # alternated: the ratio survives a noisy machine
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            t = time.perf_counter()
            trainer.train_step(b, k)
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            if k >= args.warmup:
                step_times[amp].append(time.perf_counter() - t)
    times = step_times[modes[-1]]
    step = sum(times) / len(times)
    train_ips = args.batch / step
    median = {amp: statistics.median(t) for amp, t in step_times.items()}  # robust to a shared machine's stalls

    print(f"SpikeYOLO-{args.scale}{'' if args.width is None else f' width {args.width}'} ({params / 1e6:.2f} M "
          f"params), {args.imgsz} px, batch {args.batch}, {device}, {torch.get_num_threads()} CPU threads, "
          f"{len(dataset)} training tiles")
    print(f"| {'measure':<34} | {'value':>12} |")
    print(f"|{'-' * 36}|{'-' * 14}|")
    label = f"train step, {'amp' if modes[-1] else 'fp32'} (s/batch, mean)"
    print(f"| {label:<34} | {step:>12.3f} |")
    print(f"| {label.replace('mean', 'median'):<34} | {median[modes[-1]]:>12.3f} |")
    if args.amp_vs_fp32:
        fp32 = sum(step_times[False]) / len(step_times[False])
        print(f"| {'train step, fp32 (s/batch, mean)':<34} | {fp32:>12.3f} |")
        print(f"| {'train step, fp32 (s/batch, median)':<34} | {median[False]:>12.3f} |")
        print(f"| {'  amp speed-up over fp32 (means)':<34} | {fp32 / step:>11.2f}x |")
        print(f"| {'  amp speed-up over fp32 (medians)':<34} | {median[False] / median[True]:>11.2f}x |")
    print(f"| {'train images/s':<34} | {train_ips:>12.2f} |")
    for w, ips in load_rows:
        label = f"data loading images/s ({w} workers)"
        print(f"| {label:<34} | {ips:>12.1f} |")
        print(f"| {'  loading / training speed':<34} | {ips / train_ips:>11.1f}x |")
    print(f"| {'peak resident memory (MB)':<34} | {maxrss_mb():>12.0f} |")
    if device.type == "cuda":
        print(f"| {'peak GPU memory allocated (MB)':<34} | {torch.cuda.max_memory_allocated(device) / 2**20:>12.0f} |")
    runs.cleanup()
    if tmp is not None:
        tmp.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
