"""Prediction: the Python API (:func:`predict`, :class:`Result`) and ``spikeyolo predict``'s outputs.

Each frame is letterboxed to ``imgsz``, run through the model (eval mode), suppressed (NMS, optionally only
some ``classes``), and its boxes are mapped back to the frame's pixels. Sources (files, folders, globs,
``.txt`` lists, webcams, stream URLs) are resolved by :mod:`spikeyolo.engine.sources`; videos and streams are
read frame by frame (every ``vid_stride``-th), frames and images go through the model ``batch`` at a time.
Event recordings (``.dat``; ``.raw``, ``.aedat4``, ``.es`` with the ``[events]`` extra) are handed to
``spikeyolo.engine.recordings.predict_recording``: sliding windows with
the window, T and representation the model was trained with (``model.config["events"]``), written as
``<stem>_bbox.npy``.

Outputs of :func:`predict_to_folder` under ``save_dir`` (when saving): the annotated image or video under its
own name, ``labels/<stem>.txt`` (videos: ``labels/<stem>_<frame>.txt``) with one ``cls cx cy w h conf`` row
per box (normalized to the frame), and ``<stem>.json`` per source: its detections (per frame for a video).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
from torch import nn

from ..data.augment import bgr_to_rgb_chw, letterbox
from ..data.calibration import calibration_images
from ..inference import InferenceModel
from ..utils.boxes import clip_boxes, unletterbox
from ..utils.nms import non_max_suppression
from ..utils.plots import draw_boxes
from ..utils.runs import select_device
from .sources import Source, open_capture, read_frames, read_image_file, resolve_sources
from .validator import require_finite


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


@dataclass
class Result:
    """Detections on one image or video frame, in its own pixels.

    ``boxes [n, 4]`` xyxy float32, ``scores [n]`` float32, ``classes [n]`` int64, ``names`` the model's class
    names (``labels`` gives each box's), ``path`` the source (file, URL or webcam index), ``frame`` the frame
    index in a video or stream (``None`` for an image), ``shape`` (h, w), ``fps`` of the video after
    ``vid_stride`` (``None`` for an image).
    """

    path: str
    frame: int | None
    shape: tuple[int, int]
    boxes: np.ndarray
    scores: np.ndarray
    classes: np.ndarray
    names: list[str]
    fps: float | None = None

    def __len__(self) -> int:
        return len(self.boxes)

    @property
    def labels(self) -> list[str]:
        return [self.names[c] if 0 <= c < len(self.names) else str(c) for c in self.classes.tolist()]

    @property
    def det(self) -> np.ndarray:
        """``[n, 6]``: x1, y1, x2, y2, score, class (the NMS layout)."""
        return np.concatenate((self.boxes, self.scores[:, None], self.classes[:, None].astype(np.float32)), 1)

    def to_dict(self) -> dict:
        return {"path": self.path, "frame": self.frame, "shape": list(self.shape),
                "detections": detections_json(self.det, self.names)}


class Predictor:
    """Detections of a model on BGR frames.

    Args:
        model: an :class:`~spikeyolo.inference.InferenceModel`, or a network it wraps (a SpikeYOLO in any form,
            an ONNX Runtime model) returning ``[B, 4 + nc, A]`` in eval mode.
        imgsz: square input size (a multiple of 32; None: the model's).
        conf, iou, max_det: NMS settings (0.25, 0.7, 300 by default for prediction).
        device: where the model runs.
        classes: keep only these class ids (``None``: all).
    """

    def __init__(self, model: nn.Module, imgsz: int | None = None, conf: float = 0.25, iou: float = 0.7,
                 max_det: int = 300, device="cpu", classes: Iterable[int] | None = None):
        self.device = torch.device(device)
        self.model = InferenceModel.of(model, imgsz).to(self.device).eval()
        self.imgsz, self.conf, self.iou, self.max_det = int(self.model.imgsz), conf, iou, max_det
        self.names = self.model.names
        self.classes = None if classes is None else [int(c) for c in classes]
        bad = [c for c in self.classes or [] if not 0 <= c < len(self.names)]
        if bad:
            raise ValueError(f"classes {bad} out of range: the model detects {len(self.names)} classes")

    @torch.no_grad()
    def __call__(self, frames: list[np.ndarray]) -> list[np.ndarray]:
        """BGR uint8 frames -> per frame ``[n, 6]`` float arrays (x1, y1, x2, y2, conf, cls) in frame pixels."""
        inputs, metas = [], []
        for f in frames:
            if f.ndim == 2:
                f = cv2.cvtColor(f, cv2.COLOR_GRAY2BGR)
            img, gain, pad = letterbox(f[..., :3], self.imgsz)
            inputs.append(torch.from_numpy(bgr_to_rgb_chw(img)))
            metas.append(((gain, pad), f.shape[:2]))
        x = torch.stack(inputs).to(self.device).float() / 255.0
        require_finite(x, "the frames given to the predictor")
        out = self.model(x)
        dets = non_max_suppression(out.float(), self.conf, self.iou, self.max_det, classes=self.classes)
        results = []
        for d, (ratio_pad, shape) in zip(dets, metas):
            d = d.detach().float().cpu()
            d[:, :4] = clip_boxes(unletterbox(d[:, :4], ratio_pad), shape)
            results.append(d.numpy())
        return results

    def draw(self, frame: np.ndarray, det: np.ndarray) -> np.ndarray:
        return draw_boxes(frame, det[:, :4], det[:, 5], det[:, 4], self.names)

    def results(self, items: list[tuple[str, int | None, np.ndarray, float | None]]) -> list[Result]:
        """``(path, frame, BGR image, fps)`` items -> one :class:`Result` each (one forward for all)."""
        dets = self([im for _, _, im, _ in items])
        return [Result(path, frame, tuple(im.shape[:2]), d[:, :4].astype(np.float32), d[:, 4].astype(np.float32),
                       d[:, 5].astype(np.int64), self.names, fps) for (path, frame, im, fps), d in zip(items, dets)]


def _frames(sources: list[Source], vid_stride: int, skip=None):
    """``(source index, (path, frame, BGR image, fps))`` of every image and kept video/stream frame.

    ``skip(index, reason)``: called for a source that cannot be read (then the others go on); None: raise."""
    for k, s in enumerate(sources):
        try:
            if s.kind == "image":
                image = read_image_file(s.path)
            elif s.kind in ("video", "stream"):
                cap = open_capture(s)
        except OSError as e:
            if skip is None:
                raise
            skip(k, str(e))
            continue
        if s.kind == "image":
            yield k, (s.path, None, image, None)
        elif s.kind in ("video", "stream"):
            fps = (cap.get(cv2.CAP_PROP_FPS) or 30.0) / vid_stride
            try:
                for n, frame in read_frames(cap, vid_stride):
                    yield k, (s.path, n, frame, fps)
            finally:
                cap.release()
        else:
            raise ValueError(f"{s.path}: event recordings give detections per time window, not per image; use "
                             "`spikeyolo predict --source` on it, or spikeyolo.engine.recordings.predict_recording")


def iter_with_images(predictor: Predictor, sources: list[Source], batch: int = 1, vid_stride: int = 1,
                     skip=None) -> Iterator[tuple[int, Result, np.ndarray]]:
    """``(source index, Result, BGR image)`` of every image and kept frame, in order, ``batch`` a forward
    (``skip``: see :func:`_frames`)."""
    if batch < 1:
        raise ValueError(f"batch must be >= 1, got {batch}")
    buf: list = []
    for k, item in _frames(sources, vid_stride, skip):
        buf.append((k, item))
        if len(buf) == batch:
            yield from _run(predictor, buf)
            buf = []
    if buf:
        yield from _run(predictor, buf)


def _run(predictor: Predictor, buf: list):
    results = predictor.results([item for _, item in buf])
    return ((k, r, item[2]) for (k, item), r in zip(buf, results))


def iter_results(predictor: Predictor, sources: list[Source], batch: int = 1, vid_stride: int = 1
                 ) -> Iterator[Result]:
    """:class:`Result` of every image and every kept video/stream frame, in order, ``batch`` frames a forward."""
    return (r for _, r, _ in iter_with_images(predictor, sources, batch, vid_stride))


def load_predictor(weights, imgsz, conf, iou, max_det, device, classes, precision: str | None = None,
                   backend: str | None = None, calibration: str | Path | None = None) -> Predictor:
    """A :class:`Predictor` of a loaded model, a checkpoint, or a ``.onnx`` export, each file read once
    (:meth:`InferenceModel.load`; ``precision`` / ``backend`` run the deploy form; ``calibration`` images
    correct the int8 biases)."""
    dev = select_device(device)
    images = None if calibration is None else lambda size: calibration_images(calibration, size)
    model = InferenceModel.load(weights, precision, backend, imgsz, dev, images)
    return Predictor(model, None, conf, iou, max_det, dev, classes)


def predict(weights, source, imgsz: int | None = None, conf: float = 0.25, iou: float = 0.7, max_det: int = 300,
            device=None, classes: Iterable[int] | None = None, batch: int = 1, vid_stride: int = 1,
            stream: bool = False, precision: str | None = None, backend: str | None = None,
            calibration: str | Path | None = None) -> list[Result] | Iterator[Result]:
    """Detect objects; returns one :class:`Result` per image or video frame (nothing is written to disk).

    Args:
        weights: a checkpoint path (``best.pt``), a ``.onnx`` export, or a loaded model.
        source: an image, video, folder, glob pattern, ``.txt`` list of files, webcam index, stream URL, a
            BGR ``uint8`` numpy image, or a list of any of these (see :mod:`spikeyolo.engine.sources`).
        imgsz: input size (default: the size the checkpoint was trained at).
        conf, iou, max_det: NMS settings. classes: keep only these class ids.
        batch: frames per forward pass. vid_stride: keep every n-th video/stream frame.
        stream: return a generator (use it for webcams and long videos: memory stays bounded).
        precision, backend: run the deploy form (``fp32`` / ``bf16`` / ``int8``; ``torch`` / ``onnxruntime``;
            see :func:`spikeyolo.deploy`); ``calibration``: images (folder, list or glob) correcting int8 biases.

    Example::

        for r in spikeyolo.predict("best.pt", "photos/*.jpg"):
            for box, score, name in zip(r.boxes, r.scores, r.labels):
                print(r.path, name, round(float(score), 2), box.round(1).tolist())
    """
    predictor = load_predictor(weights, imgsz, conf, iou, max_det, device, classes, precision, backend, calibration)
    items = source if isinstance(source, list) else [source]
    if all(isinstance(s, np.ndarray) for s in items):
        arrays = [(f"image{i}", None, im, None) for i, im in enumerate(items)]
        gen = (r for k in range(0, len(arrays), batch) for r in predictor.results(arrays[k: k + batch]))
    else:
        gen = iter_results(predictor, resolve_sources(source), batch, vid_stride)
    return gen if stream else list(gen)
