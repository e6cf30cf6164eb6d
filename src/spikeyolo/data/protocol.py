"""The interface the trainer and validator use on a detection dataset, written down once.

Every dataset of this package (images: :class:`~spikeyolo.data.dataset.DetectionDataset`; event recordings:
``Gen1Dataset`` / ``Gen4Dataset``) satisfies :class:`DetectionItems`; the event datasets also satisfy
:class:`EventDetectionItems`. Both are ``runtime_checkable``, so callers ask ``isinstance`` instead of probing
attributes one by one (a plain ``torch`` dataset or a list of batches is simply not one of them).
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from ..events.representations import EventInput


@runtime_checkable
class DetectionItems(Protocol):
    """Items for training or validation, and each item's labels in its original pixels."""

    names: list[str]  # class names, index = class id
    nc: int
    in_channels: int  # channels of one input frame
    keyed: bool  # build_dataloader sends (index, epoch, mosaic) keys instead of plain indices
    mosaic: bool  # mosaic augmentation is on
    stats: dict  # counts from reading: at least "samples" and "boxes"

    def __len__(self) -> int: ...

    def __getitem__(self, key) -> dict: ...

    def ground_truth(self, i: int) -> dict:
        """``im_file``, ``image_id``, ``shape`` (h, w), ``cls [n]``, ``boxes_xyxy [n, 4]`` of item ``i``."""
        ...

    def set_epoch(self, epoch: int) -> None: ...

    def close_mosaic(self) -> None: ...


@runtime_checkable
class EventDetectionItems(DetectionItems, Protocol):
    """Items cut from event recordings at their label times, scored by the Prophesee protocol as well."""

    events: EventInput  # window, T, representation: the input settings a checkpoint records
    downsample: int  # input resolution = sensor // downsample
    protocol: dict  # Prophesee evaluation filters (min_box_diag, min_box_side, skip_us)

    def prophesee_ground_truth(self, clip_to_sensor: bool = False) -> dict: ...


def is_event_dataset(dataset) -> bool:
    """True for a dataset of event recordings: one that carries an :class:`EventInput` (the one thing a
    checkpoint records from it; a full :class:`EventDetectionItems` always does)."""
    return isinstance(getattr(dataset, "events", None), EventInput)
