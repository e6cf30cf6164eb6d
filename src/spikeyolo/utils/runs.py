"""Ground-floor helpers for runs: run folders, seeding and RNG state as plain data, devices, plain JSON."""

from __future__ import annotations

import errno
import json
import os
import random
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch
from torch import nn


def increment_path(path: str | Path, exist_ok: bool = False, mkdir: bool = True) -> Path:
    """``runs/train/exp`` if free, else the first free of ``exp2``, ``exp3``, ...; never an existing run.

    With ``exist_ok`` an existing folder is reused (used by resume, which continues its own run).
    """
    path = Path(path)
    if not exist_ok and path.exists():
        stem = path.name
        n = 2
        while (path.parent / f"{stem}{n}").exists():
            n += 1
        path = path.parent / f"{stem}{n}"
    if mkdir:
        path.mkdir(parents=True, exist_ok=True)
    return path


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """A temporary path beside ``path`` to write to; on a clean exit it is renamed onto ``path``.

    A failed write (full disk, exception, Ctrl-C) leaves ``path`` as it was (an existing good file survives)
    and no temporary behind; a full disk is reported as ``OSError(ENOSPC)`` naming ``path``. The temporary keeps
    the suffix (``.model.tmp123.onnx``), so writers that look at the extension behave the same.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.tmp{os.getpid()}{path.suffix}")
    try:
        yield tmp
        os.replace(tmp, path)
    except OSError as e:
        if e.errno == errno.ENOSPC:
            raise OSError(errno.ENOSPC, "No space left on device", str(path)) from None
        raise
    finally:
        tmp.unlink(missing_ok=True)


def atomic_write(path: str | Path, data: bytes | str) -> None:
    """Write ``data`` (bytes, or text as UTF-8) to ``path`` through :func:`atomic_path`."""
    with atomic_path(path) as tmp:
        _write_file(tmp, data.encode() if isinstance(data, str) else data)


def _write_file(path: Path, data: bytes) -> None:
    with open(path, "wb") as f:
        f.write(data)
        f.flush()


def seed_everything(seed: int, deterministic: bool = False) -> None:
    """Seed python, numpy and torch (all devices); optionally ask torch for deterministic kernels (without
    its NaN fill of every new tensor, see below)."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)
    if deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
        # deterministic mode also fills every new tensor with NaN, a debugging aid (it makes reads of unwritten
        # memory visible) that cost 3-5% of a CPU training step; it changes no result
        torch.utils.deterministic.fill_uninitialized_memory = False
        torch.backends.cudnn.deterministic = True
        torch.backends.cudnn.benchmark = False
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")


def get_rng_state() -> dict:
    """The state of every random generator, as tensors and plain data (loads with ``weights_only=True``)."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    py = random.getstate()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": {
            "kind": str(kind),
            "keys": torch.from_numpy(keys.astype(np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "gauss": float(gauss),
        },
        "python": {"version": py[0], "state": list(py[1]), "gauss": py[2]},
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    """Restore what :func:`get_rng_state` returned."""
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state(
        (n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"])
    )
    p = state["python"]
    random.setstate((p["version"], tuple(p["state"]), p["gauss"]))
    if "cuda" in state and torch.cuda.is_available():
        cuda = state["cuda"]
        if len(cuda) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(cuda)


def select_device(device: str | int | None = None) -> torch.device:
    """``cpu``, ``0``, ``cuda:1``, ``0,1`` (first listed; DDP picks its own per process) or None (auto)."""
    if device is None or device == "":
        return torch.device("cuda:0" if torch.cuda.is_available() else "cpu")
    s = str(device).strip().lower()
    if s == "cpu":
        return torch.device("cpu")
    if s.startswith("cuda"):
        return torch.device(s)
    if s == "mps":
        return torch.device("mps")
    first = s.split(",")[0]
    if not torch.cuda.is_available():
        raise ValueError(f"device {device!r} needs CUDA, which this torch build cannot use; use --device cpu")
    return torch.device(f"cuda:{int(first)}")


def plain(obj):
    """Plain JSON-able data: numpy/torch numbers to floats, NaN/inf to None (strict JSON)."""
    if isinstance(obj, dict):
        return {str(k): plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [plain(v) for v in obj]
    if isinstance(obj, (np.ndarray, torch.Tensor)):
        return plain(obj.tolist())
    if isinstance(obj, (bool, str)) or obj is None:
        return obj
    if isinstance(obj, (int, np.integer)):
        return int(obj)
    try:
        f = float(obj)
    except (TypeError, ValueError):
        return str(obj)
    return f if np.isfinite(f) else None


def plain_json(obj, **kw) -> str:
    """``obj`` as strict JSON text (see :func:`plain`); ``kw`` go to :func:`json.dumps`."""
    return json.dumps(plain(obj), **kw)


def unwrap(model: nn.Module) -> nn.Module:
    """The model inside DistributedDataParallel / DataParallel / ``torch.compile`` wrappers (or the model)."""
    while True:
        if isinstance(model, (nn.parallel.DistributedDataParallel, nn.DataParallel)):
            model = model.module
        elif isinstance(getattr(model, "_orig_mod", None), nn.Module):
            model = model._orig_mod
        else:
            return model
