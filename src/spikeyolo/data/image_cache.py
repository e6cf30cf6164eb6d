"""Sample images resized to the network size, served from the cheapest place that holds them.

Every augmentation path starts from the sample's image with its longer side scaled to ``imgsz`` (the mosaic
pieces, the letterbox, the official buffer), so that is what is cached:

- ``ram``: every image resized once, up front (loader workers started later share the arrays by fork);
- ``disk``: every image resized once and stored as ``.npy`` (no pickle) in a folder of our own; a JPEG decode
  (about 3.5 ms for 640x480 on one core) becomes a file read (about 0.3 ms). The file name hashes the image
  path, its size and mtime, the tile region, ``imgsz`` and the resize rule, so a changed image is read again;
- the official mosaic buffer: the last ``buffer - 1`` images this process loaded stay in memory (what
  ultralytics 8.0 keeps per worker; its mosaic partners are drawn from them).

A folder that is not ours (no marker file) is never written into: the cache then goes to
``$SPIKEYOLO_CACHE_DIR/images`` or ``~/.cache/spikeyolo/images``.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from . import augment as A

MARKER = ".spikeyolo-image-cache"  # names a folder this module made (and may write into)


def _threads() -> int:
    return min(8, os.cpu_count() or 1)


def _own_folder(preferred: Path) -> Path | None:
    """``preferred`` (created, with our marker) or the per-user fallback; None when neither is writable."""
    tag = hashlib.sha1(str(preferred.resolve()).encode()).hexdigest()[:16]
    root = Path(os.environ.get("SPIKEYOLO_CACHE_DIR") or Path.home() / ".cache" / "spikeyolo")
    for folder in (preferred, root / "images" / f"{preferred.name}-{tag}"):
        try:
            if folder.exists() and not (folder / MARKER).is_file():
                continue  # a user's folder: never write into it
            folder.mkdir(parents=True, exist_ok=True)
            (folder / MARKER).touch()
            return folder
        except OSError:
            continue
    return None


class ResizedImages:
    """``get(i) -> (img, (gain_y, gain_x))``: sample ``i`` resized to long side ``imgsz`` (``official``: the
    official rounding and interpolation, see ``augment.long_side_size``) and its gain over the sample's pixels.

    Args:
        read: original BGR image of sample ``i``.
        keys: per sample, the image file (and tile region) that names its disk cache entry.
        files: per sample, the image file whose size and mtime key the entry.
        cache: None, ``"ram"`` or ``"disk"``.
        folder: the preferred disk-cache folder.
        buffer: keep the last ``buffer - 1`` loaded images of this process (0: none); :meth:`recent` lists them.
    """

    def __init__(self, read: Callable[[int], np.ndarray], keys: list[str], files: list[str], imgsz: int,
                 official: bool = False, cache: str | None = None, folder: Path | None = None, buffer: int = 0):
        if cache not in (None, "ram", "disk"):
            raise ValueError(f"cache must be None, 'ram' or 'disk', got {cache!r}")
        self.read, self.keys, self.files = read, keys, files
        self.imgsz, self.official, self.buffer = int(imgsz), bool(official), int(buffer)
        self._recent: dict[int, tuple[np.ndarray, tuple[float, float]]] = {}  # insertion order = load order
        self._ram: list | None = None
        self.folder = _own_folder(Path(folder)) if cache == "disk" and folder is not None else None
        self.cached_bytes = 0
        if cache == "ram":
            with ThreadPoolExecutor(_threads()) as pool:  # OpenCV decodes and resizes without the GIL
                self._ram = list(pool.map(self._resize, range(len(keys))))
            self.cached_bytes = sum(im.nbytes for im, _ in self._ram)
        elif self.folder is not None:
            with ThreadPoolExecutor(_threads()) as pool:
                self.cached_bytes = sum(pool.map(self._store, range(len(keys))))

    def _resize(self, i: int) -> tuple[np.ndarray, tuple[float, float]]:
        return A.resize_long_side(self.read(i), self.imgsz, self.official)

    def npy_path(self, i: int) -> Path | None:
        if self.folder is None:
            return None
        try:
            st = os.stat(self.files[i])
            stamp = f"{st.st_size}\0{st.st_mtime_ns}"
        except OSError:
            stamp = "missing"
        key = f"{self.keys[i]}\0{stamp}\0{self.imgsz}\0{'official' if self.official else 'spikeyolo'}"
        return self.folder / (hashlib.sha1(key.encode()).hexdigest()[:24] + ".npy")

    def _store(self, i: int) -> int:
        """Write sample ``i``'s entry when missing (atomic: temp file + rename); its size in bytes."""
        path = self.npy_path(i)
        if path.is_file():
            return path.stat().st_size
        img, _ = self._resize(i)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.stem, suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as fh:
                np.save(fh, img, allow_pickle=False)
            os.replace(tmp, path)
        except OSError:
            Path(tmp).unlink(missing_ok=True)
            return 0
        return path.stat().st_size

    def _from_disk(self, i: int, shape: tuple[int, int]) -> tuple[np.ndarray, tuple[float, float]] | None:
        path = self.npy_path(i)
        try:
            img = np.load(path, allow_pickle=False)
        except (OSError, ValueError):
            return None
        h, w = shape
        return img, (img.shape[0] / h, img.shape[1] / w)  # = resize_long_side's gains (same sizes)

    def get(self, i: int, shape: tuple[int, int]) -> tuple[np.ndarray, tuple[float, float]]:
        """Sample ``i`` (original size ``shape`` (h, w)) resized, and its gain."""
        if i in self._recent:
            return self._recent[i]
        if self._ram is not None:
            out = self._ram[i]
        else:
            out = (self._from_disk(i, shape) if self.folder is not None else None) or self._resize(i)
        if self.buffer > 0:
            self._recent[i] = out
            if len(self._recent) >= self.buffer:  # as ultralytics: append, then drop the oldest at the limit
                del self._recent[next(iter(self._recent))]
        return out

    def recent(self) -> list[int]:
        """The buffered sample indices, oldest first (the official mosaic partners are drawn from these)."""
        return list(self._recent)
