"""What ``predict`` can read, resolved into a list of :class:`Source`, and frames read from each.

A source is an image, a video, an event recording (``.dat``; with the ``[events]`` extra also Metavision
``.raw`` EVT 2.0/3.0, ``.aedat4``, ``.es``) or a folder of them; a glob pattern
(``"photos/*.jpg"``, sorted); a ``.txt`` file listing one path a line (relative to the list's folder; blank
lines and ``#`` comments skipped); a webcam index (``0``); or a stream URL opened by OpenCV (``rtsp://``,
``http(s)://``, ``file://`` ...). Videos and streams are read frame by frame (never whole), every
``vid_stride``-th frame kept.
"""

from __future__ import annotations

import glob
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

import cv2
import numpy as np

from ..data.labels import IMG_EXTS
from ..events.readers import RECORDING_EXTS

VIDEO_EXTS = (".mp4", ".avi", ".mov", ".mkv", ".m4v", ".mpg", ".mpeg", ".webm")
EVENT_EXTS = RECORDING_EXTS
KNOWN_EXTS = IMG_EXTS + VIDEO_EXTS + EVENT_EXTS


@dataclass(frozen=True)
class Source:
    """One thing to predict on: ``kind`` is image, video, events or stream; ``path`` a file path, a URL or a
    webcam index (as text)."""

    kind: str
    path: str

    @property
    def name(self) -> str:
        """A file-name stem for outputs: the file's stem, the URL path's stem, or ``webcam<index>``."""
        if self.kind != "stream":
            return Path(self.path).stem
        if self.path.isdigit():
            return f"webcam{self.path}"
        return Path(urlparse(self.path).path).stem or "stream"


def _kind(p: Path) -> str:
    ext = p.suffix.lower()
    if ext in IMG_EXTS:
        return "image"
    if ext in VIDEO_EXTS:
        return "video"
    if ext in EVENT_EXTS:
        return "events"
    raise ValueError(f"{p}: unsupported source type {ext!r} (images {IMG_EXTS}, videos {VIDEO_EXTS}, "
                     f"event recordings {EVENT_EXTS}, or a .txt list of files)")


def _files(p: Path) -> list[Source]:
    """An existing file or folder as sources (folders: their known files, sorted, not recursive)."""
    if p.is_dir():
        files = sorted(q for q in p.iterdir() if q.suffix.lower() in KNOWN_EXTS)
        if not files:
            raise FileNotFoundError(f"no image, video or event recording in folder {p}")
        return [Source(_kind(q), str(q)) for q in files]
    return [Source(_kind(p), str(p))]


def _list_file(txt: Path) -> list[Source]:
    out = []
    for n, line in enumerate(txt.read_text(encoding="utf-8").splitlines(), 1):
        entry = line.strip()
        if not entry or entry.startswith("#"):
            continue
        p = Path(entry) if Path(entry).is_absolute() else txt.parent / entry
        if not p.exists():
            raise FileNotFoundError(f"{txt}:{n}: {entry} not found")
        try:
            out += _files(p)
        except ValueError as e:
            raise ValueError(f"{txt}:{n}: {e}") from None
    if not out:
        raise FileNotFoundError(f"{txt} lists no file")
    return out


def resolve_sources(source) -> list[Source]:
    """Every :class:`Source` named by ``source`` (see the module docstring; a list or tuple of them too; a
    :class:`Source` stands for itself)."""
    if isinstance(source, Source):
        return [source]
    if isinstance(source, list | tuple):
        return [s for item in source for s in resolve_sources(item)]
    if isinstance(source, int) or (isinstance(source, str) and source.isdigit()):
        return [Source("stream", str(int(source)))]
    text = str(source)
    if "://" in text:
        return [Source("stream", text)]
    p = Path(text)
    if p.exists():
        return _list_file(p) if p.is_file() and p.suffix.lower() == ".txt" else _files(p)
    if any(ch in text for ch in "*?["):
        matches = sorted(Path(m) for m in glob.glob(text, recursive=True))
        found = [s for m in matches if m.is_file() and m.suffix.lower() in KNOWN_EXTS for s in _files(m)]
        if not found:
            raise FileNotFoundError(f"no image, video or event recording matches {text}")
        return found
    raise FileNotFoundError(f"source not found: {p}")


def open_capture(source: Source) -> cv2.VideoCapture:
    """``cv2.VideoCapture`` of a video or stream (a webcam by index); raises OSError when it cannot open."""
    target = int(source.path) if source.kind == "stream" and source.path.isdigit() else source.path
    cap = cv2.VideoCapture(target)
    if not cap.isOpened():
        raise OSError(f"cannot open {source.kind} {source.path}")
    return cap


def read_frames(cap: cv2.VideoCapture, vid_stride: int = 1) -> Iterator[tuple[int, np.ndarray]]:
    """``(frame index, BGR frame)`` of every ``vid_stride``-th frame until the capture ends (skipped frames are
    only grabbed, not decoded)."""
    if vid_stride < 1:
        raise ValueError(f"vid_stride must be >= 1, got {vid_stride}")
    n = 0
    while True:
        if n % vid_stride:
            if not cap.grab():
                return
        else:
            ok, frame = cap.read()
            if not ok:
                return
            yield n, frame
        n += 1


def read_image_file(path: str) -> np.ndarray:
    im = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if im is None:
        raise OSError(f"cannot read image {path}")
    return im
