"""Prophesee Gen1 Automotive as a detection dataset (items follow docs/internals.md).

Data YAML::

    type: gen1
    path: /data/gen1            # holds train/ val/ test/ folders of <rec>_td.dat + <rec>_bbox.npy pairs
    train: train
    val: val
    test: test
    window_us: 250000           # events of [t - window_us, t) make one sample (official: 250 ms)
    T: 4                        # time bins per window (official script: 4; released checkpoint: 2)
    representation: spikeyolo   # counts | spikeyolo | histogram (see spikeyolo.events.representations)
    representation_opts: {}     # e.g. {bins: 10} for histogram, {norm: log} for counts
    names: [car, pedestrian]

Sampling: one sample per unique label timestamp ``t`` of a recording; events in ``[t - window_us, t)`` are
split into ``T`` equal bins (a window reaching before the recording start simply has empty early bins).
Labels: the boxes at exactly ``t``; for a ``track_id`` seen several times the last row wins; boxes are clipped
to the sensor (x1, y1, x2, y2 each clamped, unlike the official code that shifts boxes sticking out left/top),
zero-area boxes dropped. Frames are letterboxed (aspect kept, centred) to ``imgsz`` square, padded with the
representation's background (0, or 127/255 for ``spikeyolo``).
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from pathlib import Path

import cv2
import numpy as np
import torch
from tqdm import tqdm

from ..events.io import DatReader, read_bbox
from ..events.representations import EventInput, events_to_frames
from ..utils.boxes import letterbox_geometry
from .augment import keep_boxes, sample_rng

GEN1_HYP = {"fliplr": 0.5, "scale": 0.0, "translate": 0.0}  # training augmentation (see Gen1Dataset)
CACHE_VERSION = 1


def find_recordings(folder: str | os.PathLike) -> list[tuple[str, Path, Path]]:
    """``(name, td.dat, bbox.npy)`` for every ``<name>_td.dat`` with a ``<name>_bbox.npy`` beside it, sorted."""
    folder = Path(folder)
    out = []
    for dat in sorted(folder.glob("*_td.dat")):
        name = dat.name[: -len("_td.dat")]
        bbox = folder / f"{name}_bbox.npy"
        if bbox.is_file():
            out.append((name, dat, bbox))
        else:
            warnings.warn(f"{dat}: no {bbox.name} beside it; recording skipped", stacklevel=2)
    return out


def labels_at(boxes: np.ndarray, height: int, width: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Boxes of one timestamp (:data:`BBOX_DTYPE` rows, file order) -> ``(cls [n] int64, xyxy [n, 4] float32,
    track_id [n])``: last row per ``track_id``, clipped to ``width x height``, zero-area boxes dropped."""
    if len(boxes) == 0:
        return np.zeros(0, np.int64), np.zeros((0, 4), np.float32), np.zeros(0, np.uint32)
    rev = boxes[::-1]
    _, first_in_rev = np.unique(rev["track_id"], return_index=True)
    keep = np.sort(len(boxes) - 1 - first_in_rev)  # last occurrence per track, in file order
    b = boxes[keep]
    x1 = np.clip(b["x"].astype(np.float64), 0, width)
    y1 = np.clip(b["y"].astype(np.float64), 0, height)
    x2 = np.clip(b["x"].astype(np.float64) + b["w"], 0, width)
    y2 = np.clip(b["y"].astype(np.float64) + b["h"], 0, height)
    ok = (x2 > x1) & (y2 > y1)
    xyxy = np.stack((x1, y1, x2, y2), 1)[ok].astype(np.float32)
    return b["class_id"][ok].astype(np.int64), xyxy.reshape(-1, 4), b["track_id"][ok]


def downsample_events(events: np.ndarray, factor: int) -> np.ndarray:
    """Events of the pixels a ``factor`` times smaller frame keeps, at its coordinates. RVT downsamples Gen4 by
    2 with ``interpolate(scale_factor=0.5, mode="nearest-exact")`` on the full-resolution representation,
    which keeps input pixel ``(f i + f // 2, f j + f // 2)`` as output ``(i, j)``; every representation here is
    per pixel, so keeping the events of those pixels and dividing their coordinates gives the same frames
    without building the full-resolution ones."""
    if factor == 1:
        return events
    keep = (events["x"] % factor == factor // 2) & (events["y"] % factor == factor // 2)
    out = events[keep]  # a copy (boolean index)
    out["x"] //= factor
    out["y"] //= factor
    return out


def _clip_rows(boxes: np.ndarray, height: int, width: int) -> np.ndarray:
    """:data:`BBOX_DTYPE` rows clipped to ``width x height``; rows left without area dropped."""
    x1, y1 = np.clip(boxes["x"], 0, width), np.clip(boxes["y"], 0, height)
    x2, y2 = np.clip(boxes["x"] + boxes["w"], 0, width), np.clip(boxes["y"] + boxes["h"], 0, height)
    out = boxes.copy()
    out["x"], out["y"], out["w"], out["h"] = x1, y1, x2 - x1, y2 - y1
    return out[(out["w"] > 0) & (out["h"] > 0)]


def letterbox_frames(frames: np.ndarray, imgsz: int, pad_value: float = 0.0, zoom: float = 1.0, shift=(0, 0)):
    """``[T, C, h, w]`` -> ``([T, C, imgsz, imgsz], (gain_y, gain_x), (pad_x, pad_y))`` with
    ``input = original * gain + pad``: resized to fit (aspect kept; area when shrinking, bilinear when
    enlarging) and centred on a ``pad_value`` square. Augmentation: ``zoom`` times that size, moved by ``shift``
    (x, y) pixels; what falls outside the square is cut off (``pad`` may then be negative)."""
    T, C, h, w = frames.shape
    rh, rw, left, top = letterbox_geometry((h, w), (imgsz, imgsz), zoom, shift)
    if (rh, rw) == (h, w):
        res = frames
    else:
        interp = cv2.INTER_AREA if rw < w else cv2.INTER_LINEAR
        hwc = np.ascontiguousarray(frames.reshape(T * C, h, w).transpose(1, 2, 0))
        parts = [cv2.resize(hwc[:, :, k:k + 4], (rw, rh), interpolation=interp).reshape(rh, rw, -1)
                 for k in range(0, T * C, 4)]  # OpenCV's area resize takes at most 4 channels
        res = np.concatenate(parts, 2).transpose(2, 0, 1).reshape(T, C, rh, rw)
    out = np.full((T, C, imgsz, imgsz), pad_value, np.float32)
    y0, x0 = max(top, 0), max(left, 0)
    y1, x1 = min(top + rh, imgsz), min(left + rw, imgsz)
    if y1 > y0 and x1 > x0:
        out[:, :, y0:y1, x0:x1] = res[:, :, y0 - top:y1 - top, x0 - left:x1 - left]
    return out, (rh / h, rw / w), (float(left), float(top))


class Gen1Dataset(torch.utils.data.Dataset):
    """One split of a Gen1-layout event dataset (see the module docstring).

    ``Gen1Dataset(cfg, split, imgsz=320, T=None, window_us=None, representation=None, cache_dir=None,
    augment=False, representation_opts=None, seed=0, hyp=None)``: ``cfg`` is a loaded data config (``path`` absolute;
    ``cfg[split]`` a folder or list of folders, else ``path/split``); ``None`` arguments come from ``cfg``, else
    the module defaults (250 ms, T = 4, ``spikeyolo``).

    Cache: frames at sensor resolution are computed once per sample and kept as compressed ``.npz`` in
    ``cache_dir`` (default ``<path>/cache``; ``False`` disables) under a folder named by a hash of the
    settings and of every source file's name, size and mtime, so changed settings or files rebuild it.

    ``augment``: with probability ``hyp["fliplr"]`` a horizontal flip, then a random zoom by a factor in
    ``[1 - scale, 1 + scale]`` and a shift by up to ``translate`` of ``imgsz`` per axis (RVT-style zoom in/out;
    boxes are moved, clipped, and dropped when mostly cut off), all drawn from ``(seed, epoch, index)``.
    ``hyp`` overrides :data:`GEN1_HYP` (flip only by default; the official SpikeYOLO recipe uses none).
    """

    keyed = False
    mosaic = False
    downsample = 1  # input resolution = sensor // downsample (Gen4Dataset: 2, as RVT)
    kind = "gen1"  # names the cache folder
    protocol = {"min_box_diag": 30, "min_box_side": 10, "skip_us": 500_000}  # Prophesee evaluation filters
    label_rules: dict = {}  # settings of filter_labels / downsample, part of the cache key (Gen4Dataset's)

    def filter_labels(self, boxes: np.ndarray, height: int, width: int) -> np.ndarray:
        """The label rows this dataset uses (sensor pixels); all of them for Gen1."""
        return boxes

    def __init__(self, cfg: dict, split: str, imgsz: int = 320, T: int | None = None,
                 window_us: int | None = None, representation: str | None = None, cache_dir=None,
                 augment: bool = False, representation_opts: dict | None = None, seed: int = 0,
                 hyp: dict | None = None, progress: bool = True):
        self.cfg = cfg
        self.split = split
        self.imgsz = int(imgsz)
        self.events = EventInput.from_data_config(cfg, window_us=window_us, T=T, representation=representation,
                                                  options=representation_opts)
        self.in_channels = self.events.channels
        self.pad_value = self.events.background
        self.names = list(cfg.get("names") or ["car", "pedestrian"])
        self.nc = len(self.names)
        self.augment, self.seed, self.epoch = bool(augment), int(seed), 0
        self.hyp = {k: float((hyp or {}).get(k, v)) for k, v in GEN1_HYP.items()}

        folders = cfg.get(split) or [str(Path(cfg["path"]) / split)]
        folders = [folders] if isinstance(folders, str | os.PathLike) else list(folders)
        self.recordings = []
        for f in folders:
            if not Path(f).is_dir():
                raise FileNotFoundError(f"{self.kind} split {split!r}: folder {f} does not exist")
            self.recordings += find_recordings(f)
        if not self.recordings:
            raise FileNotFoundError(f"{self.kind} split {split!r}: no <name>_td.dat + <name>_bbox.npy pairs in "
                                    f"{folders}")

        self.samples = []  # (recording index, t, cls, xyxy, track_id); xyxy in input-resolution pixels
        self.sensor = {}  # input resolution (the sensor's, divided by self.downsample)
        f = self.downsample
        for r, (name, dat, bbox) in enumerate(self.recordings):
            reader = DatReader(dat, check=False)  # header only here
            self.sensor[name] = (reader.height // f, reader.width // f)
            boxes = self.filter_labels(read_bbox(bbox), reader.height, reader.width)
            bad = boxes["class_id"] >= self.nc
            if bad.any():
                warnings.warn(f"{bbox}: {int(bad.sum())} boxes with class_id >= nc={self.nc} dropped", stacklevel=2)
                boxes = boxes[~bad]
            order = np.argsort(boxes["t"], kind="stable")
            boxes = boxes[order]
            ts, starts = np.unique(boxes["t"], return_index=True)
            ends = np.append(starts[1:], len(boxes))
            for t, a, b in zip(ts, starts, ends):
                cls, xyxy, tid = labels_at(boxes[a:b], reader.height, reader.width)
                if f != 1:
                    xyxy = np.clip(xyxy / f, 0, [[reader.width // f, reader.height // f] * 2]).astype(np.float32)
                self.samples.append((r, int(t), cls, xyxy, tid))
        self.stats = {"recordings": len(self.recordings), "samples": len(self.samples),
                      "boxes": sum(len(s[2]) for s in self.samples)}

        self._readers = {}
        self.cache_path = None
        if cache_dir is not False:
            root = Path(cache_dir) if cache_dir is not None else Path(cfg["path"]) / "cache"
            self.cache_path = root / f"{self.kind}_{split}_{self._cache_key()}"
            try:
                self._build_cache(progress)
            except OSError as e:
                warnings.warn(f"{self.kind} cache {self.cache_path} not usable ({e}); frames computed on the fly",
                              stacklevel=2)
                self.cache_path = None

    # the event input settings, read from their owner
    T = property(lambda self: self.events.T)
    window_us = property(lambda self: self.events.window_us)
    representation = property(lambda self: self.events.representation)
    rep_opts = property(lambda self: self.events.opts)

    # ------------------------------------------------------------------ cache
    def _cache_key(self) -> str:
        src = []
        for _name, dat, bbox in self.recordings:
            for p in (dat, bbox):
                st = p.stat()
                src.append([str(p.name), st.st_size, st.st_mtime_ns])
        key = {"v": CACHE_VERSION, "T": self.T, "window_us": self.window_us, "rep": self.representation,
               "opts": self.rep_opts, "src": src}
        if self.label_rules:  # samples are cached by index: label rules that change them change the key
            key["labels"] = self.label_rules  # (none for Gen1: existing caches keep their keys)
        return hashlib.sha1(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]

    def _cache_file(self, i: int) -> Path:
        return self.cache_path / f"{i:08d}.npz"

    def _build_cache(self, progress: bool) -> None:
        done = self.cache_path / "complete.json"
        if done.is_file():
            return
        self.cache_path.mkdir(parents=True, exist_ok=True)
        todo = [i for i in range(len(self)) if not self._cache_file(i).is_file()]
        for i in tqdm(todo, desc=f"{self.kind} {self.split}: caching event frames", disable=not progress or not todo):
            f = self._cache_file(i)
            tmp = f.with_suffix(".tmp.npz")
            np.savez_compressed(tmp, frames=self._compute_frames(i))
            os.replace(tmp, f)
        done.write_text(json.dumps({"samples": len(self), "T": self.T, "window_us": self.window_us,
                                    "representation": self.representation, "opts": self.rep_opts}))

    # ------------------------------------------------------------------ samples
    def __len__(self) -> int:
        return len(self.samples)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def close_mosaic(self) -> None:
        """No mosaic for event data (present for the trainer's interface)."""

    def __getstate__(self):
        state = self.__dict__.copy()
        state["_readers"] = {}  # memory maps are reopened in each worker, never pickled
        return state

    def _reader(self, r: int) -> DatReader:
        if r not in self._readers:
            # the full timestamp scan (wrap-around, order check) runs here, once per recording and process
            self._readers[r] = DatReader(self.recordings[r][1])
        return self._readers[r]

    def _compute_frames(self, i: int) -> np.ndarray:
        r, t, *_ = self.samples[i]
        reader = self._reader(r)
        t0 = t - self.window_us
        ev = downsample_events(reader.read(t0, t), self.downsample)
        return events_to_frames(ev, t0, t, self.T, reader.height // self.downsample, reader.width // self.downsample,
                                self.representation, **self.rep_opts)

    def frames(self, i: int) -> np.ndarray:
        """Frames of sample ``i`` at the input resolution (the sensor's; divided by ``downsample`` for Gen4 as
        RVT), ``float32 [T, C, H, W]`` (from the cache when built)."""
        if self.cache_path is not None:
            with np.load(self._cache_file(i)) as z:
                return z["frames"]
        return self._compute_frames(i)

    def im_file(self, i: int) -> str:
        r, t, *_ = self.samples[i]
        return f"{self.recordings[r][0]}_{t}"

    def ground_truth(self, i: int) -> dict:
        """Labels of sample ``i`` in sensor pixels: ``im_file``, ``image_id``, ``shape`` (h, w), ``cls [n]``,
        ``boxes_xyxy [n, 4]``, ``t``, ``recording``."""
        r, t, cls, xyxy, _ = self.samples[i]
        name = self.recordings[r][0]
        return {"im_file": self.im_file(i), "image_id": self.im_file(i), "shape": self.sensor[name],
                "cls": cls.copy(), "boxes_xyxy": xyxy.copy(), "t": t, "recording": name}

    def prophesee_ground_truth(self, clip_to_sensor: bool = False) -> dict[str, np.ndarray]:
        """Ground truth per recording as :data:`BBOX_DTYPE` arrays for
        :func:`spikeyolo.events.prophesee.evaluate_prophesee`: by default the raw ``_bbox.npy`` rows (classes
        ``< nc``), every row the Prophesee toolbox scores, duplicates of a track and boxes crossing the border
        included. ``clip_to_sensor=True`` is RVT's variant: boxes clipped to the sensor, those left without
        area dropped. (The training labels of each sample also keep only the last row per track.) A dataset
        with label rules (Gen4 as RVT) applies them first, and gives boxes in its input (downsampled) pixels."""
        out, f = {}, self.downsample
        for name, _dat, bbox in self.recordings:
            h, w = self.sensor[name]
            boxes = self.filter_labels(read_bbox(bbox), h * f, w * f)
            boxes = boxes[boxes["class_id"] < self.nc]
            boxes = boxes[np.argsort(boxes["t"], kind="stable")]
            if f != 1:
                for k in ("x", "y", "w", "h"):
                    boxes[k] /= f
            if clip_to_sensor:
                boxes = _clip_rows(boxes, *self.sensor[name])
            out[name] = boxes
        return out

    def __getitem__(self, index) -> dict:
        if isinstance(index, tuple):
            index = index[0]
        r, t, cls, xyxy, _ = self.samples[index]
        name = self.recordings[r][0]
        h, w = self.sensor[name]
        frames = self.frames(index)
        boxes = xyxy.astype(np.float32).copy()
        zoom, shift = 1.0, (0, 0)
        if self.augment:
            rng = sample_rng(self.seed, self.epoch, index)
            if rng.random() < self.hyp["fliplr"]:
                frames = frames[..., ::-1]
                boxes[:, [0, 2]] = w - boxes[:, [2, 0]]
            zoom = rng.uniform(1 - self.hyp["scale"], 1 + self.hyp["scale"])
            shift = np.round(rng.uniform(-1, 1, 2) * self.hyp["translate"] * self.imgsz).astype(int)
        img, (gy, gx), pad = letterbox_frames(np.ascontiguousarray(frames), self.imgsz, self.pad_value, zoom, shift)
        b = boxes * np.array([gx, gy, gx, gy], np.float32) + np.array([pad[0], pad[1], pad[0], pad[1]], np.float32)
        if zoom != 1.0 or any(shift):  # boxes may now stick out: clip, drop the ones mostly cut off
            clipped = b.clip(0, self.imgsz)
            keep = keep_boxes(b, clipped, 1.0)
            b, cls = clipped[keep], cls[keep]
        cxcywh = np.stack(((b[:, 0] + b[:, 2]) / 2, (b[:, 1] + b[:, 3]) / 2, b[:, 2] - b[:, 0], b[:, 3] - b[:, 1]), 1)
        cxcywh = cxcywh.reshape(-1, 4) / self.imgsz
        n = len(cls)
        return {
            "img": torch.from_numpy(img),
            "cls": torch.as_tensor(cls, dtype=torch.float32).reshape(n, 1),
            "bboxes": torch.as_tensor(cxcywh, dtype=torch.float32).reshape(n, 4),
            "batch_idx": torch.zeros(n),
            "im_file": f"{name}_{t}",
            "ori_shape": (h, w),
            "ratio_pad": ((gy, gx), pad),
            "t": t,
            "recording": name,
        }
