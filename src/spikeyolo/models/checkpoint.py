"""Checkpoints: tensors plus plain-data config, loadable with ``torch.load(weights_only=True)``.

A spikeyolo checkpoint is a dict ``{"format": "spikeyolo", "version", "config", "state_dict", ...extra}``.
Nothing in it needs unpickling of arbitrary objects, so a downloaded file cannot run code when loaded.
"""

from __future__ import annotations

import copy
import errno
import io
from pathlib import Path

import torch
from torch import nn

from ..utils.errors import CheckpointError, InputError
from ..utils.runs import atomic_write
from ..utils.version import __version__
from .official import OfficialFile, infer_official, official_names, read_official
from .yolo import SpikeYOLO

FORMAT = "spikeyolo"
RUNTIME_SETTINGS = ("T", "D")  # settings a saved model can run with other values of (no weight depends on them)


def atomic_torch_save(obj, path: str | Path) -> None:
    """Serialize, then write through a temporary file and a rename (:func:`atomic_write`): a killed run never
    leaves a torn file, and a full disk raises ENOSPC naming ``path``."""
    buf = io.BytesIO()
    torch.save(obj, buf)
    atomic_write(path, buf.getvalue())


def checkpoint_dict(model: SpikeYOLO, **extra) -> dict:
    """The checkpoint of a train-form model; ``extra`` must be tensors or plain data."""
    if not isinstance(model, SpikeYOLO):
        raise TypeError(f"save expects a train-form SpikeYOLO, got {type(model).__name__}")
    if model.form != "train":
        raise ValueError("save the train form; fused and spike-driven forms are derived from it on load")
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    return {"format": FORMAT, "version": __version__, "config": model.config, "state_dict": state, **extra}


def save(model: SpikeYOLO, path: str | Path, **extra) -> Path:
    """Save a train-form model (atomically). ``extra``: tensors or plain data, e.g. metrics or training args."""
    atomic_torch_save(checkpoint_dict(model, **extra), path)
    return Path(path)


def read_checkpoint(path: str | Path, map_location="cpu") -> dict:
    """The raw checkpoint dict, validated; loads with ``weights_only=True``."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(errno.ENOENT, "checkpoint not found", str(path))
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # pickled objects, a torn file, not a torch file at all
        raise CheckpointError(
            f"{path} is not a spikeyolo checkpoint (it cannot be read as tensors and plain data: {e}). "
            "Official BICLab checkpoints are recognised by spikeyolo.load and spikeyolo.official.import_official."
        ) from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT or "config" not in ckpt:
        raise CheckpointError(f"{path} is not a spikeyolo checkpoint (no 'format: spikeyolo' entry)")
    return ckpt


def model_from_checkpoint(ckpt: dict, key: str = "state_dict") -> SpikeYOLO:
    model = SpikeYOLO(ckpt["config"])
    model.load_state_dict(ckpt[key])
    return model


def load(path: str | Path, map_location="cpu", **settings) -> SpikeYOLO:
    """A train-form model in eval mode from a checkpoint file (see :func:`load_with_record`)."""
    return load_with_record(path, map_location, **settings)[0]


def load_with_record(path: str | Path, map_location="cpu", **settings) -> tuple[SpikeYOLO, dict]:
    """Load a train-form model in eval mode: a file saved by :func:`save` (or a run's ``last.pt``/``best.pt``),
    or an official BICLab SpikeYOLO checkpoint, imported without unpickling its objects (see ``official.py``).

    ``settings``: ``T`` and ``D`` run a saved model with other timesteps / largest spike (its weights do not
    depend on them; ``model.config`` records the values used). An official checkpoint is recognized (release,
    scale, classes, T, D, neuron; one printed line says what was found, see ``official.infer_official``);
    ``scale``, ``decay``, ``input_gain`` (and ``T``, ``D``) replace what was recognized; those raise
    :class:`~spikeyolo.errors.InputError` for a spikeyolo checkpoint, whose file records them.

    Returns ``(model, record)``: the record is the checkpoint's other entries (``train_args``, metrics, ...;
    for official weights only the training image size where the file has one), from one read of the file."""
    try:
        ckpt = read_checkpoint(path, map_location)
    except CheckpointError as not_ours:
        try:
            official = read_official(path)
        except CheckpointError:
            raise not_ours from None
        size = official.train_args.get("imgsz")
        sized = isinstance(size, int) and not isinstance(size, bool) and size > 0
        # an official file: its own errors from here
        return infer_official(path, info=official, **settings), {"train_args": {"imgsz": size}} if sized else {}
    record = {k: v for k, v in ckpt.items() if k not in ("state_dict", "train_state")}
    try:
        return model_from_checkpoint(with_runtime_settings(ckpt, path, settings)).eval(), record
    except InputError:
        raise
    except Exception as e:  # a readable file whose config or weights do not build the model it describes
        raise CheckpointError(f"{path}: a spikeyolo checkpoint whose model cannot be rebuilt "
                              f"({type(e).__name__}: {str(e)[:200]})") from None


def with_runtime_settings(ckpt: dict, path, settings: dict) -> dict:
    """The checkpoint with ``T`` / ``D`` replaced in a copy of its config; other settings are refused."""
    other = sorted(set(settings) - set(RUNTIME_SETTINGS))
    if other:
        raise InputError(f"{path}: {other} cannot be changed for a spikeyolo checkpoint (it records them); "
                         f"only {list(RUNTIME_SETTINGS)} can")
    for k, v in settings.items():
        if not isinstance(v, int) or isinstance(v, bool) or v < 1:
            raise InputError(f"{path}: {k} must be a positive integer, got {v!r}")
    if not settings:
        return ckpt
    config = copy.deepcopy(ckpt["config"])
    config.update(settings)
    return {**ckpt, "config": config}


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def _ours_or_official(path) -> tuple[dict | None, OfficialFile | None]:
    """A spikeyolo checkpoint's dict, or else an official file read (the spikeyolo error if it is neither)."""
    try:
        return read_checkpoint(path), None
    except CheckpointError as not_ours:
        try:
            return None, read_official(path)
        except CheckpointError:
            raise not_ours from None


def checkpoint_imgsz(path, default: int = 640) -> int:
    """The image size a checkpoint was trained at (its ``train_args``; an official file's too), else ``default``."""
    ckpt, official = _ours_or_official(path)
    if official is not None:
        size = official.train_args.get("imgsz")
        return size if isinstance(size, int) and not isinstance(size, bool) and size > 0 else default
    return int((ckpt.get("train_args") or {}).get("imgsz") or ckpt["config"].get("imgsz") or default)


def trained_imgsz(record: dict, default: int = 640) -> int:
    """The image size in a checkpoint record (its ``train_args``, else its config), else ``default``."""
    return int((record.get("train_args") or {}).get("imgsz") or (record.get("config") or {}).get("imgsz")
               or default)


def checkpoint_names(path) -> list[str]:
    """The class names a checkpoint's model has (an official file's as :func:`load` names them)."""
    ckpt, official = _ours_or_official(path)
    return list(ckpt["config"]["names"]) if official is None else official_names(official, path)
