"""Label cache: parsed labels stored as JSON (safe to load, no pickle) and keyed by a hash of the inputs.

The key covers every input file's path, size and mtime (missing files included, so adding a label file
invalidates the cache), the parse settings and :data:`CACHE_VERSION`. The cache goes to the preferred path
(e.g. ``labels/train.cache``); when that path is not writable, or holds a file that is not a spikeyolo cache
(a user's file is never overwritten), it goes to ``$SPIKEYOLO_CACHE_DIR`` or ``~/.cache/spikeyolo/labels``.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path

CACHE_VERSION = 1
MAGIC = "spikeyolo-label-cache"


def files_hash(files: list[str], extra: object = None) -> str:
    """sha256 over (path, size, mtime_ns) of each file in order, ``extra`` (JSON-able) and the cache version."""
    h = hashlib.sha256(f"{MAGIC}:{CACHE_VERSION}:{json.dumps(extra, sort_keys=True)}".encode())
    for f in files:
        try:
            st = os.stat(f)
            h.update(f"{f}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
        except OSError:
            h.update(f"{f}\0missing\n".encode())
    return h.hexdigest()


def fallback_path(preferred: Path) -> Path:
    root = Path(os.environ.get("SPIKEYOLO_CACHE_DIR") or Path.home() / ".cache" / "spikeyolo" / "labels")
    tag = hashlib.sha1(str(preferred.resolve()).encode()).hexdigest()[:16]
    return root / f"{preferred.stem}-{tag}.cache"


def _read(path: Path) -> dict | None:
    """The cache dict at ``path`` if it is a spikeyolo cache, else None."""
    try:
        with open(path, encoding="utf-8") as fh:
            d = json.load(fh)
    except (OSError, ValueError):
        return None
    return d if isinstance(d, dict) and d.get("magic") == MAGIC else None


def _write(path: Path, obj: dict) -> bool:
    """Atomic write (temp file + rename). False when the folder is not writable."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    except OSError:
        return False
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(obj, fh)
        os.replace(tmp, path)
        return True
    except OSError:
        Path(tmp).unlink(missing_ok=True)
        return False


def cached(preferred: Path, key: str, build: Callable[[], dict]) -> tuple[dict, Path | None, bool]:
    """Load ``build()``'s JSON-able result from the cache when ``key`` matches, else build and store it.

    Returns ``(data, cache_path or None when nothing could be written, hit)``.
    """
    preferred = Path(preferred)
    candidates = [preferred, fallback_path(preferred)]
    for p in candidates:
        d = _read(p)
        if d is not None and d.get("version") == CACHE_VERSION and d.get("hash") == key:
            return d["data"], p, True
    data = build()
    obj = {"magic": MAGIC, "version": CACHE_VERSION, "hash": key, "data": data}
    for p in candidates:
        if p.exists() and _read(p) is None:
            continue  # not ours: never overwrite a user's file
        if _write(p, obj):
            return data, p, False
    return data, None, False
