"""Datasets (YOLO txt, COCO JSON, Pascal VOC XML), augmentations, loaders and the bundled tree demo data.

Batches follow docs/internals.md; :func:`collate` stacks item dicts into one.
"""

from __future__ import annotations

import torch

from .augment import DEFAULT_HYP
from .config import DataConfigError, load_data_config
from .dataset import DataError, DetectionDataset, build_dataset, read_split, single_class_names
from .loader import build_dataloader
from .tiling import crop_region, split_regions, tile_grid, tile_image

_STACK = ("img",)
_CAT = ("cls", "bboxes")


def collate(items: list[dict]) -> dict:
    """Item dicts -> batch: ``img`` stacked (``[B, C, H, W]`` or ``[B, T, C, H, W]``), ``cls [N, 1]`` and
    ``bboxes [N, 4]`` concatenated, ``batch_idx [N]`` = image index in the batch, every other key a list."""
    batch = {}
    for k in items[0]:
        values = [it[k] for it in items]
        if k in _STACK:
            batch[k] = torch.stack(values)
        elif k in _CAT:
            batch[k] = torch.cat(values)
        elif k == "batch_idx":
            batch[k] = torch.cat([v + i for i, v in enumerate(values)])
        else:
            batch[k] = values
    return batch


__all__ = [
    "DEFAULT_HYP",
    "DataConfigError",
    "DataError",
    "DetectionDataset",
    "build_dataloader",
    "build_dataset",
    "collate",
    "crop_region",
    "load_data_config",
    "read_split",
    "single_class_names",
    "split_regions",
    "tile_grid",
    "tile_image",
]
