"""Prophesee Gen1 files: ``*_td.dat`` events and ``*_bbox.npy`` boxes, read and written (re-implemented from
the published format description; no code from the Apache-2.0 Prophesee toolbox is copied).

``*_td.dat`` layout::

    % Date 2026-11-27 06:00:00\\n      text header lines, each starting with '%' and ending with '\\n'
    % Height 240\\n
    % Width 304\\n
    <1 byte event type> <1 byte event size = 8>
    records, little endian, 8 bytes each:
        uint32 timestamp (microseconds)
        uint32 word: x = bits 0-13, y = bits 14-27, p = bits 28-31

Reading is memory-mapped; a time window is found by binary search on the timestamp column, so only the pages
of the window (plus log2(n) probes) are touched. Timestamps are uint32 microseconds; a backwards jump of more
than 2**31 is taken as a uint32 wrap-around (2**32 is added from there on). Real Gen1 recordings are not sorted
everywhere: an event earlier than one before it gets the time of the latest event before it (clamped to
non-decreasing, as RVT does), counted in one warning; a file with more than ``MAX_OUT_OF_ORDER`` (1%) of its
events out of order is rejected as not being in time order.

The header's ``Height`` and ``Width`` are positive integers of at most 16384 (x and y are 14-bit fields) with
a product of at most ``MAX_PIXELS``: frames are allocated from them, so a corrupt header must not ask for
gigabytes. Every format problem raises :class:`DatFormatError` naming the file (and header line).
"""

from __future__ import annotations

import datetime as _dt
import os
import warnings
from pathlib import Path

import numpy as np

from ..utils.errors import FileFormatError

EVENT_DTYPE = np.dtype([("t", "<i8"), ("x", "<u2"), ("y", "<u2"), ("p", "u1")])
"""Decoded events: ``t`` int64 microseconds (after wrap-around), ``x``, ``y`` uint16, ``p`` uint8 (0 OFF, 1 ON)."""

BBOX_DTYPE = np.dtype([
    ("t", "<u8"), ("x", "<f4"), ("y", "<f4"), ("w", "<f4"), ("h", "<f4"),
    ("class_id", "u1"), ("confidence", "<f4"), ("track_id", "<u4"),
])
"""Boxes as in the Prophesee toolbox: ``t`` microseconds, ``x, y`` top-left, ``w, h`` pixels (sensor)."""

RAW_DTYPE = np.dtype([("t", "<u4"), ("w", "<u4")])
EVENT_SIZE = 8
TD_EVENT_TYPE = 0
_WRAP = 1 << 32
_HALF = 1 << 31
_SCAN_CHUNK = 1 << 22  # events per chunk when scanning timestamps (32 MiB of records)
MAX_OUT_OF_ORDER = 0.01  # fraction of events earlier than a preceding one above which a file is rejected
MAX_SIDE = 1 << 14  # x and y are 14-bit fields
MAX_PIXELS = 1 << 24  # 16.8 Mpixel: above every Prophesee sensor (Gen4: 1280x720); bounds frame allocations


class DatFormatError(FileFormatError):
    """A ``.dat`` file that does not follow the format (the message names the file)."""


def _parse_header(path: Path) -> tuple[list[str], int, int]:
    """``(header lines without '% ', event type, data offset)``; raises :class:`DatFormatError`."""
    lines = []
    with open(path, "rb") as f:
        while True:
            c = f.read(1)
            if c != b"%":
                if c:
                    f.seek(-1, os.SEEK_CUR)
                break
            line = f.readline()
            if not line.endswith(b"\n"):
                raise DatFormatError(f"{path}: header line {len(lines) + 1} does not end with a newline")
            lines.append(line[:-1].decode("latin-1").strip())
        if not lines:
            raise DatFormatError(f"{path}: missing header (a .dat file starts with '%' text lines)")
        ts = f.read(2)
        if len(ts) < 2:
            raise DatFormatError(f"{path}: file ends after the header (no event type / size bytes)")
        ev_type, ev_size = ts[0], ts[1]
        if ev_size != EVENT_SIZE:
            raise DatFormatError(f"{path}: event size is {ev_size} bytes, expected {EVENT_SIZE} (CD/TD events)")
        return lines, ev_type, f.tell()


def _header_dict(lines: list[str]) -> dict[str, tuple[str, int]]:
    """``{key: (value, header line number)}`` of the ``% Key value`` lines."""
    out = {}
    for i, ln in enumerate(lines, 1):
        key, _, value = ln.partition(" ")
        if key:
            out[key] = (value.strip(), i)
    return out


def _sensor_size(path: Path, header: dict[str, tuple[str, int]]) -> tuple[int, int]:
    """(height, width) from the header (240 x 304, Gen1's, when absent), checked against the caps."""
    size = {}
    for key, default in (("Height", 240), ("Width", 304)):
        value, line = header.get(key, (str(default), None))
        where = f"{path}: header line {line}" if line else str(path)
        try:
            v = int(value)
        except ValueError:
            raise DatFormatError(f"{where}: {key} {value!r} is not an integer") from None
        if not 0 < v <= MAX_SIDE:
            raise DatFormatError(f"{where}: {key} {v} outside 1..{MAX_SIDE}")
        size[key] = v
    if size["Height"] * size["Width"] > MAX_PIXELS:
        raise DatFormatError(f"{path}: sensor {size['Width']}x{size['Height']} is larger than {MAX_PIXELS} pixels; "
                             "the header is corrupt")
    return size["Height"], size["Width"]


class DatReader:
    """A memory-mapped ``*_td.dat`` file.

    ``reader.header`` (dict of the ``% Key value`` lines), ``height``/``width`` (from the header, else 240/304),
    ``len(reader)`` events, ``t_first``/``t_last`` (unwrapped microseconds), ``read(t_start, t_end)`` events in
    ``[t_start, t_end)``, ``read_index(i0, i1)``, ``iter_windows(window_us, step_us)``.

    Opening scans the timestamp column once, in chunks of 4M events (bounded memory), to find uint32
    wrap-arounds and events out of time order (clamped, see the module docstring; ``n_clamped`` counts them);
    ``check=False`` skips the scan (then timestamps are trusted to be non-decreasing without wrap-around, and
    windowed reads touch only the pages they need).
    """

    def __init__(self, path: str | os.PathLike, check: bool = True):
        self.path = Path(path)
        lines, self.event_type, self.offset = _parse_header(self.path)
        self.header_lines = lines
        header = _header_dict(lines)
        self.header = {k: v for k, (v, _) in header.items()}
        self.height, self.width = _sensor_size(self.path, header)
        size = self.path.stat().st_size - self.offset
        n, rest = divmod(size, EVENT_SIZE)
        if rest:
            warnings.warn(f"{self.path}: last event truncated ({rest} of {EVENT_SIZE} bytes); dropped",
                          stacklevel=2)
        self.n = n
        self._raw = (np.memmap(self.path, dtype=RAW_DTYPE, mode="r", offset=self.offset, shape=(n,))
                     if n else np.zeros(0, RAW_DTYPE))
        # segments of constant wrap count: start indices and the wrap count of each
        self._seg_start = np.zeros(1, np.int64)
        # events out of time order: their indices and the (unwrapped) time they are clamped to
        self._fix_idx, self._fix_t = np.zeros(0, np.int64), np.zeros(0, np.int64)
        self.n_clamped = 0
        if check and n:
            self._scan()

    def __len__(self) -> int:
        return self.n

    def __repr__(self) -> str:
        return f"DatReader({str(self.path)!r}, events={self.n}, {self.width}x{self.height})"

    def _scan(self) -> None:
        starts, fix_idx, fix_t = [0], [], []
        wraps, prev_raw, run_max, back_max = 0, None, None, 0
        limit = int(MAX_OUT_OF_ORDER * self.n)
        ts = self._raw["t"]
        for a in range(0, self.n, _SCAN_CHUNK):
            t = np.asarray(ts[a:a + _SCAN_CHUNK]).astype(np.int64)  # raw, then unwrapped in place
            wrap_at = np.flatnonzero(np.diff(t, prepend=t[0] if prev_raw is None else prev_raw) < -_HALF)
            starts.extend(int(a + w) for w in wrap_at)
            prev_raw = int(t[-1])
            if wrap_at.size:
                k = np.zeros(len(t), np.int64)
                k[wrap_at] = 1
                t += np.cumsum(k) * _WRAP
            t += wraps * _WRAP
            wraps += len(wrap_at)
            rm = np.maximum.accumulate(t)
            if run_max is not None:
                np.maximum(rm, run_max, out=rm)
            behind = np.flatnonzero(t < rm)
            if behind.size:
                fix_idx.append(a + behind)
                fix_t.append(rm[behind])
                self.n_clamped += int(behind.size)
                back_max = max(back_max, int((rm[behind] - t[behind]).max()))
                if self.n_clamped > limit:
                    raise DatFormatError(
                        f"{self.path}: at least {self.n_clamped} of {self.n} events are earlier than an event before "
                        f"them (first at event {int(fix_idx[0][0])}); more than {MAX_OUT_OF_ORDER:.0%} out of "
                        "order: the events are not in time order")
            run_max = int(rm[-1])
        self._seg_start = np.asarray(starts, np.int64)
        if fix_idx:
            self._fix_idx, self._fix_t = np.concatenate(fix_idx), np.concatenate(fix_t)
            warnings.warn(f"{self.path}: {self.n_clamped} of {self.n} events are earlier than an event before them "
                          f"(by up to {back_max} us); their timestamps are clamped to non-decreasing", stacklevel=3)

    def _unwrap(self, i0: int, raw_t: np.ndarray) -> np.ndarray:
        """Unwrapped, clamped timestamps of events ``i0, i0 + 1, ...`` from their raw values."""
        t = raw_t.astype(np.int64)
        if len(self._seg_start) > 1 and len(t):
            idx = np.arange(i0, i0 + len(t))
            t += (np.searchsorted(self._seg_start, idx, side="right") - 1).astype(np.int64) * _WRAP
        if len(self._fix_idx) and len(t):
            a, b = np.searchsorted(self._fix_idx, [i0, i0 + len(t)])
            t[self._fix_idx[a:b] - i0] = self._fix_t[a:b]
        return t

    def time_at(self, i: int) -> int:
        """Unwrapped (and clamped) timestamp of event ``i``."""
        j = int(np.searchsorted(self._fix_idx, i))
        if j < len(self._fix_idx) and self._fix_idx[j] == i:
            return int(self._fix_t[j])
        k = int(np.searchsorted(self._seg_start, i, side="right") - 1)
        return int(self._raw["t"][i]) + k * _WRAP

    @property
    def t_first(self) -> int | None:
        return self.time_at(0) if self.n else None

    @property
    def t_last(self) -> int | None:
        return self.time_at(self.n - 1) if self.n else None

    def index_of(self, t: int) -> int:
        """First event index with timestamp ``>= t`` (``len(self)`` when none). A plain bisection over the
        memory map on the unwrapped, clamped (so non-decreasing) times: ``np.searchsorted`` would first copy the
        strided timestamp column (the whole file)."""
        lo, hi = 0, self.n
        while hi - lo > 64:
            mid = (lo + hi) // 2
            if self.time_at(mid) < t:
                lo = mid + 1
            else:
                hi = mid
        if hi <= lo:
            return lo
        times = self._unwrap(lo, np.asarray(self._raw["t"][lo:hi]))
        return lo + int(np.searchsorted(times, t, side="left"))

    def read_index(self, i0: int, i1: int) -> np.ndarray:
        """Events ``i0 <= i < i1`` decoded to :data:`EVENT_DTYPE`."""
        i0, i1 = max(0, int(i0)), min(self.n, int(i1))
        out = np.empty(max(0, i1 - i0), EVENT_DTYPE)
        if i1 <= i0:
            return out
        raw = np.asarray(self._raw[i0:i1])
        w = raw["w"]
        out["t"] = self._unwrap(i0, raw["t"])
        out["x"] = w & 0x3FFF
        out["y"] = (w >> 14) & 0x3FFF
        out["p"] = (w >> 28) & 0xF
        return out

    def read(self, t_start: int | None = None, t_end: int | None = None) -> np.ndarray:
        """Events with ``t_start <= t < t_end`` (either bound optional)."""
        i0 = 0 if t_start is None else self.index_of(int(t_start))
        i1 = self.n if t_end is None else self.index_of(int(t_end))
        return self.read_index(i0, i1)

    def iter_windows(self, window_us: int, step_us: int | None = None, t_start: int | None = None,
                     t_end: int | None = None):
        """Yield ``(t0, t1, events in [t0, t1))`` for ``t1 = t_start + window_us, + step_us, ...`` while
        ``t1 <= t_end`` (defaults: the first event's time and the last event's time + 1)."""
        step_us = window_us if step_us is None else step_us
        if window_us <= 0 or step_us <= 0:
            raise ValueError("window_us and step_us must be positive")
        if not self.n:
            return
        t_start = self.t_first if t_start is None else int(t_start)
        t_end = self.t_last + 1 if t_end is None else int(t_end)
        t1 = t_start + window_us
        while t1 <= t_end:
            t0 = t1 - window_us
            yield t0, t1, self.read(t0, t1)
            t1 += step_us


def read_dat(path: str | os.PathLike, t_start: int | None = None, t_end: int | None = None) -> np.ndarray:
    """Events of a ``*_td.dat`` file with ``t_start <= t < t_end`` as a structured array
    (:data:`EVENT_DTYPE`: ``t`` int64 us, ``x``, ``y`` uint16, ``p`` uint8)."""
    return DatReader(path).read(t_start, t_end)


def write_dat(path: str | os.PathLike, events, header_lines: list[str] | None = None, height: int = 240,
              width: int = 304, date: str | None = None, event_type: int = TD_EVENT_TYPE) -> Path:
    """Write events (structured array or dict with ``t``, ``x``, ``y``, ``p``) as a genuine ``*_td.dat``.

    ``header_lines`` (without the leading '% ') replaces the default ``Date``, ``Version 2``, ``Height``,
    ``Width`` header. Timestamps must be non-decreasing integers >= 0; they are stored modulo 2**32 (as the
    sensor does), which :class:`DatReader` unwraps again. x, y must fit 14 bits, p 4 bits.
    """
    path = Path(path)
    t = np.asarray(events["t"]).astype(np.int64)
    x = np.asarray(events["x"]).astype(np.int64)
    y = np.asarray(events["y"]).astype(np.int64)
    p = np.asarray(events["p"]).astype(np.int64)
    if not (len(t) == len(x) == len(y) == len(p)):
        raise ValueError("t, x, y, p must have the same length")
    if len(t):
        if t.min() < 0 or np.any(np.diff(t) < 0):
            raise ValueError(f"{path}: timestamps must be >= 0 and non-decreasing")
        for name, v, hi in (("x", x, 1 << 14), ("y", y, 1 << 14), ("p", p, 16)):
            if v.min() < 0 or v.max() >= hi:
                raise ValueError(f"{path}: {name} out of range [0, {hi})")
        if np.any(np.diff(t) >= _HALF):
            raise ValueError(f"{path}: a gap of 2**31 us or more cannot be told from a wrap-around")
    if header_lines is None:
        date = date or _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%d %H:%M:%S")
        header_lines = [f"Date {date}", "Version 2", f"Height {int(height)}", f"Width {int(width)}"]
    rec = np.empty(len(t), RAW_DTYPE)
    rec["t"] = (t % _WRAP).astype(np.uint32)
    rec["w"] = (x | (y << 14) | (p << 28)).astype(np.uint32)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        for ln in header_lines:
            if "\n" in ln:
                raise ValueError("header lines must not contain newlines")
            f.write(f"% {ln}\n".encode("latin-1"))
        f.write(bytes((int(event_type), EVENT_SIZE)))
        f.write(rec.tobytes())
    return path


def xyxy_to_bbox(t, xyxy, class_id, confidence=1.0, track_id=0) -> np.ndarray:
    """Boxes ``xyxy [n, 4]`` (sensor pixels) at time ``t`` -> :data:`BBOX_DTYPE` rows (top-left ``x, y``,
    ``w, h``); ``class_id``, ``confidence`` and ``track_id`` are scalars or ``[n]``."""
    xyxy = np.asarray(xyxy, np.float64).reshape(-1, 4)
    out = np.zeros(len(xyxy), BBOX_DTYPE)
    out["t"] = t
    out["x"], out["y"] = xyxy[:, 0], xyxy[:, 1]
    out["w"], out["h"] = xyxy[:, 2] - xyxy[:, 0], xyxy[:, 3] - xyxy[:, 1]
    out["class_id"], out["confidence"], out["track_id"] = class_id, confidence, track_id
    return out


def to_bbox_array(boxes) -> np.ndarray:
    """Any structured box array (time field ``ts`` or ``t``; ``confidence`` (or the toolbox/RVT detection name
    ``class_confidence``) and ``track_id`` optional) -> :data:`BBOX_DTYPE`. Missing ``confidence`` is 1, missing
    ``track_id`` is 0."""
    boxes = np.asarray(boxes)
    names = boxes.dtype.names or ()
    tf = "t" if "t" in names else "ts" if "ts" in names else None
    missing = [k for k in ("x", "y", "w", "h", "class_id") if k not in names]
    if tf is None or missing:
        raise ValueError(f"box array lacks fields {(['t or ts'] if tf is None else []) + missing}; has {names}")
    out = np.zeros(boxes.shape[0] if boxes.ndim else 1, BBOX_DTYPE)
    out["t"] = boxes[tf]
    for k in ("x", "y", "w", "h", "class_id"):
        out[k] = boxes[k]
    conf = "confidence" if "confidence" in names else "class_confidence" if "class_confidence" in names else None
    out["confidence"] = boxes[conf] if conf else 1.0
    out["track_id"] = boxes["track_id"] if "track_id" in names else 0
    return out


def read_bbox(path: str | os.PathLike) -> np.ndarray:
    """A ``*_bbox.npy`` file as :data:`BBOX_DTYPE` (Gen1 files name the time field ``ts``, later ones ``t``)."""
    path = Path(path)
    try:
        arr = np.load(path, allow_pickle=False)
    except ValueError as e:
        raise ValueError(f"{path}: not a plain numpy box array ({e})") from e
    try:
        return to_bbox_array(arr)
    except ValueError as e:
        raise ValueError(f"{path}: {e}") from e


def write_bbox(path: str | os.PathLike, boxes, time_field: str = "t") -> Path:
    """Write boxes (any array :func:`to_bbox_array` accepts) as a ``*_bbox.npy`` in :data:`BBOX_DTYPE`;
    ``time_field="ts"`` writes the Gen1 field name."""
    arr = to_bbox_array(boxes)
    if time_field == "ts":
        renamed = np.empty(len(arr), np.dtype([("ts", "<u8")] + [(n, BBOX_DTYPE[n]) for n in BBOX_DTYPE.names[1:]]))
        renamed["ts"] = arr["t"]
        for n in BBOX_DTYPE.names[1:]:
            renamed[n] = arr[n]
        arr = renamed
    elif time_field != "t":
        raise ValueError("time_field must be 't' or 'ts'")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        np.save(f, arr, allow_pickle=False)
    return path
