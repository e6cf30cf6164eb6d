"""Data-loading speed: images/s of the mosaic training loader at imgsz 320 on the bundled tree data.

    python benchmarks/dataload.py [--imgsz 320] [--batch 8] [--images 400] [--workers 0 2]

Prints one row per worker count and the ratio to the first row, all measured in this run. Worker start-up
is excluded (one warm-up batch per loader).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

from spikeyolo.data import build_dataloader, build_dataset
from spikeyolo.demo.trees import prepare_tree_dataset


def measure(data_yaml, imgsz: int, batch: int, n_images: int, workers: int, mosaic: bool) -> float:
    ds = build_dataset(data_yaml, "train", imgsz=imgsz, seed=0)
    if not mosaic:
        ds.close_mosaic()
    loader = build_dataloader(ds, batch, workers=workers, shuffle=True, seed=0)
    it, epoch = iter(loader), 0
    next(it)  # warm-up: workers started, first images decoded
    seen, t0 = 0, time.perf_counter()
    while seen < n_images:
        try:
            b = next(it)
        except StopIteration:
            epoch += 1
            loader.set_epoch(epoch)
            it = iter(loader)
            continue
        seen += b["img"].shape[0]
    return seen / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--imgsz", type=int, default=320)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--images", type=int, default=400, help="images timed per row")
    ap.add_argument("--workers", type=int, nargs="+", default=[0, 2])
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        data_yaml = prepare_tree_dataset(os.path.join(tmp, "trees"), tile_size=args.imgsz)
        rows = []
        for mosaic in (True, False):
            for w in args.workers:
                rows.append((mosaic, w, measure(data_yaml, args.imgsz, args.batch, args.images, w, mosaic)))
    print(f"data loading, trees train split, imgsz {args.imgsz}, batch {args.batch}, {os.cpu_count()} CPUs")
    print(f"{'mosaic':>6} {'workers':>7} {'images/s':>9} {'vs first':>8}")
    base = rows[0][2]
    for mosaic, w, ips in rows:
        print(f"{'on' if mosaic else 'off':>6} {w:>7} {ips:>9.1f} {ips / base:>7.2f}x")


if __name__ == "__main__":
    main()
