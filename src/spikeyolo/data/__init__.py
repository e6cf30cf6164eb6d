"""Datasets (YOLO txt, COCO JSON, Pascal VOC XML, Prophesee Gen1), augmentations and loaders.

Batches follow docs/internals.md; :func:`collate` stacks item dicts into one.
"""

from __future__ import annotations

from .augment import DEFAULT_HYP
from .config import DataConfigError, load_data_config
from .dataset import DataError, DetectionDataset, build_dataset, read_split, single_class_names
from .loader import build_dataloader, collate
from .protocol import DetectionItems, EventDetectionItems, is_event_dataset
from .tiling import crop_region, split_regions, tile_grid, tile_image

__all__ = [
    "DEFAULT_HYP",
    "DataConfigError",
    "DataError",
    "DetectionDataset",
    "DetectionItems",
    "EventDetectionItems",
    "build_dataloader",
    "build_dataset",
    "collate",
    "crop_region",
    "is_event_dataset",
    "load_data_config",
    "read_split",
    "single_class_names",
    "split_regions",
    "tile_grid",
    "tile_image",
]
