"""Prediction on images, folders and videos (``spikeyolo predict``).

Each frame is letterboxed to ``imgsz``, run through the model (eval mode), suppressed (NMS), and its boxes are
mapped back to the frame's pixels. Videos are read frame by frame with ``cv2.VideoCapture`` (never loaded
whole) and written back annotated with ``cv2.VideoWriter``. Event recordings (``.dat``; with the ``[events]``
extra also Metavision ``.raw`` EVT 2.0/3.0, ``.aedat4``, ``.es``) are handed to
``spikeyolo.engine.stream.predict_recording``: sliding windows with the window, T and representation the model
was trained with (``model.config["events"]``, else that function's defaults), written as ``<stem>_bbox.npy``.

Outputs under ``save_dir`` (when saving): the annotated image or video under its own name,
``labels/<stem>.txt`` (videos: ``labels/<stem>_<frame>.txt``) with one ``cls cx cy w h conf`` row per box
(normalized to the frame), and ``<stem>.json`` per source: its detections (per frame for a video). Two sources
with the same stem (``x.jpg``, ``x.png``) write under ``<stem>_<ext>`` (``x_jpg``, ``x_png``) instead.
A file that cannot be read is skipped with a warning (listed in the summaries), never the whole folder.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import cv2
import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from ..boxes import clip_boxes, unletterbox
from ..data.augment import letterbox
from ..data.labels import IMG_EXTS
from ..deploy import inference_imgsz, load_for_inference
from ..errors import InputError, SpikeYOLOError
from ..events.readers import RECORDING_EXTS
from ..nms import non_max_suppression
from ..plots import draw_boxes
from ..runs import increment_path, select_device
from .stream import predict_recording
from .validator import require_finite

VIDEO_EXTS = (".mp4", ".avi", ".mov", ".mkv", ".m4v", ".mpg", ".mpeg", ".webm")
EVENT_EXTS = RECORDING_EXTS  # .dat; .raw (EVT 2.0/3.0), .aedat4, .es with the [events] extra


def list_sources(source: str | Path) -> list[Path]:
    """An image, video or recording file, or every such file in a folder (sorted)."""
    p = Path(source)
    if p.is_dir():
        files = sorted(q for q in p.iterdir() if q.suffix.lower() in IMG_EXTS + VIDEO_EXTS + EVENT_EXTS)
        if not files:
            raise FileNotFoundError(f"no image, video or event recording in folder {p}")
        return files
    if not p.is_file():
        raise FileNotFoundError(f"source not found: {p}")
    if p.suffix.lower() not in IMG_EXTS + VIDEO_EXTS + EVENT_EXTS:
        raise ValueError(f"{p}: unsupported source type {p.suffix!r} (images {IMG_EXTS}, videos {VIDEO_EXTS}, "
                         f"event recordings {EVENT_EXTS})")
    return [p]


def yolo_lines(det: np.ndarray, shape: tuple[int, int]) -> list[str]:
    """``det [n, 6]`` (x1, y1, x2, y2, conf, cls in pixels) -> ``cls cx cy w h conf`` rows normalized to ``shape``."""
    h, w = shape
    rows = []
    for x1, y1, x2, y2, conf, c in det.tolist():
        rows.append(f"{int(c)} {(x1 + x2) / 2 / w:.6f} {(y1 + y2) / 2 / h:.6f} {(x2 - x1) / w:.6f} "
                    f"{(y2 - y1) / h:.6f} {conf:.5f}")
    return rows


def detections_json(det: np.ndarray, names) -> list[dict]:
    out = []
    for x1, y1, x2, y2, conf, c in det.tolist():
        name = names[int(c)] if int(c) < len(names) else str(int(c))
        out.append({"class": int(c), "name": name, "confidence": round(conf, 5),
                    "box_xyxy": [round(v, 2) for v in (x1, y1, x2, y2)]})
    return out


class Predictor:
    """Detections of a model on BGR frames.

    Args:
        model: a SpikeYOLO (any form) returning ``[B, 4 + nc, A]`` in eval mode.
        imgsz: square input size (a multiple of 32).
        conf, iou, max_det: NMS settings (0.25, 0.7, 300 by default for prediction).
        device: where the model runs.
    """

    def __init__(self, model: nn.Module, imgsz: int = 640, conf: float = 0.25, iou: float = 0.7,
                 max_det: int = 300, device="cpu"):
        self.device = torch.device(device)
        self.model = model.to(self.device).eval()
        self.imgsz, self.conf, self.iou, self.max_det = int(imgsz), conf, iou, max_det
        self.names = list(getattr(model, "names", None) or [str(i) for i in range(getattr(model, "nc", 80))])

    @torch.no_grad()
    def __call__(self, frames: list[np.ndarray]) -> list[np.ndarray]:
        """BGR uint8 frames -> per frame ``[n, 6]`` float arrays (x1, y1, x2, y2, conf, cls) in frame pixels."""
        inputs, metas = [], []
        for f in frames:
            if f.ndim == 2:
                f = cv2.cvtColor(f, cv2.COLOR_GRAY2BGR)
            img, gain, pad = letterbox(f[..., :3], self.imgsz)
            inputs.append(torch.from_numpy(np.ascontiguousarray(img[..., ::-1].transpose(2, 0, 1))))
            metas.append(((gain, pad), f.shape[:2]))
        x = torch.stack(inputs).to(self.device).float() / 255.0
        require_finite(x, "the frames given to the predictor")
        out = self.model(x)
        dets = non_max_suppression(out.float(), self.conf, self.iou, self.max_det)
        results = []
        for d, (ratio_pad, shape) in zip(dets, metas):
            d = d.detach().float().cpu()
            d[:, :4] = clip_boxes(unletterbox(d[:, :4], ratio_pad), shape)
            results.append(d.numpy())
        return results

    def draw(self, frame: np.ndarray, det: np.ndarray) -> np.ndarray:
        return draw_boxes(frame, det[:, :4], det[:, 5], det[:, 4], self.names)


def is_event_model(model: nn.Module) -> bool:
    """A model trained on event frames (its config records the event input, or it has other than 3 channels)."""
    config = getattr(model, "config", None) or {}
    return bool(config.get("events")) or int(config.get("in_channels", 3)) != 3


def source_mismatch(f: Path, event_model: bool) -> str | None:
    """Why ``f`` cannot go through the model (an event recording to an image model or the reverse), or None."""
    is_dat = f.suffix.lower() in EVENT_EXTS
    if event_model and not is_dat:
        return "the model was trained on event recordings; give it .dat files"
    if is_dat and not event_model:
        return "an event recording, but the model was trained on images"
    return None


def output_stems(files: list[Path]) -> dict[Path, str]:
    """The name each source's outputs are written under: its stem, or ``<stem>_<ext>`` where two sources share a
    stem (``x.jpg`` and ``x.png``), so no output overwrites another."""
    count: dict[str, int] = {}
    for f in files:
        count[f.stem] = count.get(f.stem, 0) + 1
    return {f: f.stem if count[f.stem] == 1 else f"{f.stem}_{f.suffix.lstrip('.').lower()}" for f in files}


def predict_source(predictor: Predictor, source: str | Path, save_dir: Path | None = None, save: bool = True,
                   save_txt: bool = True, save_json: bool = True, progress: bool = True, batch: int = 1,
                   **event_kwargs) -> list[dict]:
    """Run ``predictor`` over an image, a folder, a video or an event recording; returns one summary dict per
    source file. ``event_kwargs`` (e.g. ``window_us``, ``step_us``, ``carry_state``) go to
    :func:`spikeyolo.engine.stream.predict_recording` for event recordings and are ignored for the others.

    A file that cannot be read, or does not suit the model (an image for an event model or the reverse), is
    skipped with a warning: its summary is ``{"source", "skipped": reason}``; one bad file never stops a folder.
    """
    files = list_sources(source)
    stems = output_stems(files)
    event_model = is_event_model(predictor.model)
    if save_dir is not None:
        save_dir.mkdir(parents=True, exist_ok=True)
        if save_txt:
            (save_dir / "labels").mkdir(exist_ok=True)
    summaries, skipped = [], []

    def skip(f: Path, reason: str) -> None:
        warnings.warn(f"{f}: {reason}; skipped", stacklevel=3)
        skipped.append({"source": str(f), "skipped": reason})

    usable = []
    for f in files:
        reason = source_mismatch(f, event_model)
        if reason:
            skip(f, reason)
        else:
            usable.append(f)
    images = [f for f in usable if f.suffix.lower() in IMG_EXTS]
    for k in tqdm(range(0, len(images), batch), desc="images", unit="img", disable=not progress or not images):
        chunk, frames = [], []
        for f in images[k : k + batch]:
            im = cv2.imread(str(f), cv2.IMREAD_COLOR)
            if im is None:
                skip(f, "cannot read the image (missing, empty or not an image)")
                continue
            chunk.append(f)
            frames.append(im)
        if frames:
            for f, im, det in zip(chunk, frames, predictor(frames)):
                summaries.append(_save_image(predictor, f, stems[f], im, det, save_dir, save, save_txt, save_json))
    for f in usable:
        try:
            if f.suffix.lower() in VIDEO_EXTS:
                summaries.append(_predict_video(predictor, f, stems[f], save_dir, save, save_txt, save_json,
                                                progress))
            elif f.suffix.lower() in EVENT_EXTS:
                summaries.append(_predict_events(predictor, f, stems[f], save_dir, save, progress, **event_kwargs))
        except (OSError, SpikeYOLOError) as e:
            skip(f, str(e))
    return summaries + skipped


def _save_image(predictor, f: Path, stem: str, im, det, save_dir, save, save_txt, save_json) -> dict:
    summary = {"source": str(f), "type": "image", "shape": list(im.shape[:2]), "detections": len(det)}
    if save_dir is None:
        return summary
    if save:
        out = save_dir / f.name
        cv2.imwrite(str(out), predictor.draw(im, det))
        summary["saved"] = str(out)
    if save_txt:
        (save_dir / "labels" / f"{stem}.txt").write_text("".join(r + "\n" for r in yolo_lines(det, im.shape[:2])))
    if save_json:
        js = {"source": str(f), "shape": list(im.shape[:2]), "detections": detections_json(det, predictor.names)}
        (save_dir / f"{stem}.json").write_text(json.dumps(js))
    return summary


def _predict_video(predictor, f: Path, stem: str, save_dir, save, save_txt, save_json, progress) -> dict:
    cap = cv2.VideoCapture(str(f))
    if not cap.isOpened():
        raise OSError(f"cannot open video {f}")
    fps = cap.get(cv2.CAP_PROP_FPS) or 30.0
    total = int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) or None
    writer, frames_json, n, n_det = None, [], 0, 0
    out_path = save_dir / f"{stem}.mp4" if save_dir is not None else None
    bar = tqdm(total=total, desc=f.name, unit="frame", disable=not progress)
    try:
        while True:
            ok, frame = cap.read()
            if not ok:
                break
            det = predictor([frame])[0]
            n_det += len(det)
            if save_dir is not None:
                if save:
                    if writer is None:
                        h, w = frame.shape[:2]
                        writer = cv2.VideoWriter(str(out_path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (w, h))
                    writer.write(predictor.draw(frame, det))
                if save_txt:
                    rows = yolo_lines(det, frame.shape[:2])
                    (save_dir / "labels" / f"{stem}_{n}.txt").write_text("".join(r + "\n" for r in rows))
                if save_json:
                    frames_json.append({"frame": n, "detections": detections_json(det, predictor.names)})
            n += 1
            bar.update(1)
    finally:
        bar.close()
        cap.release()
        if writer is not None:
            writer.release()
    if n == 0:
        raise OSError(f"no frame could be read from video {f}")
    summary = {"source": str(f), "type": "video", "frames": n, "fps": fps, "detections": n_det}
    if save_dir is not None and save:
        summary["saved"] = str(out_path)
    if save_dir is not None and save_json:
        (save_dir / f"{stem}.json").write_text(json.dumps({"source": str(f), "fps": fps, "frames": frames_json}))
    return summary


def _predict_events(predictor, f: Path, stem: str, save_dir, save, progress, **kwargs) -> dict:
    """An event recording: sliding windows of events through the model (spikeyolo.engine.stream)."""
    model = predictor.model
    out = (save_dir or f.parent) / f"{stem}_bbox.npy"
    video = save_dir / f"{stem}.mp4" if save_dir is not None and save else None
    dets = predict_recording(model, f, out, imgsz=predictor.imgsz, conf=predictor.conf, iou=predictor.iou,
                             max_det=predictor.max_det, video_path=video, names=predictor.names, progress=progress,
                             **kwargs)
    summary = {"source": str(f), "type": "events", "detections": int(len(dets)), "boxes": str(out)}
    if video is not None:
        summary["saved"] = str(video)
    return summary


def predict(weights, source, imgsz: int | None = None, conf: float = 0.25, iou: float = 0.7, max_det: int = 300,
            device=None, save: bool = True, save_txt: bool = True, save_json: bool = True,
            project: str = "runs/detect", name: str = "predict", progress: bool = True,
            exist_ok: bool = False, window_us: int | None = None, step_us: int | None = None,
            carry_state: bool = False, precision: str | None = None, backend: str | None = None,
            ) -> tuple[list[dict], Path]:
    """Load a checkpoint and predict on ``source``; outputs go to a new ``project/name`` folder.

    ``window_us``, ``step_us``, ``carry_state`` apply to event recordings only (ignored for images and videos);
    ``None`` takes the window the checkpoint was trained with (else 250 ms) and a 50 ms step (the window with
    ``carry_state``), see :func:`spikeyolo.engine.stream.predict_recording`.

    ``weights`` may be a ``.onnx`` deploy export; ``precision`` / ``backend`` run the deploy form.

    Returns ``(per-source summaries, save_dir)``.
    """
    dev = select_device(device)
    imgsz = int(imgsz or inference_imgsz(weights))
    model = load_for_inference(weights, precision, backend, imgsz, dev)
    predictor = Predictor(model, imgsz, conf, iou, max_det, dev)
    files = list_sources(source)  # fails on a bad source before a run folder is created
    event_model = is_event_model(predictor.model)
    reasons = [source_mismatch(f, event_model) for f in files]
    if all(reasons):  # nothing this model can read: one line, and no run folder
        raise InputError(f"{files[0] if len(files) == 1 else source}: {reasons[0]}")
    save_dir = increment_path(Path(project) / name, exist_ok)
    event_kwargs = {"window_us": window_us, "step_us": step_us, "carry_state": carry_state}
    return predict_source(predictor, source, save_dir, save, save_txt, save_json, progress, **event_kwargs), save_dir
