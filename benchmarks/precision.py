"""Held-out accuracy of the deploy precisions on a trained checkpoint, with intervals that say what is noise.

    OMP_NUM_THREADS=2 python benchmarks/precision.py --weights runs/demo/trees/weights/best.pt \\
        --data runs/demo/trees_data/data.yaml [--splits val test] [--resamples 1000] [--json out.json]

The held-out splits are enlarged to every image in its 8 dihedral views (benchmarks/precision_eval.py), written
to a temporary YOLO dataset. Every form runs the library's Validator on it: train (the reference), deploy fp32,
bf16 and int8 (torch, where ``spikeyolo.forms.deploy.SUPPORTED`` has it; also int8 with its bias correction calibrated
on training images, ``--calibration``), ONNX Runtime fp32 and int8. Printed per split
and pooled: mAP50 and mAP50:95 (COCOeval, as ``spikeyolo val`` reports them), the difference to the train form
with a paired bootstrap 95% interval over source images (all 8 views of a source image drawn together;
``--resamples`` draws with a fixed ``--seed``; AP recomputed per draw from cached per-image matches), and the
spike flip rate of the torch forms: the fraction of I-LIF outputs that differ from the train form's on the same
images (all layers, and the 5 layers that flip most). Deploy fp32 is the noise floor: it computes the same
function as the train form, summed in another order.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import torch

from precision_eval import FORMS, compare_forms
from spikeyolo.data import load_data_config


def ci(lo_hi) -> str:
    return f"[{lo_hi[0]:+.3f}, {lo_hi[1]:+.3f}]"


def print_tables(sets: dict, coco: dict, flips: dict) -> None:
    print("| set | form | mAP50 | Δ mAP50 vs train [95% CI] | mAP50:95 | Δ mAP50:95 [95% CI] | spike flip rate |")
    print("|---|---|---|---|---|---|---|")
    for set_name, rows in sets.items():
        for form, r in rows.items():
            fl = flips.get(set_name, {}).get(form)
            flip = f"{fl['rate']:.2e}" if fl else ("0 (reference)" if form == "train" else "-")
            print(f"| {set_name} | {form} | {r['map50']:.4f} | {r['d_map50']:+.4f} {ci(r['d_map50_ci'])} | "
                  f"{r['map']:.4f} | {r['d_map']:+.4f} {ci(r['d_map_ci'])} | {flip} |")
    print("\nmAP from cached per-image matches vs COCOeval on the whole set (max |difference| over forms):",
          {s: f"{v:.1e}" for s, v in coco.items()})
    print("\nSpike flip rate per I-LIF (pooled over the splits): the 5 worst layers; the first 3 layers that flip at "
          "all, in network order (where the difference enters)")
    for form, f in flips.get("pooled", {}).items():
        first = [(n, r) for n, r in f["layers"].items() if r > 0][:3]
        print(f"- {form}: worst " + ", ".join(f"{n} {r:.2e}" for n, r in f["worst"]) + "; first "
              + ", ".join(f"{n} {r:.2e}" for n, r in first))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--weights", required=True, help="trained checkpoint (.pt)")
    p.add_argument("--data", required=True, help="its data YAML")
    p.add_argument("--splits", nargs="+", default=["val", "test"], help="held-out splits (reported and pooled)")
    p.add_argument("--views", nargs="+", type=int, default=list(range(8)), choices=range(8),
                   help="dihedral views to use: index k + 4 * flip of k quarter turns (default: all 8)")
    p.add_argument("--forms", nargs="+", default=list(FORMS), choices=list(FORMS),
                   help="forms to compare (train is the reference and always runs)")
    p.add_argument("--calibration", default=None, metavar="SOURCE",
                   help="training images for deploy-int8-cal's bias correction (default: the data YAML's first "
                        "train path; 'none': skip that form)")
    p.add_argument("--imgsz", type=int, default=None, help="input size (default: the checkpoint's training size)")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--resamples", type=int, default=1000, help="bootstrap draws")
    p.add_argument("--seed", type=int, default=0, help="bootstrap seed")
    p.add_argument("--threads", type=int, default=torch.get_num_threads())
    p.add_argument("--json", default=None, help="also write the results to this JSON file")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    if args.calibration is None:
        train = load_data_config(args.data).get("train")
        args.calibration = (train[0] if isinstance(train, list) else train) if train else None
    elif args.calibration == "none":
        args.calibration = None
    t0 = time.perf_counter()
    res = compare_forms(args.weights, args.data, args.splits, args.forms, args.views, args.imgsz, args.batch,
                        args.resamples, args.seed, args.calibration)
    wall = time.perf_counter() - t0
    print(f"{args.weights} on {args.data}: {', '.join(f'{s} {v}' for s, v in res['sizes'].items())} "
          f"(x{len(args.views)} dihedral views); forms {', '.join(res['forms'])}; "
          f"{args.resamples} paired bootstrap draws over source images (seed {args.seed}); "
          f"torch {torch.__version__}, {args.threads} threads, {platform.processor() or platform.machine()}; "
          f"wall {wall:.0f} s\n")
    print_tables(res["sets"], res["coco_gap"], res["flips"])
    if args.json:
        Path(args.json).write_text(json.dumps({**res, "wall_s": wall, "args": vars(args)}, indent=1))


if __name__ == "__main__":
    main()
