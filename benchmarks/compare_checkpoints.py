"""Held-out mAP of several trained checkpoints, each against the first, with paired bootstrap intervals.

    python benchmarks/compare_checkpoints.py --data runs/demo/trees_data/data.yaml \
        --weights runs/demo/trees/weights/best.pt runs/demo_amp/trees/weights/best.pt

The held-out images (``--splits``, default val and test) in the dihedral ``--views`` (default 0 and 4: upright
and mirrored, the views a model trained with horizontal flips has seen) form one evaluation set; every checkpoint
runs in its train form; the difference to the first checkpoint gets a 95% interval from 1000 draws of the source
images (:func:`spikeyolo.metrics.per_image.paired_bootstrap`). Used to decide, for example, whether ``--amp``
training keeps the demo's accuracy.
"""

from __future__ import annotations

import argparse
import tempfile

import torch

from precision_eval import evaluate_split, write_dihedral_dataset  # benchmarks/ is on sys.path
from spikeyolo.metrics.per_image import paired_bootstrap
from spikeyolo.models.checkpoint import checkpoint_imgsz, load


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--weights", nargs="+", required=True, help="checkpoints; the first is the reference")
    p.add_argument("--labels", nargs="+", default=None, help="a short name per checkpoint (default: the paths)")
    p.add_argument("--data", required=True, help="the data YAML they were trained on")
    p.add_argument("--splits", nargs="+", default=["val", "test"])
    p.add_argument("--views", nargs="+", type=int, default=[0, 4], choices=range(8))
    p.add_argument("--resamples", type=int, default=1000)
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()
    labels = args.labels or args.weights
    if len(labels) != len(args.weights):
        p.error("--labels needs one name per checkpoint")
    torch.set_num_threads(args.threads)
    imgsz = checkpoint_imgsz(args.weights[0])
    models = {name: load(w).eval() for name, w in zip(labels, args.weights)}
    nc = int(next(iter(models.values())).nc)
    with tempfile.TemporaryDirectory() as tmp:
        data_yaml = write_dihedral_dataset(args.data, args.splits, tmp, imgsz, args.views)
        per_split = {s: evaluate_split(models, data_yaml, s, imgsz, 8) for s in args.splits}
    groups = {m: [g for r in per_split.values() for g in r["groups"][m]] for m in models}
    sizes = {s: (len(r["sources"]), r["images"], r["boxes"]) for s, r in per_split.items()}
    print(f"held-out {args.splits} views {args.views}: (source images, images, boxes) {sizes}; "
          f"{args.resamples} paired bootstrap draws over source images")
    print("| checkpoint | mAP50 | minus first [95% interval] | mAP50:95 | minus first [95% interval] |")
    print("|---|---|---|---|---|")
    for name, r in paired_bootstrap(groups, labels[0], nc, args.resamples).items():
        (a, b), (c, d) = r["d_map50_ci"], r["d_map_ci"]
        print(f"| {name} | {r['map50']:.3f} | {r['d_map50']:+.3f} [{a:+.3f}, {b:+.3f}] | {r['map']:.3f} | "
              f"{r['d_map']:+.3f} [{c:+.3f}, {d:+.3f}] |")


if __name__ == "__main__":
    main()
