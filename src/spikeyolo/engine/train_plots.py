"""Pictures a training run writes before its first epoch ends: ``labels.jpg`` (what the training labels look
like) and ``train_batch0.jpg`` ... (the first augmented batches as the network sees them, boxes drawn)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..utils.plots import image_grid, plot_labels
from .validator import batch_images_and_boxes

TRAIN_BATCH_PLOTS = 3  # train_batch0.jpg, train_batch1.jpg, train_batch2.jpg


def dataset_labels(dataset) -> tuple[np.ndarray, np.ndarray]:
    """All training boxes as ``[n, 4]`` (cx, cy, w, h) normalized to their image, and ``[n]`` classes, read
    from ``dataset.ground_truth(i)`` (original pixels, no augmentation)."""
    boxes, cls = [], []
    for i in range(len(dataset)):
        gt = dataset.ground_truth(i)
        h, w = gt["shape"]
        b = np.asarray(gt["boxes_xyxy"], dtype=np.float64).reshape(-1, 4)
        boxes.append(np.stack(((b[:, 0] + b[:, 2]) / 2 / w, (b[:, 1] + b[:, 3]) / 2 / h,
                               (b[:, 2] - b[:, 0]) / w, (b[:, 3] - b[:, 1]) / h), 1))
        cls.append(np.asarray(gt["cls"]).reshape(-1))
    if not boxes:
        return np.zeros((0, 4)), np.zeros(0, int)
    return np.concatenate(boxes), np.concatenate(cls).astype(int)


def plot_dataset_labels(dataset, names, path: str | Path) -> Path:
    """``labels.jpg`` of a dataset with ``ground_truth(i)``."""
    boxes, cls = dataset_labels(dataset)
    return plot_labels(boxes, cls, names, path)


def plot_train_batch(batch: dict, names, path: str | Path) -> Path:
    """A collated training batch as a grid of its (augmented) inputs with their boxes."""
    images, boxes, cls = batch_images_and_boxes(batch)
    image_grid(images, boxes, cls, names=names, path=path)
    return Path(path)
