"""Data-loading speed: images/s of the training loader (mosaic on and off), per core, and where the time goes.

    python benchmarks/make_coco_like.py /tmp/cocolike --images 512        # COCO-like 640x480 JPEGs
    python benchmarks/dataload.py --data /tmp/cocolike/data.yaml --imgsz 640 --batch 16
    python benchmarks/dataload.py --data /tmp/cocolike/data.yaml --imgsz 640 --batch 16 \\
        --baseline-src /path/to/old/src --pipeline spikeyolo official --cache none disk ram
    python benchmarks/dataload.py --data /tmp/cocolike/data.yaml --imgsz 640 --profile
    python benchmarks/dataload.py --label-scan /tmp/labelscan/data.yaml       # cold and warm label scan

Without ``--data`` it uses the bundled tree photos (PNG tiles). Each row runs in a fresh process (so caches and
buffers start empty) with ONE thread for OpenCV and torch and ``--workers 0``: the figure is images/s per core
(loading, augmentation and collation, all in that one process). With ``--workers N`` the loader uses N worker
processes and the figure is divided by N. ``--baseline-src`` runs every row also with another source tree
(e.g. a checkout of the code before a change), alternating the two ``--repeats`` times, and prints the median
of each and their ratio: both measured side by side in this run. Worker start-up and the first batch (disk
and RAM caches built, first images decoded) are excluded.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def measure(cfg: dict) -> dict:
    """One row, in this process: images/s of ``cfg['images']`` images after one warm-up batch."""
    import cv2
    import torch

    cv2.setNumThreads(1)
    torch.set_num_threads(1)
    from spikeyolo.data import build_dataloader, build_dataset

    extra = {k: cfg[k] for k in ("pipeline", "cache_disk", "cache_ram") if cfg.get(k)}
    ds = build_dataset(cfg["data"], "train", imgsz=cfg["imgsz"], seed=0, **extra)
    if not cfg["mosaic"]:
        ds.close_mosaic()
    loader = build_dataloader(ds, cfg["batch"], workers=cfg["workers"], shuffle=True, seed=0)
    it, epoch = iter(loader), 0
    next(it)  # warm-up: workers started, caches built, first images decoded
    seen, t0 = 0, time.perf_counter()
    while seen < cfg["images"]:
        try:
            b = next(it)
        except StopIteration:
            epoch += 1
            loader.set_epoch(epoch)
            it = iter(loader)
            continue
        seen += b["img"].shape[0]
    ips = seen / (time.perf_counter() - t0)
    return {"ips": ips, "per_core": ips / max(1, cfg["workers"])}


def run_row(cfg: dict, src: str | None) -> dict:
    """:func:`measure` in a fresh process (with ``src`` first on PYTHONPATH when given)."""
    env = dict(os.environ)
    if src:
        env["PYTHONPATH"] = os.pathsep.join([src, env.get("PYTHONPATH", "")])
    out = subprocess.run([sys.executable, __file__, "--one", json.dumps(cfg)], env=env, capture_output=True,
                         text=True, check=False)
    if out.returncode:
        raise RuntimeError(f"row {cfg} failed:\n{out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def profile(data: str, imgsz: int, n: int) -> None:
    """Per-stage time of the mosaic path, one thread (ms per image)."""
    import cv2
    import numpy as np
    import torch

    cv2.setNumThreads(1)
    torch.set_num_threads(1)
    from spikeyolo.data import augment as A
    from spikeyolo.data import build_dataset, collate
    from spikeyolo.data.labels import read_image

    ds = build_dataset(data, "train", imgsz=imgsz, seed=0)
    files = [s.im_file for s in ds.samples[:n]]
    rng = np.random.default_rng(0)
    t = {}

    def timed(name, fn, *args):
        t0 = time.perf_counter()
        out = fn(*args)
        t[name] = t.get(name, 0.0) + time.perf_counter() - t0
        return out

    items = []
    for i in range(n):
        pieces = []
        for j in (i, *rng.integers(0, len(ds), 3).tolist()):
            im = timed("decode x4", read_image, ds.samples[j].im_file)
            im, g = timed("resize x4", A.resize_long_side, im, imgsz)
            pieces.append((im, A.apply_gain_pad(ds.samples[j].boxes, g, (0, 0)), ds.samples[j].cls))
        img, b, c = timed("mosaic canvas", A.mosaic4, pieces, imgsz, rng, 4)
        img, b, c = timed("affine warp", A.random_affine, img, b, c, (imgsz, imgsz), rng)
        img = timed("hsv", A.hsv_jitter, img, rng, 0.015, 0.7, 0.4)
        img, b = timed("flip", A.hflip, img, b)
        items.append(timed("to tensor (RGB CHW)", lambda im, b=b, c=c: ds._item(im, b, c, ds.samples[0], (1, 1),
                                                                                  (0, 0)), img))
    for k in range(0, n, 16):
        timed("collate", collate, items[k:k + 16])
    total = sum(t.values())
    print(f"where the time goes, mosaic at {imgsz}, one thread, {n} images of {Path(files[0]).parent}")
    print(f"{'stage':<22} {'ms/image':>9} {'share':>6}")
    for k, v in t.items():
        print(f"{k:<22} {v / n * 1e3:>9.2f} {v / total:>6.0%}")
    print(f"{'total':<22} {total / n * 1e3:>9.2f}   -> {n / total:.1f} images/s")


def label_scan(data: str) -> None:
    """A label scan of the train split, each in a fresh process: without the cache (every label file parsed and
    every image read), then with it twice (the first writes it unless it exists; the second reads it)."""
    code = ("import json, resource, sys, time; from spikeyolo.data import read_split, load_data_config; "
            f"t = time.perf_counter(); r, s = read_split(load_data_config({data!r}), 'train', "
            "use_cache=sys.argv[1] == '1'); "
            "print(json.dumps({'s': time.perf_counter() - t, 'n': len(r), 'hit': s['cache_hit'], "
            "'boxes': sum(len(x.cls) for x in r), "
            "'rss_mb': resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))")
    rows = []
    for use in ("0", "1", "1"):
        out = subprocess.run([sys.executable, "-c", code, use], capture_output=True, text=True, check=True)
        rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
    print(f"label scan of {data}: {rows[0]['n']} images, {rows[0]['boxes']} boxes, {os.cpu_count()} CPUs")
    print(f"{'scan':<22} {'cache hit':>9} {'seconds':>8} {'peak RSS MB':>12}")
    for name, r in zip(("no cache (cold)", "with cache, 1st run", "with cache, 2nd run"), rows):
        print(f"{name:<22} {str(r['hit']):>9} {r['s']:>8.2f} {r['rss_mb']:>12.0f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", help="data YAML (default: the bundled tree photos, written to a temporary folder)")
    ap.add_argument("--imgsz", type=int, default=640)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--images", type=int, default=160, help="images timed per row")
    ap.add_argument("--workers", type=int, nargs="+", default=[0])
    ap.add_argument("--pipeline", nargs="+", default=["spikeyolo"], choices=["spikeyolo", "official"])
    ap.add_argument("--cache", nargs="+", default=["none"], choices=["none", "ram", "disk"])
    ap.add_argument("--mosaic", nargs="+", default=["on"], choices=["on", "off"])
    ap.add_argument("--baseline-src", help="another source tree (its src/ folder) to measure side by side")
    ap.add_argument("--repeats", type=int, default=3, help="alternations with --baseline-src (median shown)")
    ap.add_argument("--profile", action="store_true", help="time each stage of the mosaic path instead")
    ap.add_argument("--label-scan", metavar="YAML", help="time a cold and a warm label scan of this data YAML")
    ap.add_argument("--one", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one:
        print(json.dumps(measure(json.loads(args.one))))
        return
    if args.label_scan:
        label_scan(args.label_scan)
        return
    with tempfile.TemporaryDirectory() as tmp:
        data = args.data
        if not data:
            from spikeyolo.demo.trees import prepare_tree_dataset

            data = str(prepare_tree_dataset(os.path.join(tmp, "trees"), tile_size=args.imgsz))
        if args.profile:
            profile(data, args.imgsz, args.images)
            return
        table(args, data)


def table(args, data: str) -> None:
    import platform

    rows = []
    for mosaic in args.mosaic:
        for pipeline in args.pipeline:
            for cache in args.cache:
                for w in args.workers:
                    cfg = {"data": data, "imgsz": args.imgsz, "batch": args.batch, "images": args.images,
                           "workers": w, "mosaic": mosaic == "on", "pipeline": pipeline if pipeline != "spikeyolo"
                           else None, "cache_ram": cache == "ram", "cache_disk": cache == "disk"}
                    new, old = [], []
                    for _ in range(args.repeats if args.baseline_src else 1):
                        if args.baseline_src:
                            base = {k: v for k, v in cfg.items() if k not in ("pipeline", "cache_ram", "cache_disk")}
                            old.append(run_row(base, args.baseline_src)["per_core"])
                        new.append(run_row(cfg, None)["per_core"])
                    rows.append((mosaic, pipeline, cache, w, statistics.median(new),
                                 statistics.median(old) if old else None))
    print(f"data loading, {data}, imgsz {args.imgsz}, batch {args.batch}, {os.cpu_count()} CPUs "
          f"({platform.processor() or platform.machine()}), one thread per process")
    head = f"{'mosaic':>6} {'pipeline':>9} {'cache':>5} {'workers':>7} {'img/s/core':>10}"
    print(head + (f" {'baseline':>9} {'ratio':>6}" if args.baseline_src else ""))
    for mosaic, pipeline, cache, w, ips, base in rows:
        line = f"{mosaic:>6} {pipeline:>9} {cache:>5} {w:>7} {ips:>10.1f}"
        print(line + (f" {base:>9.1f} {ips / base:>5.2f}x" if base else ""))


if __name__ == "__main__":
    main()
