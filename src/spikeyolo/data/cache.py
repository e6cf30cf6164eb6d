"""Label cache: parsed labels stored as a NumPy ``.npz`` of plain arrays plus a JSON member (safe to load: no
pickle), keyed by a hash of the inputs. Arrays load in one read each, so a 118k-image split comes back in
about a second with memory proportional to its boxes (JSON lists of floats took several times both).

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
import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np

CACHE_VERSION = 2  # 2: npz (arrays + a JSON member); 1 was one JSON document
META = "meta"  # the npz member holding the JSON part (magic, version, hash, the JSON-able values)
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


def _meta(path: Path) -> tuple[dict, dict] | None:
    """(JSON part, arrays) of a spikeyolo cache at ``path`` (any version: npz, or the JSON of version 1), else
    None (missing, unreadable, or a file that is not ours)."""
    try:
        with np.load(path, allow_pickle=False) as z:
            if META in z.files:
                d = json.loads(bytes(z[META]).decode("utf-8"))
                if isinstance(d, dict) and d.get("magic") == MAGIC:
                    return d, {k: z[k] for k in z.files if k != META}
            return None
    except (OSError, ValueError, KeyError, zipfile.BadZipFile, EOFError):
        pass
    try:  # version 1 was one JSON document
        with open(path, encoding="utf-8") as fh:
            d = json.load(fh)
        return (d, {}) if isinstance(d, dict) and d.get("magic") == MAGIC else None
    except (OSError, ValueError):
        return None


def _write(path: Path, meta: dict, arrays: dict) -> bool:
    """Atomic write (temp file + rename). False when the folder is not writable."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    except OSError:
        return False
    try:
        blob = np.frombuffer(json.dumps(meta).encode("utf-8"), np.uint8)
        with os.fdopen(fd, "wb") as fh:
            np.savez(fh, **{META: blob}, **arrays)
        os.replace(tmp, path)
        return True
    except OSError:
        Path(tmp).unlink(missing_ok=True)
        return False


def cached(preferred: Path, key: str, build: Callable[[], dict]) -> tuple[dict, Path | None, bool]:
    """Load ``build()``'s result from the cache when ``key`` matches, else build and store it.

    ``build()`` returns a dict whose values are NumPy arrays (numbers or bools; stored as they are) or JSON-able.
    Returns ``(data, cache_path or None when nothing could be written, hit)``.
    """
    preferred = Path(preferred)
    candidates = [preferred, fallback_path(preferred)]
    for p in candidates:
        found = _meta(p)
        if found is not None and found[0].get("version") == CACHE_VERSION and found[0].get("hash") == key:
            return {**found[0]["data"], **found[1]}, p, True
    data = build()
    arrays = {k: v for k, v in data.items() if isinstance(v, np.ndarray)}
    meta = {"magic": MAGIC, "version": CACHE_VERSION, "hash": key,
            "data": {k: v for k, v in data.items() if k not in arrays}}
    for p in candidates:
        if p.exists() and _meta(p) is None:
            continue  # not ours: never overwrite a user's file
        if _write(p, meta, arrays):
            return data, p, False
    return data, None, False
