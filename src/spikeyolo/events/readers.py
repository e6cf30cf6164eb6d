"""Event recordings of any supported camera format behind one reader interface.

- ``.dat`` (Prophesee Gen1/Gen4 ``*_td.dat``): our memory-mapped :class:`~spikeyolo.events.io.DatReader`, the
  fast path (binary search, any window in any order).
- ``.raw`` (Metavision EVT 2.0 / EVT 3.0), ``.aedat4`` (iniVation), ``.es`` (Event Stream): decoded by the
  optional `faery <https://github.com/aestream/faery>`_ library (``pip install "spikeyolo[events]"``; Rust,
  numpy only, LGPL-3.0), read as a stream by :class:`StreamedRecording`.

Every reader has ``path``, ``height``, ``width`` (the sensor size, from the file), ``t_first``, ``t_last``
(microseconds; None when empty) and ``read(t_start, t_end)`` -> events in ``[t_start, t_end)`` as
:data:`~spikeyolo.events.io.EVENT_DTYPE`.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from .io import EVENT_DTYPE, DatReader

DAT_EXTS = (".dat",)
STREAMED_EXTS = (".raw", ".aedat4", ".es")
RECORDING_EXTS = DAT_EXTS + STREAMED_EXTS
INSTALL_HINT = 'pip install "spikeyolo[events]"  (installs faery)'


def _faery():
    """The optional faery module, or an ImportError saying how to install it."""
    try:
        import faery  # optional dependency (the [events] extra): heavy native extension
    except ImportError as e:
        raise ImportError(f".raw / .aedat4 / .es recordings are read with faery, which is not installed: "
                          f"{INSTALL_HINT} ({e})") from None
    return faery


def from_faery(events: np.ndarray) -> np.ndarray:
    """A faery event array (``t`` uint64, ``x``, ``y`` uint16, ``on`` bool) as :data:`EVENT_DTYPE`."""
    out = np.empty(len(events), EVENT_DTYPE)
    out["t"] = events["t"]
    out["x"] = events["x"]
    out["y"] = events["y"]
    out["p"] = events["on"]
    return out


class StreamedRecording:
    """A recording decoded in order, chunk by chunk, by faery; memory stays bounded by one window plus one
    decoded chunk. ``read(t_start, t_end)`` is meant for windows in time order (sliding windows); a window
    that starts before the previous one restarts decoding from the beginning of the file (correct, slower).

    ``peak_buffered`` is the largest number of events held at once (for checking that memory stays bounded).
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        if not self.path.is_file():
            raise FileNotFoundError(f"recording not found: {self.path}")
        faery = _faery()
        try:
            self._decoder = faery.events_stream_from_file(self.path)
            self.width, self.height = (int(v) for v in self._decoder.dimensions())
        except Exception as e:  # faery raises plain Exceptions for unreadable files
            raise ValueError(f"{self.path}: cannot be read as an event recording ({e})") from None
        self._time_range: tuple[int, int] | None = None
        self.peak_buffered = 0
        self._restart()

    def __repr__(self) -> str:
        return f"StreamedRecording({str(self.path)!r}, {self.width}x{self.height})"

    def _restart(self) -> None:
        self._chunks = iter(self._decoder)
        self._buf = np.zeros(0, EVENT_DTYPE)
        self._floor = -1  # events before this time were dropped from the buffer
        self._exhausted = False

    def _span(self) -> tuple[int, int] | None:
        """(first, last) timestamps; one decoding pass over the file the first time (cached by faery)."""
        if self._time_range is None:
            start, end = self._decoder.time_range()
            first, last = int(start.to_microseconds()), int(end.to_microseconds()) - 1
            empty = not next((True for chunk in iter(self._decoder) if len(chunk)), False)
            self._time_range = (0, -1) if empty else (first, last)
        return None if self._time_range[1] < self._time_range[0] else self._time_range

    @property
    def t_first(self) -> int | None:
        span = self._span()
        return None if span is None else span[0]

    @property
    def t_last(self) -> int | None:
        span = self._span()
        return None if span is None else span[1]

    def read(self, t_start: int | None = None, t_end: int | None = None) -> np.ndarray:
        """Events with ``t_start <= t < t_end`` (either bound optional; no ``t_end`` decodes to the end)."""
        t0 = -1 if t_start is None else int(t_start)
        if t0 < self._floor:
            self._restart()
        self._buf = self._buf[self._buf["t"] >= t0]
        self._floor = t0
        while not self._exhausted and (t_end is None or not len(self._buf) or self._buf["t"][-1] < t_end):
            chunk = next(self._chunks, None)
            if chunk is None:
                self._exhausted = True
                break
            ev = from_faery(chunk)
            self._buf = np.concatenate((self._buf, ev[ev["t"] >= t0]))
            self.peak_buffered = max(self.peak_buffered, len(self._buf))
        if t_end is None:
            return self._buf.copy()
        return self._buf[: np.searchsorted(self._buf["t"], int(t_end), side="left")].copy()


def open_recording(path: str | os.PathLike):
    """A reader for an event recording, chosen by suffix: :class:`DatReader` for ``.dat`` (memory-mapped),
    :class:`StreamedRecording` (faery) for ``.raw`` (EVT 2.0 / 3.0), ``.aedat4`` and ``.es``."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix in DAT_EXTS:
        return DatReader(path)
    if suffix in STREAMED_EXTS:
        return StreamedRecording(path)
    raise ValueError(f"{path}: not an event recording (supported: {', '.join(RECORDING_EXTS)})")


def write_recording(path: str | os.PathLike, events, width: int, height: int, version: str | None = None) -> Path:
    """Write events (:data:`EVENT_DTYPE` or any array with ``t``, ``x``, ``y``, ``p``) with faery's own encoder:
    ``.raw`` (``version`` ``"evt2"`` or ``"evt3"``, default evt3), ``.aedat4``, ``.es`` or ``.dat``. For tests
    and for converting simulated recordings to camera formats."""
    faery = _faery()
    events = np.asarray(events)
    out = np.zeros(len(events), faery.EVENTS_DTYPE)
    out["t"], out["x"], out["y"], out["on"] = events["t"], events["x"], events["y"], events["p"] > 0
    path = Path(path)
    faery.events_stream_from_array(out, (int(width), int(height))).to_file(path, version=version)
    return path
