"""DataLoader construction: reproducible shuffling, DDP sharding, worker seeding, per-epoch augmentation.

The epoch and the mosaic switch travel inside the sampler's keys ``(index, epoch, mosaic)``: persistent
workers hold their own copy of the dataset, so setting an attribute in the main process would not reach them.
"""

from __future__ import annotations

import os
import random

import cv2
import numpy as np
import torch
from torch.utils.data import DataLoader, DistributedSampler, Sampler

from .protocol import DetectionItems

_STACK = ("img",)
_CAT = ("cls", "bboxes")


def collate(items: list[dict]) -> dict:
    """Item dicts -> batch: ``img`` stacked (``[B, C, H, W]`` or ``[B, T, C, H, W]``), ``cls [N, 1]`` and
    ``bboxes [N, 4]`` concatenated, ``batch_idx [N]`` = image index in the batch, every other key a list."""
    batch = {}
    for k in items[0]:
        values = [it[k] for it in items]
        if k in _STACK:
            batch[k] = torch.stack(values, out=_shared_out(values))
        elif k in _CAT:
            batch[k] = torch.cat(values)
        elif k == "batch_idx":
            batch[k] = torch.cat([v + i for i, v in enumerate(values)])
        else:
            batch[k] = values
    return batch


def _shared_out(values: list[torch.Tensor]) -> torch.Tensor | None:
    """In a loader worker, the stacked batch's tensor allocated in shared memory (as torch's default collate
    does): sending it to the main process then moves a handle, not a copy of every image."""
    if torch.utils.data.get_worker_info() is None:
        return None
    v = values[0]
    storage = v.untyped_storage()._new_shared(len(values) * v.numel() * v.element_size())
    return torch.empty(0, dtype=v.dtype).set_(storage).view(len(values), *v.shape)


def default_workers() -> int:
    """Data-loading worker processes by default: 8, or the number of CPUs when there are fewer (more workers than
    cores only slow loading down, and torch warns about it)."""
    return min(8, os.cpu_count() or 1)


class _ShuffleSampler(Sampler):
    """A permutation (or the identity, or a given ``order``) that depends only on (seed, epoch)."""

    def __init__(self, n: int, shuffle: bool, seed: int, order: list[int] | None = None):
        self.n, self.shuffle, self.seed, self.epoch = n, shuffle, seed, 0
        self.order = order

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.n

    def __iter__(self):
        if not self.shuffle:
            return iter(self.order if self.order is not None else range(self.n))
        g = torch.Generator().manual_seed(self.seed * 100003 + self.epoch)
        return iter(torch.randperm(self.n, generator=g).tolist())


class _KeySampler(Sampler):
    """Wraps an index sampler; yields ``(index, epoch, mosaic)`` read from the dataset when an epoch starts."""

    def __init__(self, dataset, base: Sampler):
        self.dataset, self.base = dataset, base

    def set_epoch(self, epoch: int) -> None:
        self.base.set_epoch(epoch)

    def __len__(self) -> int:
        return len(self.base)

    def __iter__(self):
        epoch, mosaic = int(self.dataset.epoch), bool(self.dataset.mosaic)
        return ((i, epoch, mosaic) for i in self.base)


class EpochDataLoader(DataLoader):
    """A DataLoader with ``set_epoch(epoch)``: reshuffles and changes the augmentation RNG of the next pass."""

    def set_epoch(self, epoch: int) -> None:
        if isinstance(self.dataset, DetectionItems):
            self.dataset.set_epoch(epoch)
        self.sampler.set_epoch(epoch)  # every sampler build_dataloader makes has one


def seed_worker(worker_id: int) -> None:
    """Seed the global RNGs of a worker from torch's per-worker seed; one OpenCV thread per worker."""
    s = torch.initial_seed() % 2**32
    np.random.seed(s)
    random.seed(s)
    cv2.setNumThreads(0)


def build_dataloader(
    dataset,
    batch_size: int,
    workers: int = 0,
    shuffle: bool = True,
    seed: int = 0,
    rank: int = -1,
    world_size: int = 1,
    pin_memory: bool = False,
    drop_last: bool = False,
    order: list[int] | None = None,
) -> EpochDataLoader:
    """Loader over ``dataset`` batching with :func:`spikeyolo.data.collate`.

    ``batch_size`` is per process. With ``world_size > 1`` a DistributedSampler gives rank ``rank`` its shard
    (same seed on every rank). Call ``loader.set_epoch(epoch)`` before each epoch. Datasets with ``keyed = True``
    receive ``(index, epoch, mosaic)`` keys, others plain indices. ``order``: the items in this order, unshuffled
    (rectangular validation batches, ``DetectionDataset.set_rect_batches``; one process).
    """
    if world_size > 1:
        base = DistributedSampler(
            dataset, num_replicas=world_size, rank=max(rank, 0), shuffle=shuffle, seed=seed, drop_last=drop_last
        )
    else:
        base = _ShuffleSampler(len(dataset), shuffle and order is None, seed, order)
    sampler = _KeySampler(dataset, base) if isinstance(dataset, DetectionItems) and dataset.keyed else base
    workers = max(0, int(workers))
    return EpochDataLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        num_workers=workers,
        collate_fn=collate,
        pin_memory=pin_memory,
        drop_last=drop_last,
        worker_init_fn=seed_worker,
        generator=torch.Generator().manual_seed(seed),
        persistent_workers=workers > 0,
    )
