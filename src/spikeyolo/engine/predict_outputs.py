"""``spikeyolo predict``'s files: annotated images and videos, YOLO txt labels and JSON per source.

Layout under ``save_dir``: the annotated image (its own name) or video (``<stem>.mp4``), ``labels/<stem>.txt``
(videos and streams: ``labels/<stem>_<frame>.txt``) with one ``cls cx cy w h conf`` row per box (normalized to
the frame; as in ultralytics, no label file for an image or frame without detections), ``<stem>.json`` per
source, and for event recordings ``<stem>_bbox.npy`` (and ``<stem>.mp4``).
Two sources with the same stem write under distinct names, so no output overwrites another: ``x.jpg`` and
``x.png`` as ``x_jpg`` / ``x_png``; ``a/x.png`` and ``b/x.png`` as ``a_x_png`` / ``b_x_png`` (their annotated
images then as ``a_x_png.png`` / ``b_x_png.png``).
A file that cannot be read, or does not suit the model (an image for an event model or the reverse), is
skipped with a warning (its summary is ``{"source", "skipped": reason}``); one bad file never stops a folder.
Every file is written through a temporary and renamed (a full disk leaves no torn or empty file), and a run
that wrote nothing (every source unreadable: a dead URL or webcam) leaves no run folder behind.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import cv2
from tqdm import tqdm

from ..inference import InferenceModel
from ..utils.errors import InputError, SpikeYOLOError
from ..utils.runs import atomic_path, atomic_write, increment_path
from .predictor import Predictor, Result, detections_json, iter_with_images, load_predictor, yolo_lines
from .recordings import predict_recording
from .sources import Source, resolve_sources


class _SourceWriter:
    """Writes the outputs of one image, video or stream as its results arrive; ``summary()`` at the end."""

    def __init__(self, predictor: Predictor, source: Source, stem: str, save_dir: Path | None, save: bool,
                 save_txt: bool, save_json: bool):
        self.p, self.src, self.dir, self.stem = predictor, source, save_dir, stem
        self.save = save and save_dir is not None
        self.save_txt = save_txt and save_dir is not None
        self.save_json = save_json and save_dir is not None
        self.writer, self.frames, self.n, self.n_det, self.fps, self.shape = None, [], 0, 0, None, None

    def add(self, r: Result, image) -> None:
        det, stem = r.det, self.stem
        self.n, self.n_det, self.fps, self.shape = self.n + 1, self.n_det + len(r), r.fps, r.shape
        if self.src.kind == "image":
            if self.save:
                write_image(self.picture, self.p.draw(image, det))
            if self.save_txt and len(det):
                atomic_write(self.dir / "labels" / f"{stem}.txt", "".join(f"{x}\n" for x in yolo_lines(det, r.shape)))
            if self.save_json:
                js = {"source": r.path, "shape": list(r.shape), "detections": detections_json(det, self.p.names)}
                atomic_write(self.dir / f"{stem}.json", json.dumps(js))
            return
        if self.save:
            if self.writer is None:
                h, w = r.shape
                self.writer = cv2.VideoWriter(str(self.dir / f"{stem}.mp4"), cv2.VideoWriter_fourcc(*"mp4v"),
                                              r.fps or 30.0, (w, h))
            self.writer.write(self.p.draw(image, det))
        if self.save_txt and len(det):
            rows = yolo_lines(det, r.shape)
            atomic_write(self.dir / "labels" / f"{stem}_{r.frame}.txt", "".join(x + "\n" for x in rows))
        if self.save_json:
            self.frames.append({"frame": r.frame, "detections": detections_json(det, self.p.names)})

    @property
    def picture(self) -> Path:
        """Where the annotated image goes: its own file name, or ``<output stem><suffix>`` where two sources
        share a file name (``a/x.png``, ``b/x.png``)."""
        src = Path(self.src.path)
        own = self.stem in (src.stem, f"{src.stem}_{src.suffix.lstrip('.').lower()}")
        return self.dir / (src.name if own else f"{self.stem}{src.suffix}")

    def summary(self) -> dict:
        if self.writer is not None:
            self.writer.release()
        stem = self.stem
        if self.src.kind == "image":
            out = {"source": self.src.path, "type": "image", "shape": list(self.shape), "detections": self.n_det}
            if self.save:
                out["saved"] = str(self.picture)
            return out
        if self.n == 0:
            raise OSError(f"no frame could be read from {self.src.kind} {self.src.path}")
        out = {"source": self.src.path, "type": self.src.kind, "frames": self.n, "fps": self.fps,
               "detections": self.n_det}
        if self.save:
            out["saved"] = str(self.dir / f"{stem}.mp4")
        if self.save_json:
            js = {"source": self.src.path, "fps": self.fps, "frames": self.frames}
            atomic_write(self.dir / f"{stem}.json", json.dumps(js))
        return out


def write_image(path: Path, image) -> None:
    """``cv2.imwrite`` through a temporary (same suffix, so the same encoder) renamed onto ``path``."""
    with atomic_path(path) as tmp:
        if not cv2.imwrite(str(tmp), image):
            raise OSError(f"cannot write image {path}")


def is_event_model(model: InferenceModel) -> bool:
    """A model trained on event frames (its config records the event input, or it has other than 3 channels)."""
    return bool(model.config.get("events")) or model.in_channels != 3


def source_mismatch(source: Source, event_model: bool) -> str | None:
    """Why ``source`` cannot go through the model (an event recording to an image model or the reverse)."""
    is_dat = source.kind == "events"
    if event_model and not is_dat:
        return "the model was trained on event recordings; give it event recordings (.dat, .raw, .aedat4, .es)"
    if is_dat and not event_model:
        return "an event recording, but the model was trained on images"
    return None


def output_stems(sources: list[Source]) -> list[str]:
    """The name each source's outputs are written under, distinct for every source, so no output overwrites
    another: its stem; where stems collide, ``<stem>_<ext>`` (``x.jpg``, ``x.png``); where those still collide,
    the folder in front (``a/x.png``, ``b/x.png`` -> ``a_x_png``, ``b_x_png``); then a counter."""
    def ext(s: Source) -> str:
        return Path(s.path).suffix.lstrip(".").lower()

    out = [s.name for s in sources]
    out = [n if out.count(n) == 1 else f"{n}_{ext(s)}" for n, s in zip(out, sources)]
    out = [n if out.count(n) == 1 else f"{Path(s.path).parent.name}_{n}".lstrip("_") for n, s in zip(out, sources)]
    taken, unique = set(out), []
    for n in out:
        if n in unique:
            k = 2
            while f"{n}_{k}" in taken:
                k += 1
            n = f"{n}_{k}"
            taken.add(n)
        unique.append(n)
    return unique


def predict_source(predictor: Predictor, source, save_dir: Path | None = None, save: bool = True,
                   save_txt: bool = True, save_json: bool = True, progress: bool = True, batch: int = 1,
                   vid_stride: int = 1, **event_kwargs) -> list[dict]:
    """Run ``predictor`` over every source ``source`` names (see :mod:`spikeyolo.engine.sources`) and write the
    outputs; returns one summary dict per source (skipped ones last). ``event_kwargs`` (``window_us``,
    ``step_us``, ``carry_state``) go to :func:`spikeyolo.engine.recordings.predict_recording` for event recordings."""
    sources = resolve_sources(source)
    stems = output_stems(sources)
    if save_dir is not None:
        save_dir.mkdir(parents=True, exist_ok=True)
        if save_txt:
            (save_dir / "labels").mkdir(exist_ok=True)
    skipped: list[dict] = []

    def skip(s: Source, reason: str) -> None:
        warnings.warn(f"{s.path}: {reason}; skipped", stacklevel=3)
        skipped.append({"source": s.path, "skipped": reason})

    event_model = is_event_model(predictor.model)
    usable = []
    for s, stem in zip(sources, stems):
        reason = source_mismatch(s, event_model)
        if reason:
            skip(s, reason)
        else:
            usable.append((s, stem))
    frames = [(s, stem) for s, stem in usable if s.kind != "events"]
    writers = [_SourceWriter(predictor, s, stem, save_dir, save, save_txt, save_json) for s, stem in frames]
    failed: set[int] = set()

    def unreadable(k: int, reason: str) -> None:
        failed.add(k)
        skip(frames[k][0], reason)

    bar = tqdm(desc="predict", unit="frame", disable=not progress or not frames)
    try:
        for k, r, image in iter_with_images(predictor, [s for s, _ in frames], batch, vid_stride, unreadable):
            writers[k].add(r, image)
            bar.update(1)
    finally:
        bar.close()
    summaries, k = [], 0
    for s, stem in usable:
        try:
            if s.kind == "events":
                summaries.append(_predict_events(predictor, Path(s.path), stem, save_dir, save, progress,
                                                 **event_kwargs))
            else:
                k += 1
                if k - 1 not in failed:
                    summaries.append(writers[k - 1].summary())
        except (OSError, SpikeYOLOError) as e:
            skip(s, str(e))
    return summaries + skipped


def _predict_events(predictor, f: Path, stem: str, save_dir, save, progress, **kwargs) -> dict:
    """An event recording: sliding windows of events through the model (spikeyolo.engine.recordings)."""
    out = (save_dir or f.parent) / f"{stem}_bbox.npy"
    video = save_dir / f"{stem}.mp4" if save_dir is not None and save else None
    dets = predict_recording(predictor.model, f, out, imgsz=predictor.imgsz, conf=predictor.conf,
                             iou=predictor.iou, max_det=predictor.max_det, video_path=video, names=predictor.names,
                             progress=progress, **kwargs)
    summary = {"source": str(f), "type": "events", "detections": int(len(dets)), "boxes": str(out)}
    if video is not None:
        summary["saved"] = str(video)
    return summary


def predict_to_folder(weights, source, imgsz: int | None = None, conf: float = 0.25, iou: float = 0.7,
                      max_det: int = 300, device=None, save: bool = True, save_txt: bool = True,
                      save_json: bool = True, project: str = "runs/detect", name: str = "predict",
                      progress: bool = True, exist_ok: bool = False, classes=None, batch: int = 1,
                      vid_stride: int = 1, window_us: int | None = None, step_us: int | None = None,
                      carry_state: bool = False, precision: str | None = None,
                      backend: str | None = None, calibration: str | Path | None = None) -> tuple[list[dict], Path]:
    """Load a checkpoint, predict on ``source`` and write the outputs into a new ``project/name`` folder.

    ``window_us``, ``step_us``, ``carry_state`` apply to event recordings only (ignored for images and videos);
    ``None`` takes the window the checkpoint was trained with (else 250 ms) and a 50 ms step (the window with
    ``carry_state``), see :func:`spikeyolo.engine.recordings.predict_recording`. ``weights`` may be a ``.onnx``
    deploy export; ``precision`` / ``backend`` run the deploy form (``calibration``: images for int8).

    Returns ``(per-source summaries, save_dir)``.
    """
    predictor = load_predictor(weights, imgsz, conf, iou, max_det, device, classes, precision, backend,
                               calibration)
    sources = resolve_sources(source)  # fails on a bad source before a run folder is created
    event_model = is_event_model(predictor.model)
    reasons = [source_mismatch(s, event_model) for s in sources]
    if all(reasons):  # nothing this model can read: one line, and no run folder
        raise InputError(f"{sources[0].path if len(sources) == 1 else source}: {reasons[0]}")
    existed = (Path(project) / name).is_dir() and exist_ok
    save_dir = increment_path(Path(project) / name, exist_ok)
    event_kwargs = {"window_us": window_us, "step_us": step_us, "carry_state": carry_state}
    try:
        return predict_source(predictor, sources, save_dir, save, save_txt, save_json, progress, batch,
                              vid_stride, **event_kwargs), save_dir
    finally:
        if not existed:
            remove_if_empty(save_dir)


def remove_if_empty(save_dir: Path) -> None:
    """Remove a run folder this run made that holds nothing (an empty ``labels/`` at most): a dead URL, webcam
    or camera file leaves no empty folder behind. Never removes a file."""
    if not save_dir.is_dir():
        return
    labels = save_dir / "labels"
    if [p.name for p in save_dir.iterdir()] == ["labels"] and labels.is_dir() and not any(labels.iterdir()):
        labels.rmdir()
    if not any(save_dir.iterdir()):
        save_dir.rmdir()
