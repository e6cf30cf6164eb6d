"""Write a COCO-like YOLO dataset for loader benchmarks: 640x480 JPEGs with 5-20 boxes each.

    python benchmarks/make_coco_like.py /tmp/cocolike --images 512
    python benchmarks/make_coco_like.py /tmp/labelscan --images 118287 --labels-only

Images are smooth colour fields with filled shapes and sensor-like noise, so a JPEG (quality 90) is about the
size of a COCO photo (100-200 kB) and decodes at about the same speed. ``--labels-only`` writes the label
files of a full-size set with 8x8 JPEGs instead (a label-scan benchmark: what is timed is the scan, not decoding).
Writes ``<out>/images/train``, ``<out>/labels/train`` and ``<out>/data.yaml``. The folder must be new or empty
(nothing is overwritten); keep it out of the repository (``/tmp``).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import cv2
import numpy as np

W, H = 640, 480
NC = 80


def photo_like(rng: np.random.Generator, w: int = W, h: int = H) -> np.ndarray:
    """BGR uint8: a blurred low-resolution colour field, 5-20 filled shapes and Gaussian noise."""
    base = rng.integers(0, 256, size=(6, 8, 3), dtype=np.uint8)
    img = cv2.resize(base, (w, h), interpolation=cv2.INTER_CUBIC)
    for _ in range(int(rng.integers(5, 21))):
        colour = tuple(int(c) for c in rng.integers(0, 256, 3))
        cx, cy = int(rng.integers(0, w)), int(rng.integers(0, h))
        if rng.random() < 0.5:
            cv2.circle(img, (cx, cy), int(rng.integers(5, 120)), colour, -1)
        else:
            cv2.rectangle(img, (cx, cy), (cx + int(rng.integers(5, 200)), cy + int(rng.integers(5, 200))), colour, -1)
    noise = rng.normal(0, 12, size=img.shape)
    return np.clip(img + noise, 0, 255).astype(np.uint8)


def yolo_lines(rng: np.random.Generator) -> str:
    """5-20 ``cls cx cy w h`` lines of boxes inside the image (COCO-like sizes: many small, some large)."""
    lines = []
    for _ in range(int(rng.integers(5, 21))):
        bw, bh = np.clip(rng.lognormal(-2.3, 0.9, size=2), 0.01, 0.95)
        cx, cy = rng.uniform(bw / 2, 1 - bw / 2), rng.uniform(bh / 2, 1 - bh / 2)
        lines.append(f"{int(rng.integers(0, NC))} {cx:.6f} {cy:.6f} {bw:.6f} {bh:.6f}")
    return "\n".join(lines) + "\n"


def write(out: Path, n: int, labels_only: bool, seed: int = 0) -> Path:
    """Write the set; returns the data YAML path."""
    if out.exists() and any(out.iterdir()):
        raise FileExistsError(f"{out} is not empty; give a new folder")
    im_dir, lb_dir = out / "images" / "train", out / "labels" / "train"
    im_dir.mkdir(parents=True)
    lb_dir.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    tiny = cv2.imencode(".jpg", photo_like(rng, 8, 8))[1] if labels_only else None
    for i in range(n):
        stem = f"{i:012d}"
        buf = tiny if labels_only else cv2.imencode(".jpg", photo_like(rng), [cv2.IMWRITE_JPEG_QUALITY, 90])[1]
        buf.tofile(str(im_dir / f"{stem}.jpg"))
        (lb_dir / f"{stem}.txt").write_text(yolo_lines(rng))
    yaml = out / "data.yaml"
    names = ", ".join(f"c{k}" for k in range(NC))
    yaml.write_text(f"train: images/train\nval: images/train\nnames: [{names}]\n")
    return yaml


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", type=Path, help="new or empty folder (e.g. /tmp/cocolike)")
    ap.add_argument("--images", type=int, default=512)
    ap.add_argument("--labels-only", action="store_true", help="8x8 images: for timing the label scan")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    try:
        print(write(args.out, args.images, args.labels_only, args.seed))
    except FileExistsError as e:
        sys.exit(f"error: {e}")


if __name__ == "__main__":
    main()
