"""Held-out accuracy of the deploy precisions on a trained checkpoint, with intervals that say what is noise.

    OMP_NUM_THREADS=2 python benchmarks/precision.py --weights runs/demo/trees/weights/best.pt \\
        --data runs/demo/trees_data/data.yaml [--splits val test] [--resamples 1000] [--json out.json]

The held-out splits are enlarged to every image in its 8 dihedral views (benchmarks/precision_eval.py), written
to a temporary YOLO dataset. Every form runs the library's Validator on it: train (the reference), deploy fp32,
bf16 and int8 (torch, where ``spikeyolo.deploy.SUPPORTED`` has it), ONNX Runtime fp32 and int8. Printed per split
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
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from precision_eval import (
    average_precision,
    group_by_source,
    paired_bootstrap,
    score_images,
    source_of,
    spike_flip_counts,
    write_dihedral_dataset,
)
from spikeyolo.checkpoint import checkpoint_imgsz, load
from spikeyolo.data import build_dataloader, build_dataset, load_data_config
from spikeyolo.deploy import SUPPORTED, deploy
from spikeyolo.engine.validator import Validator

FORMS = {"train": None, "deploy-fp32": ("fp32", "torch"), "deploy-bf16": ("bf16", "torch"),
         "deploy-int8": ("int8", "torch"), "ort-fp32": ("fp32", "onnxruntime"), "ort-int8": ("int8", "onnxruntime")}


def build_forms(model, names, imgsz: int) -> dict:
    """The forms to compare, those this spikeyolo supports (int8 on torch only where SUPPORTED lists it)."""
    forms = {}
    for name in names:
        spec = FORMS[name]
        if spec is None:
            forms[name] = model
        elif spec in SUPPORTED:
            kwargs = {"imgsz": imgsz} if spec[1] == "onnxruntime" else {}
            forms[name] = deploy(model, *spec, **kwargs)
    return forms


def evaluate_split(forms: dict, data_yaml: Path, split: str, imgsz: int, batch: int) -> dict:
    """Per form on one split: COCOeval's metrics, per-image scores grouped by source image, and spike flip
    counts against the train form (torch forms)."""
    cfg = load_data_config(data_yaml)
    ds = build_dataset(cfg, split, imgsz=imgsz, augment=False, progress=False)
    loader = build_dataloader(ds, batch_size=batch, workers=0, shuffle=False)
    gts = {}
    for i in range(len(ds)):
        g = ds.ground_truth(i)
        gts[g["im_file"]] = (g["boxes_xyxy"], g["cls"])
    sources = sorted({source_of(f) for f in gts})
    result = {"sources": sources, "images": len(gts), "boxes": int(sum(len(c) for _, c in gts.values())),
              "coco": {}, "groups": {}, "flips": {}}
    for name, model in forms.items():
        validator = Validator(loader, names=cfg["names"], compute_loss=False, progress=False)
        metrics = validator(model)
        result["coco"][name] = {"map50": metrics["map50"], "map": metrics["map"]}
        result["groups"][name] = group_by_source(score_images(validator.predictions, gts), sources)
        if name.startswith("deploy-"):  # torch forms: hooks on their I-LIFs
            result["flips"][name] = spike_flip_counts(forms["train"], model, loader)
    return result


def flip_summary(counts: dict[str, tuple[int, int]], worst: int = 5) -> dict:
    """Overall flip rate and the ``worst`` layers by rate."""
    d, t = sum(c[0] for c in counts.values()), sum(c[1] for c in counts.values())
    layers = sorted(((n, c[0] / c[1]) for n, c in counts.items()), key=lambda x: -x[1])[:worst]
    return {"rate": d / max(t, 1), "flipped": d, "outputs": t, "worst": layers,
            "layers": {n: c[0] / c[1] for n, c in counts.items()}}  # network order


def merge_counts(*counts: dict) -> dict:
    out: dict[str, tuple[int, int]] = {}
    for c in counts:
        for n, (d, t) in c.items():
            a = out.get(n, (0, 0))
            out[n] = (a[0] + d, a[1] + t)
    return out


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
    print("\nWorst 5 layers by spike flip rate (pooled over the splits):")
    for form, f in flips.get("pooled", {}).items():
        print(f"- {form}: " + ", ".join(f"{n} {r:.2e}" for n, r in f["worst"]))


def run(args) -> dict:
    torch.set_num_threads(args.threads)
    model = load(args.weights).eval()
    imgsz = args.imgsz or checkpoint_imgsz(args.weights)
    nc = int(model.nc)
    forms = build_forms(model, args.forms, imgsz)
    with tempfile.TemporaryDirectory() as tmp:
        data_yaml = write_dihedral_dataset(args.data, args.splits, tmp, imgsz, args.views)
        per_split = {s: evaluate_split(forms, data_yaml, s, imgsz, args.batch) for s in args.splits}
    sets, coco_gap, flips = {}, {}, {}
    pooled_groups = {f: [g for r in per_split.values() for g in r["groups"][f]] for f in forms}
    for set_name, groups in [*((s, r["groups"]) for s, r in per_split.items()), ("pooled", pooled_groups)]:
        sets[set_name] = paired_bootstrap(groups, "train", nc, args.resamples, args.seed)
    for s, r in per_split.items():  # the cached-match AP must be COCOeval's on the whole set
        coco_gap[s] = max(abs(np.array(average_precision([x for g in r["groups"][f] for x in g], nc))
                              - (r["coco"][f]["map50"], r["coco"][f]["map"])).max() for f in forms)
        flips[s] = {f: flip_summary(c) for f, c in r["flips"].items()}
    flips["pooled"] = {f: flip_summary(merge_counts(*(r["flips"][f] for r in per_split.values())))
                       for f in next(iter(per_split.values()))["flips"]}
    sizes = {s: {"source_images": len(r["sources"]), "images": r["images"], "boxes": r["boxes"]}
             for s, r in per_split.items()}
    return {"sets": sets, "coco_gap": coco_gap, "flips": flips, "sizes": sizes, "forms": list(forms)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--weights", required=True, help="trained checkpoint (.pt)")
    p.add_argument("--data", required=True, help="its data YAML")
    p.add_argument("--splits", nargs="+", default=["val", "test"], help="held-out splits (reported and pooled)")
    p.add_argument("--views", nargs="+", type=int, default=list(range(8)), choices=range(8),
                   help="dihedral views to use: index k + 4 * flip of k quarter turns (default: all 8)")
    p.add_argument("--forms", nargs="+", default=list(FORMS), choices=list(FORMS),
                   help="forms to compare (train is the reference and always runs)")
    p.add_argument("--imgsz", type=int, default=None, help="input size (default: the checkpoint's training size)")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--resamples", type=int, default=1000, help="bootstrap draws")
    p.add_argument("--seed", type=int, default=0, help="bootstrap seed")
    p.add_argument("--threads", type=int, default=torch.get_num_threads())
    p.add_argument("--json", default=None, help="also write the results to this JSON file")
    args = p.parse_args()
    args.forms = ["train"] + [f for f in args.forms if f != "train"]
    t0 = time.perf_counter()
    res = run(args)
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
