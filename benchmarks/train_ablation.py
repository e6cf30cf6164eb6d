"""What each CPU training-speed change gives: train steps with the changes off ("before") and on ("after"),
alternated in one process (four trainers: fp32 and amp, before and after), so ratios survive a shared machine.

    python benchmarks/train_ablation.py                      # all changes, n@320 batch 8, 2 threads
    python benchmarks/train_ablation.py --changes dwgrad     # one change alone

Changes (each switched off by restoring the earlier behaviour at run time):

- ``dwgrad``: the depthwise 7x7 weight gradient as a grouped conv (``spikeyolo.nn.depthwise``); off = oneDNN's own;
- ``ste``: the I-LIF straight-through window from one comparison, multiplied as uint8; off = ``>=``, ``<=``, ``&``
  and a bool multiply (the earlier ``_QuantizeSTE``, kept below);
- ``nofill``: no NaN fill of new tensors in deterministic mode; off = torch's default fill.

Step times are medians over the rounds; "amp after vs fp32 before" is the speed-up of ``train --amp`` today over
the float32 step without these changes.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

import spikeyolo.nn.depthwise as depthwise
import spikeyolo.nn.neuron as neuron
from spikeyolo.data import build_dataloader, build_dataset
from spikeyolo.demo.trees import prepare_tree_dataset
from spikeyolo.engine.trainer import TrainConfig, Trainer
from spikeyolo.utils.runs import select_device


class EarlierQuantizeSTE(torch.autograd.Function):
    """The I-LIF quantizer before the ``ste`` change (same values and gradients)."""

    @staticmethod
    def forward(ctx, u, D):
        ctx.save_for_backward((u >= 0) & (u <= D))
        return torch.clamp(u, 0, D).round_()

    @staticmethod
    def backward(ctx, grad):
        (window,) = ctx.saved_tensors
        return grad * window, None


CURRENT_STE, CURRENT_FAST_GRAD = neuron._QuantizeSTE, depthwise.DepthwiseConv2d._fast_grad
CHANGES = {
    "dwgrad": lambda on: setattr(depthwise.DepthwiseConv2d, "_fast_grad",
                                 CURRENT_FAST_GRAD if on else (lambda self, x: False)),
    "ste": lambda on: setattr(neuron, "_QuantizeSTE", CURRENT_STE if on else EarlierQuantizeSTE),
    "nofill": lambda on: setattr(torch.utils.deterministic, "fill_uninitialized_memory", not on),
}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--changes", nargs="+", default=list(CHANGES), choices=list(CHANGES))
    ap.add_argument("--scale", default="n")
    ap.add_argument("--imgsz", type=int, default=320)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--rounds", type=int, default=5, help="timed rounds (one untimed round first)")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    tmp = tempfile.TemporaryDirectory()
    data = str(prepare_tree_dataset(Path(tmp.name) / "trees"))
    loader = build_dataloader(build_dataset(data, "train", imgsz=args.imgsz, augment=True), args.batch, workers=0,
                              shuffle=True, seed=0)
    batches = []
    while len(batches) < args.rounds + 1:
        batches += [b for b in loader if len(b["img"]) == args.batch]
    trainers = {}
    for amp in (False, True):
        for after in (False, True):
            cfg = TrainConfig(data=data, model=args.scale, imgsz=args.imgsz, batch=args.batch, nbs=args.batch,
                              warmup_epochs=0, workers=0, val=False, plots=False, progress=False, verbose=False,
                              project=tmp.name, name=f"amp{int(amp)}after{int(after)}", device="cpu", amp=amp)
            trainers[(amp, after)] = Trainer(cfg)
            trainers[(amp, after)].setup(select_device("cpu"))
    times = {key: [] for key in trainers}
    for k, batch in enumerate(batches[: args.rounds + 1]):
        for (amp, after), trainer in trainers.items():
            for name, switch in CHANGES.items():
                switch(after and name in args.changes)
            t = time.perf_counter()
            trainer.train_step(batch, k)
            if k:
                times[(amp, after)].append(time.perf_counter() - t)
    med = {key: statistics.median(t) for key, t in times.items()}
    print(f"SpikeYOLO-{args.scale}, {args.imgsz} px, batch {args.batch}, {torch.get_num_threads()} CPU threads, "
          f"{args.rounds} alternated rounds; changes: {', '.join(args.changes)}")
    print(f"| {'train step (s, median)':<24} | {'before':>8} | {'after':>8} | {'speed-up':>8} |")
    print(f"|{'-' * 26}|{'-' * 10}|{'-' * 10}|{'-' * 10}|")
    for amp in (False, True):
        b, a = med[(amp, False)], med[(amp, True)]
        print(f"| {'amp' if amp else 'fp32':<24} | {b:>8.3f} | {a:>8.3f} | {b / a:>7.2f}x |")
    print(f"amp after vs fp32 before: {med[(False, False)] / med[(True, True)]:.2f}x")
    tmp.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
