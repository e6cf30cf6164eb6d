"""Detection over a whole recording: windows ``[t - window_us, t)`` for ``t = t_start + window_us, + step_us,
...``, each turned into ``T`` frames, letterboxed and run through the model; detections are written as a
Prophesee ``_bbox.npy`` (timestamp = window end ``t``, sensor pixels) and, optionally, drawn into an mp4.

With ``carry_state=True`` the spiking neurons keep their membrane potentials from one window to the next
(:func:`spikeyolo.nn.neuron.carrying_state`); windows are then fed one at a time in time order, and should not
overlap (``step_us == window_us``, the default then), otherwise events are seen twice.

Settings left as ``None`` come from the model: a model trained on an event dataset carries
``model.config["events"] = {"window_us", "representation", "representation_opts"}`` (written by the trainer,
saved in its checkpoints) and ``model.config["T"]``; models without them (trained on images, or imported
official weights) fall back to a 250 ms window, ``T = 4`` and a representation guessed from the input channel
count.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import cv2
import numpy as np
import torch
from tqdm import tqdm

from ..data.gen1 import downsample_events, letterbox_frames
from ..data.protocol import EventDetectionItems, is_event_dataset
from ..events.io import BBOX_DTYPE, write_bbox, xyxy_to_bbox
from ..events.prophesee import evaluate_prophesee
from ..events.readers import open_recording
from ..events.representations import EventInput, events_to_frames, representation_channels
from ..inference import InferenceModel
from ..nn.neuron import set_carry_state
from ..utils.boxes import clip_boxes, unletterbox
from ..utils.errors import InputError
from ..utils.nms import non_max_suppression

DEFAULT_STEP_US = 50_000
VIDEO_SCALE = 2  # the mp4 shows each window enlarged this many times (render_window's scale)


def event_settings(dataset) -> dict | None:
    """The checkpoint entry ``config["events"]`` for a dataset: its :class:`EventInput` as plain data, or
    ``None`` for image datasets (they have no ``events``)."""
    if not is_event_dataset(dataset):
        return None
    config = dataset.events.to_config()
    if isinstance(dataset, EventDetectionItems) and dataset.downsample != 1:  # Gen4 as RVT: frames on the sensor halved
        config["downsample"] = int(dataset.downsample)
    return config


def render_window(events, height: int, width: int, boxes_xyxy=None, cls=None, scores=None, names=None,
                  scale: int = 2) -> np.ndarray:
    """A BGR uint8 picture of a window: grey background, pixels with more ON events white, more OFF black;
    boxes (sensor pixels) drawn in green with ``name score``. Enlarged ``scale`` times."""
    on = np.bincount(events["y"].astype(np.int64) * width + events["x"], weights=events["p"] > 0,
                     minlength=height * width)[: height * width]
    off = np.bincount(events["y"].astype(np.int64) * width + events["x"], weights=events["p"] == 0,
                      minlength=height * width)[: height * width]
    img = np.full(height * width, 127, np.uint8)
    img[on > off] = 255
    img[off > on] = 0
    img = cv2.cvtColor(img.reshape(height, width), cv2.COLOR_GRAY2BGR)
    img = cv2.resize(img, (width * scale, height * scale), interpolation=cv2.INTER_NEAREST)
    if boxes_xyxy is not None:
        for k, b in enumerate(np.asarray(boxes_xyxy).reshape(-1, 4)):
            p1 = (int(b[0] * scale), int(b[1] * scale))
            p2 = (int(b[2] * scale), int(b[3] * scale))
            cv2.rectangle(img, p1, p2, (0, 200, 0), 2)
            if cls is not None:
                c = int(cls[k])
                label = str(names[c]) if names is not None and c < len(names) else str(c)
                if scores is not None:
                    label += f" {float(scores[k]):.2f}"
                cv2.putText(img, label, (p1[0], max(10, p1[1] - 3)), cv2.FONT_HERSHEY_SIMPLEX, 0.4,
                            (0, 200, 0), 1, cv2.LINE_AA)
    return img


def infer_representation(model, representation: str | None = None, opts: dict | None = None):
    """``(kind, opts)`` for a model. The kind: the given one, else the one it was trained with
    (``model.config["events"]``), else by channel count: 2 -> ``counts``, 3 -> ``spikeyolo``, 2k ->
    ``histogram`` with ``bins=k``. The options: the given ones (``{}`` means none), else the trained ones when
    the kind is the trained one, else none (options such as ``norm`` cannot be guessed). The kind is checked
    against ``model.in_channels``. ``model``: an :class:`~spikeyolo.inference.InferenceModel` (or anything with
    ``config`` and ``in_channels``)."""
    trained = EventInput.from_checkpoint(model.config)
    c = model.in_channels
    if representation is None and trained is not None:
        representation = trained.representation
    if opts is None:
        same = trained is not None and representation == trained.representation
        opts = trained.opts if same else None
    opts = dict(opts or {})
    if representation is None:
        if c == 2:
            representation = "counts"
        elif c == 3:
            representation = "spikeyolo"
        elif int(c) % 2 == 0:
            representation = "histogram"
            opts.setdefault("bins", int(c) // 2)
        else:
            raise ValueError(f"no event representation has {c} channels; pass representation=...")
    have = representation_channels(representation, **opts)
    if int(c) != have:
        raise ValueError(f"representation {representation!r} {opts or ''} gives {have} channels but the model "
                         f"takes {int(c)}")
    return representation, opts


def model_event_input(model, window_us: int | None = None, T: int | None = None,
                      representation: str | None = None, options: dict | None = None) -> EventInput:
    """The event input for ``model``: the settings given here, else those it was trained with
    (:meth:`EventInput.from_checkpoint`), else the defaults; ``T`` else ``model.T``; the representation from
    :func:`infer_representation`."""
    trained = EventInput.from_checkpoint(model.config) or EventInput()
    kind, opts = infer_representation(model, representation, options)
    window_us = trained.window_us if window_us is None else int(window_us)
    T = model.T if T is None else int(T)
    if window_us <= 0 or T < 1:
        raise ValueError(f"need window_us > 0 and T >= 1, got {window_us}, {T}")
    return EventInput(window_us=window_us, T=T, representation=kind, options=opts)


def _window_ends(reader, window_us: int, step_us: int, t_start, t_end, window_ends):
    """Window ends, lazily (a ``range``: windows are read on demand, batch by batch). Without ``t_start`` the
    grid starts at 0 from the first window holding an event (a camera's clock may start hours from 0)."""
    if window_ends is not None:
        return [int(t) for t in window_ends]
    first = reader.t_first
    if t_start is not None:
        t0 = int(t_start)
    else:
        t0 = 0 if first is None else max(0, (first - window_us) // step_us + 1) * step_us
    t_last = (reader.t_last + 1) if first is not None else t0 + window_us
    t_end = t_last if t_end is None else int(t_end)
    return range(t0 + window_us, t_end + 1, step_us)


def _video_writer(video_path, fps: float, height: int, width: int, scale: int):
    Path(video_path).parent.mkdir(parents=True, exist_ok=True)
    writer = cv2.VideoWriter(str(video_path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (scale * width, scale * height))
    if not writer.isOpened():
        raise RuntimeError(f"{video_path}: cannot open an mp4 writer (OpenCV without video support?)")
    return writer


def _sensor_detections(pred, ratio_pad, hw, conf, iou, max_det, downsample: int = 1):
    """NMS, then boxes back to sensor pixels (input pixels x ``downsample``; kept when not empty after
    clipping): ``[(xyxy, [n, 6])]``."""
    out = []
    for d in non_max_suppression(pred, conf_thres=conf, iou_thres=iou, max_det=max_det):
        d = d.detach().float().cpu().reshape(-1, 6)
        b = clip_boxes(unletterbox(d[:, :4], ratio_pad) * downsample, hw).numpy()
        d = d.numpy()
        ok = (b[:, 2] > b[:, 0]) & (b[:, 3] > b[:, 1])
        out.append((b[ok], d[ok]))
    return out


@torch.no_grad()
def predict_recording(model, dat_path, out_path, window_us: int | None = None, step_us: int | None = None,
                      T: int | None = None, representation: str | None = None, imgsz: int = 320, conf: float = 0.25,
                      iou: float = 0.7, carry_state: bool = False, max_det: int = 300, batch: int = 8,
                      representation_opts: dict | None = None, t_start: int | None = None,
                      t_end: int | None = None, video_path=None, video_fps: float | None = None,
                      names=None, progress: bool = True, window_ends=None,
                      downsample: int | None = None) -> np.ndarray:
    """Run ``model`` (eval mode; ``model(x [B, T, C, imgsz, imgsz]) -> [B, 4 + nc, A]``) over the recording
    ``dat_path`` and write the detections to ``out_path`` (a ``_bbox.npy``: ``t`` = window end, ``x, y, w, h``
    sensor pixels, ``class_id``, ``confidence``, ``track_id`` 0). Returns the detections (:data:`BBOX_DTYPE`).

    The recording is a ``.dat`` (memory-mapped) or, with the ``[events]`` extra, a Metavision ``.raw`` (EVT 2.0
    / 3.0), ``.aedat4`` or ``.es`` file (decoded as a stream by faery); the sensor size comes from the file
    (:func:`spikeyolo.events.readers.open_recording`). Windows are read on demand, one batch at a time, so
    memory stays bounded however long the recording is; a progress bar counts the windows.

    Windows end at ``t_start + window_us + k * step_us`` up to ``t_end`` (default: last event + 1);
    ``t_start`` defaults to 0 with the windows that end at or before the first event skipped; ``window_ends``
    (increasing microseconds) gives them explicitly instead, e.g. the label timestamps. ``None`` settings come
    from the model (see the module docstring): ``window_us`` from ``model.config["events"]`` (else 250 ms),
    ``T`` from ``model.T`` (else 4), the representation and its options from :func:`infer_representation`;
    ``step_us`` defaults to 50 ms, or to ``window_us`` with ``carry_state``; ``downsample`` (from the model's
    ``events`` settings, else 1; Gen4 models trained as RVT: 2) builds the frames on a sensor that many times
    smaller, as training did (boxes are still written in sensor pixels). ``video_path``: also write an mp4
    of every window with its boxes (frame by frame).
    """
    model = InferenceModel.of(model)
    ev_in = model_event_input(model, window_us, T, representation, representation_opts)
    window_us = ev_in.window_us
    step_us = int(step_us if step_us is not None else window_us if carry_state else DEFAULT_STEP_US)
    if step_us <= 0:
        raise ValueError(f"need step_us > 0, got {step_us}")
    if carry_state and step_us != window_us:
        warnings.warn(f"carry_state with step_us={step_us} != window_us={window_us}: windows overlap or "
                      "leave gaps, so the carried state sees events twice or misses some", stacklevel=2)
    if carry_state and model.backend != "torch":
        raise InputError(f"carry_state keeps I-LIF membranes between windows; a {model.backend} model keeps none "
                         f"(use a checkpoint)")
    f = int(downsample or (model.config.get("events") or {}).get("downsample") or 1)
    reader = open_recording(dat_path)
    ends = _window_ends(reader, window_us, step_us, t_start, t_end, window_ends)
    writer = None if video_path is None else _video_writer(video_path, video_fps or 1e6 / step_us,
                                                          reader.height, reader.width, VIDEO_SCALE)
    was_training = model.training
    model.eval()
    results = []
    bar = tqdm(total=len(ends), desc=f"predict {Path(dat_path).name}", disable=not progress)
    batch = 1 if carry_state else batch  # the state runs through the windows in time order
    if carry_state:
        set_carry_state(model.net, True)  # from rest
    try:
        for a in range(0, len(ends), batch):
            chunk = ends[a:a + batch]
            results += _run_windows(model, reader, chunk, ev_in, f, imgsz, (conf, iou, max_det), writer, names)
            bar.update(len(chunk))
    finally:
        bar.close()
        if writer is not None:
            writer.release()
        if carry_state:
            set_carry_state(model.net, False)
        model.train(was_training)
    out = np.concatenate(results) if results else np.zeros(0, BBOX_DTYPE)
    write_bbox(out_path, out)
    return out


def _run_windows(model, reader, ends, ev_in: EventInput, f: int, imgsz: int, nms: tuple, writer, names) -> list:
    """One batch of windows ending at ``ends`` through the model: their detections (and video frames)."""
    H, W = reader.height, reader.width
    evs, imgs, rp = [], [], None
    for te in ends:
        ev = reader.read(te - ev_in.window_us, te)
        fr = events_to_frames(downsample_events(ev, f), te - ev_in.window_us, te, ev_in.T, H // f, W // f,
                              ev_in.representation, **ev_in.opts)
        img, gain, pad = letterbox_frames(fr, imgsz, ev_in.background)
        evs.append(ev)
        imgs.append(img)
        rp = (gain, pad)
    pred = model(torch.from_numpy(np.stack(imgs)).to(model.device))
    results = []
    for te, ev, (b, d) in zip(ends, evs, _sensor_detections(pred, rp, (H, W), *nms, f)):
        results.append(xyxy_to_bbox(te, b, d[:, 5].astype(np.int64), d[:, 4]))
        if writer is not None:
            writer.write(render_window(ev, H, W, b, d[:, 5], d[:, 4], names, scale=VIDEO_SCALE))
    return results


def evaluate_recordings(model, dataset, out_dir, step_us: int | None = None, conf: float = 0.001,
                        iou: float = 0.7, carry_state: bool = False, batch: int = 8, progress: bool = True,
                        **protocol_kwargs) -> dict:
    """Prophesee-protocol evaluation of ``model`` on every recording of a
    :class:`~spikeyolo.data.gen1.Gen1Dataset` split.

    Each recording is run with the dataset's window, ``T``, representation and ``imgsz``
    (:func:`predict_recording`): by default one window ending at each label timestamp (so every ground-truth
    frame pools exactly the detections made for it, when labels are more than ``time_tol_us`` apart); with
    ``step_us`` windows every ``step_us`` from 0 instead (a stream). The detections are written to
    ``out_dir/<recording>_bbox.npy`` and scored against ``dataset.prophesee_ground_truth()`` with
    :func:`spikeyolo.events.prophesee.evaluate_prophesee` (``protocol_kwargs`` go there; the sensor size
    comes from the recordings). Detections of every window ending within ±``time_tol_us`` of a label are
    pooled into it, as the protocol does. Returns the protocol dict plus ``representation``, ``T``,
    ``window_us``, ``step_us``.
    """
    out_dir = Path(out_dir)
    ev_in = dataset.events
    dt, f = {}, int(dataset.downsample)
    gt = dataset.prophesee_ground_truth()
    for name, dat, _ in dataset.recordings:
        ends = np.unique(gt[name]["t"]) if step_us is None else None
        dt[name] = predict_recording(
            model, dat, out_dir / f"{name}_bbox.npy", window_us=ev_in.window_us,
            step_us=step_us or ev_in.window_us, T=ev_in.T, representation=ev_in.representation,
            representation_opts=ev_in.opts, imgsz=dataset.imgsz, conf=conf, iou=iou,
            carry_state=carry_state, batch=batch, progress=progress, window_ends=ends, downsample=f)
        for k in ("x", "y", "w", "h"):  # the ground truth is in the dataset's (downsampled) input pixels
            dt[name][k] /= f
    h, w = next(iter(dataset.sensor.values()))
    for k, v in dataset.protocol.items():  # the dataset's filters (Gen4: RVT's)
        protocol_kwargs.setdefault(k, v)
    protocol_kwargs.setdefault("height", h)
    protocol_kwargs.setdefault("width", w)
    protocol_kwargs.setdefault("names", dataset.names)
    r = evaluate_prophesee(gt, dt, **protocol_kwargs)
    r.update(representation=ev_in.representation, T=ev_in.T, window_us=ev_in.window_us, step_us=step_us)
    return r


def score_sample_detections(dataset, event_dets: dict, names) -> dict:
    """The Prophesee/RVT protocol on the validator's detections of each sample, time-stamped at its label time:
    ``event_dets[recording]`` lists ``(t, boxes_xyxy, score_cls)`` per sample (sensor pixels)."""
    dt = {}
    for rec, rows in event_dets.items():
        parts = [xyxy_to_bbox(t, boxes.numpy(), score_cls[:, 1].numpy(), score_cls[:, 0].numpy())
                 for t, boxes, score_cls in rows]
        dt[rec] = np.concatenate(parts) if parts else np.zeros(0, BBOX_DTYPE)
    h, w = dataset.ground_truth(0)["shape"]
    settings = dict(dataset.protocol)  # Gen1: 30 / 10 px; Gen4 (RVT): 60 / 20, halved when ds 2
    res = evaluate_prophesee(dataset.prophesee_ground_truth(), dt, height=h, width=w, names=tuple(names), **settings)
    return {k: v for k, v in res.items() if k in ("protocol", "AP", "AP50", "AP75", "AP_S", "AP_M", "AP_L",
                                                    "images", "gt_boxes", "dt_boxes", "settings")}
