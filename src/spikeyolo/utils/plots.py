"""Plots and drawings: training curves, PR curves, boxes drawn on images, image grids.

matplotlib runs with the Agg backend (files only, no display). Images are numpy ``uint8 [H, W, 3]`` BGR
(OpenCV order).
"""

from __future__ import annotations

import csv
import math
from pathlib import Path

import cv2
import numpy as np


def pyplot():
    """matplotlib's pyplot on the file-only Agg backend."""
    import matplotlib  # heavy: loaded only when a plot is drawn

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt  # heavy: loaded only when a plot is drawn

    return plt


_PALETTE = [
    (56, 56, 255), (151, 157, 255), (31, 112, 255), (29, 178, 255), (49, 210, 207), (10, 249, 72),
    (23, 204, 146), (134, 219, 61), (52, 147, 26), (187, 212, 0), (168, 153, 44), (255, 194, 0),
    (147, 69, 52), (255, 115, 100), (236, 24, 0), (255, 56, 132), (133, 0, 82), (255, 56, 203),
]  # fmt: skip


def color(i: int) -> tuple[int, int, int]:
    """A distinct BGR colour per class id."""
    return _PALETTE[int(i) % len(_PALETTE)]


def class_name(names: dict | list | None, c: int) -> str:
    """``names[c]`` for a dict or list of names, else the id as text."""
    if isinstance(names, dict):
        return str(names.get(c, c))
    if names is not None and 0 <= c < len(names):
        return str(names[c])
    return str(c)


def draw_boxes(
    img: np.ndarray,
    boxes,
    classes,
    scores=None,
    names: dict | list | None = None,
    thickness: int | None = None,
) -> np.ndarray:
    """Draw ``boxes`` (``[n, 4]`` xyxy pixels) with their class name (and score) on a copy of ``img``."""
    out = np.ascontiguousarray(img).copy()
    h, w = out.shape[:2]
    lw = thickness or max(1, round((h + w) / 2 * 0.003))
    font = max(0.3, lw / 3)
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    classes = np.asarray(classes).reshape(-1)
    for k, (b, c) in enumerate(zip(boxes, classes)):
        c = int(c)
        x1, y1, x2, y2 = (int(round(v)) for v in b)
        col = color(c)
        cv2.rectangle(out, (x1, y1), (x2, y2), col, lw, cv2.LINE_AA)
        label = class_name(names, c)
        if scores is not None:
            label = f"{label} {float(scores[k]):.2f}"
        (tw, th), base = cv2.getTextSize(label, cv2.FONT_HERSHEY_SIMPLEX, font, max(lw - 1, 1))
        top = y1 - th - base - 2 >= 0
        y_text = y1 - base - 1 if top else y1 + th + 1
        y_box = (y1 - th - base - 2, y1) if top else (y1, y1 + th + base + 2)
        cv2.rectangle(out, (x1, y_box[0]), (x1 + tw + 2, y_box[1]), col, -1, cv2.LINE_AA)
        cv2.putText(out, label, (x1 + 1, y_text), cv2.FONT_HERSHEY_SIMPLEX, font, (255, 255, 255),
                    max(lw - 1, 1), cv2.LINE_AA)
    return out


def image_grid(
    images: list[np.ndarray],
    boxes: list,
    classes: list,
    scores: list | None = None,
    names=None,
    path: str | Path | None = None,
    max_images: int = 16,
    tile: int = 384,
) -> np.ndarray:
    """Up to ``max_images`` images (BGR uint8, boxes in their pixels) drawn and tiled into a square grid."""
    n = min(len(images), max_images)
    cols = max(1, math.ceil(math.sqrt(n)))
    rows = max(1, math.ceil(n / cols))
    grid = np.full((rows * tile, cols * tile, 3), 114, np.uint8)
    for i in range(n):
        img = images[i]
        s = tile / max(img.shape[:2])
        small = cv2.resize(img, (max(1, round(img.shape[1] * s)), max(1, round(img.shape[0] * s))))
        b = np.asarray(boxes[i], dtype=np.float64).reshape(-1, 4) * s
        drawn = draw_boxes(small, b, classes[i], None if scores is None else scores[i], names, thickness=1)
        r, c = divmod(i, cols)
        grid[r * tile : r * tile + drawn.shape[0], c * tile : c * tile + drawn.shape[1]] = drawn
    if path is not None:
        cv2.imwrite(str(path), grid)
    return grid


def read_results_csv(path: str | Path) -> dict[str, list[float]]:
    """results.csv -> {column: values} (empty cells become NaN)."""
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    cols: dict[str, list[float]] = {}
    for row in rows:
        for k, v in row.items():
            k = k.strip()
            try:
                cols.setdefault(k, []).append(float(v))
            except (TypeError, ValueError):
                cols.setdefault(k, []).append(float("nan"))
    return cols


def plot_results(csv_path: str | Path, out: str | Path | None = None) -> Path:
    """results.csv -> results.png: one panel per loss and metric column against the epoch."""
    plt = pyplot()
    csv_path = Path(csv_path)
    out = Path(out) if out else csv_path.with_name("results.png")
    data = read_results_csv(csv_path)
    keys = [k for k in data if k != "epoch" and not k.startswith("lr/") and not all(map(math.isnan, data[k]))]
    epochs = data.get("epoch", list(range(1, len(next(iter(data.values()), [])) + 1)))
    cols = 5
    rows = max(1, math.ceil(len(keys) / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 2.8 * rows), squeeze=False)
    for ax, k in zip(axes.flat, keys):
        xy = np.array([(e, v) for e, v in zip(epochs, data[k]) if math.isfinite(v)])  # val may skip epochs
        ax.plot(xy[:, 0], xy[:, 1], marker=".", linewidth=1.5)
        ax.set_title(k, fontsize=9)
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(keys) :]:
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return out


def plot_pr_curve(
    recall: np.ndarray, precision: np.ndarray, ap50: np.ndarray, names, out: str | Path
) -> Path:
    """PR curves at IoU 0.5: ``recall [R]`` grid, ``precision [nc, R]``, ``ap50 [nc]``; mean in bold."""
    plt = pyplot()
    precision = np.atleast_2d(np.asarray(precision, dtype=float))
    ap50 = np.asarray(ap50, dtype=float).reshape(-1)
    names = list(names.values()) if isinstance(names, dict) else list(names)
    fig, ax = plt.subplots(figsize=(6, 5))
    if len(precision) <= 20:
        for i, p in enumerate(precision):
            ax.plot(recall, p, linewidth=1, label=f"{class_name(names, i)} {ap50[i]:.3f}")
    mean_label = f"all classes {np.nanmean(ap50):.3f} mAP@0.5"
    ax.plot(recall, np.nanmean(precision, 0), linewidth=3, color="blue", label=mean_label)
    ax.set_xlabel("Recall")
    ax.set_ylabel("Precision")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.legend(loc="lower left", fontsize=8)
    ax.set_title("Precision-Recall curve")
    fig.tight_layout()
    out = Path(out)
    fig.savefig(out, dpi=150)
    plt.close(fig)
    return out


def _save(fig, out) -> Path:
    plt = pyplot()
    out = Path(out)
    fig.tight_layout()
    fig.savefig(out, dpi=150)
    plt.close(fig)
    return out


def _name_list(names, n: int) -> list[str]:
    return [class_name(names, i) for i in range(n)]


def normalize_columns(matrix: np.ndarray) -> np.ndarray:
    """Each column divided by its sum (the fraction of each true class that went where); empty columns 0."""
    m = np.asarray(matrix, dtype=np.float64)
    return m / np.maximum(m.sum(0, keepdims=True), 1e-12)


def plot_confusion_matrix(matrix: np.ndarray, names, out: str | Path, normalize: bool = False) -> Path:
    """The ``[nc + 1, nc + 1]`` confusion matrix (rows predicted, columns true, last = background) as a heat map;
    ``normalize`` divides each column by its sum. Cells are annotated when there are at most 30 classes."""
    plt = pyplot()
    m = normalize_columns(matrix) if normalize else np.asarray(matrix, dtype=np.float64)
    nc = len(m) - 1
    labels = [*_name_list(names, nc), "background"]
    size = min(max(4.5, 0.45 * len(labels) + 2.5), 14)
    fig, ax = plt.subplots(figsize=(size, size * 0.85))
    im = ax.imshow(m, cmap="Blues", vmin=0, vmax=1 if normalize else max(m.max(), 1))
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    if len(labels) <= 31:
        ax.set_xticks(range(len(labels)), labels, rotation=90, fontsize=8)
        ax.set_yticks(range(len(labels)), labels, fontsize=8)
        for (i, j), v in np.ndenumerate(m):
            if v:
                text = f"{v:.2f}" if normalize else f"{int(v)}"
                ax.text(j, i, text, ha="center", va="center", fontsize=7,
                        color="white" if v > 0.5 * (1 if normalize else m.max()) else "black")
    ax.set_xlabel("True")
    ax.set_ylabel("Predicted")
    ax.set_title("Confusion matrix" + (" (normalized by true class)" if normalize else " (counts)"))
    return _save(fig, out)


def plot_metric_curve(grid: np.ndarray, values: np.ndarray, names, out: str | Path, ylabel: str,
                      best: tuple[float, float] | None = None) -> Path:
    """One metric (P, R or F1) per class against the confidence threshold (thin lines, up to 20 classes) and the
    class mean (bold); ``best = (confidence, value)`` is marked and written in the legend."""
    plt = pyplot()
    values = np.atleast_2d(np.asarray(values, dtype=float))
    fig, ax = plt.subplots(figsize=(6, 5))
    if len(values) <= 20:
        for i, v in enumerate(values):
            ax.plot(grid, v, linewidth=1, label=class_name(names, i))
    mean = np.nanmean(values, 0)
    label = "all classes" + (f" {best[1]:.2f} at {best[0]:.3f}" if best is not None else "")
    ax.plot(grid, mean, linewidth=3, color="blue", label=label)
    if best is not None:
        ax.plot([best[0]], [best[1]], "o", color="red")
    ax.set_xlabel("Confidence")
    ax.set_ylabel(ylabel)
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.01)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower left" if ylabel != "Precision" else "lower right", fontsize=8)
    ax.set_title(f"{ylabel}-Confidence curve")
    return _save(fig, out)


def plot_labels(boxes_cxcywh: np.ndarray, cls: np.ndarray, names, out: str | Path) -> Path:
    """``labels.jpg``: instances per class, box centres (x, y) and box sizes (w, h) as 2-D histograms, and up to
    500 box outlines centred on one point. Boxes are ``[n, 4]`` (cx, cy, w, h) normalized to their image."""
    plt = pyplot()
    b = np.asarray(boxes_cxcywh, dtype=np.float64).reshape(-1, 4)
    c = np.asarray(cls).reshape(-1).astype(int)
    nc = max(len(names) if names is not None else 0, int(c.max()) + 1 if len(c) else 1)
    fig, axes = plt.subplots(2, 2, figsize=(9, 8))
    counts = np.bincount(c, minlength=nc)
    ax = axes[0, 0]
    ax.bar(range(nc), counts, color=[np.array(color(i)[::-1]) / 255 for i in range(nc)])
    ax.set_ylabel("instances")
    ax.set_title(f"{len(c)} boxes in {nc} class(es)")
    if nc <= 30:
        ax.set_xticks(range(nc), _name_list(names, nc), rotation=90 if nc > 6 else 0, fontsize=8)
    ax = axes[0, 1]
    rng = np.random.default_rng(0)
    for k in rng.permutation(len(b))[:500]:
        _, _, w, h = b[k]
        ax.add_patch(plt.Rectangle((0.5 - w / 2, 0.5 - h / 2), w, h, fill=False, linewidth=0.5,
                                   edgecolor=np.array(color(c[k])[::-1]) / 255, alpha=0.6))
    ax.set_xlim(0, 1)
    ax.set_ylim(1, 0)
    ax.set_aspect("equal")
    ax.set_title("box shapes (up to 500)")
    for ax, (i, j), (xl, yl) in ((axes[1, 0], (0, 1), ("x", "y")), (axes[1, 1], (2, 3), ("width", "height"))):
        ax.hist2d(b[:, i], b[:, j], bins=40, range=[[0, 1], [0, 1]], cmap="Blues")
        ax.set_xlabel(xl)
        ax.set_ylabel(yl)
        ax.set_title("box centres" if xl == "x" else "box sizes")
        if xl == "x":
            ax.set_ylim(1, 0)  # image orientation: y grows downwards
    return _save(fig, out)
