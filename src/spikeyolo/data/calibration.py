"""Calibration images for the int8 deploy form: a few images, letterboxed as the model sees them."""

from __future__ import annotations

import glob
from pathlib import Path

import torch

from .augment import bgr_to_rgb_chw, letterbox
from .labels import list_images, read_image

CALIBRATION_LIMIT = 32  # images read; bias correction needs only the mean spikes per channel


def calibration_images(source: str | Path, imgsz: int, limit: int = CALIBRATION_LIMIT) -> torch.Tensor:
    """Up to ``limit`` images from a folder, a ``.txt`` list, a glob or one file, letterboxed to ``imgsz``:
    ``[N, 3, imgsz, imgsz]`` RGB in [0, 1] (evenly spaced over the files when there are more)."""
    pattern = str(source)
    is_glob = any(c in pattern for c in "*?[")
    if not is_glob and not Path(pattern).exists():
        raise ValueError(f"calibration: {source} does not exist")
    files = sorted(glob.glob(pattern)) if is_glob else list_images([pattern])
    if not files:
        raise ValueError(f"calibration: no images in {source}")
    step = max(1, len(files) // limit)
    images = []
    for f in files[::step][:limit]:
        img = read_image(f)
        if img is None:
            raise ValueError(f"calibration: {f} is missing or is not an image")
        images.append(torch.from_numpy(bgr_to_rgb_chw(letterbox(img, imgsz)[0])))
    return torch.stack(images).float() / 255.0
