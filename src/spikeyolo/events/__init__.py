"""Event cameras, a library: Prophesee ``.dat`` / ``_bbox.npy`` I/O, event representations, the Prophesee
evaluation protocol and an event simulator. See docs/events.md."""

from .io import (
    BBOX_DTYPE,
    EVENT_DTYPE,
    DatFormatError,
    DatReader,
    read_bbox,
    read_dat,
    to_bbox_array,
    write_bbox,
    write_dat,
    xyxy_to_bbox,
)
from .representations import events_to_frames, representation_background, representation_channels

__all__ = [
    "BBOX_DTYPE",
    "EVENT_DTYPE",
    "DatFormatError",
    "DatReader",
    "events_to_frames",
    "read_bbox",
    "read_dat",
    "representation_background",
    "representation_channels",
    "to_bbox_array",
    "write_bbox",
    "write_dat",
    "xyxy_to_bbox",
]
