"""Tiny synthetic YOLO datasets for the engine tests (train/val/predict/cli): bright rectangles on noise."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import yaml

NAMES = ["box", "disc"]


def make_dataset(root: Path, n_train: int = 8, n_val: int = 4, seed: int = 0, sizes=((64, 64), (48, 64), (64, 40))):
    """Write ``root/images/{train,val}``, ``root/labels/...`` and ``root/data.yaml``; returns the YAML path.

    Each image (h, w from ``sizes`` in turn) holds 1-3 objects: class 0 a filled rectangle, class 1 a disc.
    """
    rng = np.random.default_rng(seed)
    for split, n in (("train", n_train), ("val", n_val)):
        (root / "images" / split).mkdir(parents=True, exist_ok=True)
        (root / "labels" / split).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            h, w = sizes[i % len(sizes)]
            img = rng.integers(0, 60, (h, w, 3), dtype=np.uint8)
            lines = []
            for _ in range(int(rng.integers(1, 4))):
                bw, bh = int(rng.integers(8, w // 2)), int(rng.integers(8, h // 2))
                x0, y0 = int(rng.integers(0, w - bw)), int(rng.integers(0, h - bh))
                c = int(rng.integers(0, 2))
                col = tuple(int(v) for v in rng.integers(150, 256, 3))
                if c == 0:
                    cv2.rectangle(img, (x0, y0), (x0 + bw - 1, y0 + bh - 1), col, -1)
                else:
                    cv2.ellipse(img, (x0 + bw // 2, y0 + bh // 2), (bw // 2, bh // 2), 0, 0, 360, col, -1)
                lines.append(f"{c} {(x0 + bw / 2) / w:.6f} {(y0 + bh / 2) / h:.6f} {bw / w:.6f} {bh / h:.6f}")
            cv2.imwrite(str(root / "images" / split / f"{split}{i:03d}.png"), img)
            (root / "labels" / split / f"{split}{i:03d}.txt").write_text("\n".join(lines) + "\n")
    data = root / "data.yaml"
    data.write_text(yaml.safe_dump({"path": str(root), "train": "images/train", "val": "images/val", "names": NAMES}))
    return data


def read_labels(root: Path, split: str = "val") -> list[dict]:
    """Ground truth straight from the label files: per image its stem, (h, w) and xyxy pixel boxes + classes."""
    out = []
    for img_path in sorted((root / "images" / split).glob("*.png")):
        h, w = cv2.imread(str(img_path)).shape[:2]
        rows = np.loadtxt(root / "labels" / split / f"{img_path.stem}.txt", ndmin=2)
        cls, cx, cy, bw, bh = rows.T
        boxes = np.stack([(cx - bw / 2) * w, (cy - bh / 2) * h, (cx + bw / 2) * w, (cy + bh / 2) * h], 1)
        out.append({"stem": img_path.stem, "shape": (h, w), "boxes": boxes, "cls": cls.astype(int)})
    return out
