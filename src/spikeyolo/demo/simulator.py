"""An ESIM / v2e-style event-camera simulator, and synthetic Gen1-layout recordings from still photos.

Model (per pixel): ``L = log(I + eps)`` with ``I`` in [0, 1]. Each pixel keeps a reference level ``ref``
(set to ``L`` of the first frame). Between two frames, ``L`` is taken to change linearly in time. When
``L - ref`` reaches ``+k * C_on`` (``-k * C_off``) the pixel emits ON (OFF) events, one per crossed level
``k = 1..n`` with ``n = floor(|L_new - ref| / C)``, timestamped where the linear ramp crosses level ``k``;
the reference then moves by ``n * C`` (not to ``L``, so sub-threshold changes accumulate). Optional: a
per-pixel threshold spread (``C * (1 + sigma * N(0, 1))``, fixed per pixel, seeded) and a refractory period
(an event closer than ``refractory_us`` to the pixel's previous event is dropped; the reference still moves).
"""

from __future__ import annotations

import json
import zlib
from pathlib import Path

import cv2
import numpy as np
import yaml
from tqdm import tqdm

from ..events.io import BBOX_DTYPE, EVENT_DTYPE, write_bbox, write_dat, xyxy_to_bbox
from ..utils.boxes import clip_visible


class EventSimulator:
    """Frames in, events out. ``sim.step(frame, t_us)`` returns the events between the previous frame and
    this one as :data:`EVENT_DTYPE` (sorted by time); the first call only initialises the reference.

    Args:
        shape: ``(H, W)``.
        C: contrast threshold (``C_on = C_off = C`` unless given separately).
        sigma: relative per-pixel threshold spread (0 = none).
        refractory_us: minimum time between two events of a pixel (0 = none).
        eps: offset inside the log (keeps black pixels finite).
        seed: seeds the threshold spread.
    """

    def __init__(self, shape, C: float = 0.2, C_on: float | None = None, C_off: float | None = None,
                 sigma: float = 0.0, refractory_us: int = 0, eps: float = 1e-3, seed: int = 0):
        self.H, self.W = int(shape[0]), int(shape[1])
        rng = np.random.default_rng(seed)
        c_on = C if C_on is None else C_on
        c_off = C if C_off is None else C_off
        noise_on = rng.standard_normal((self.H, self.W)) * sigma if sigma else 0.0
        noise_off = rng.standard_normal((self.H, self.W)) * sigma if sigma else 0.0
        self.C_on = np.maximum(c_on * (1 + noise_on), 0.01 * c_on) * np.ones((self.H, self.W))
        self.C_off = np.maximum(c_off * (1 + noise_off), 0.01 * c_off) * np.ones((self.H, self.W))
        self.refractory_us = int(refractory_us)
        self.eps = float(eps)
        self.ref = None
        self.L = None
        self.t = None
        self.last = np.full((self.H, self.W), -(1 << 62), np.int64)

    def log(self, frame: np.ndarray) -> np.ndarray:
        return np.log(np.asarray(frame, np.float64) + self.eps)

    def step(self, frame: np.ndarray, t_us: int) -> np.ndarray:
        L = self.log(frame)
        if L.shape != (self.H, self.W):
            raise ValueError(f"frame shape {L.shape} != simulator shape {(self.H, self.W)}")
        t_us = int(t_us)
        if self.ref is None:
            self.ref, self.L, self.t = L.copy(), L, t_us
            return np.zeros(0, EVENT_DTYPE)
        if t_us <= self.t:
            raise ValueError(f"frame time {t_us} not after the previous one ({self.t})")
        d = L - self.ref
        C = np.where(d >= 0, self.C_on, self.C_off)
        n = np.floor(np.abs(d) / C).astype(np.int64)
        ys, xs = np.nonzero(n)
        out = []
        if len(ys):
            nn = n[ys, xs]
            sgn = np.sign(d[ys, xs])
            c = C[ys, xs]
            ref0 = self.ref[ys, xs]
            L0, L1 = self.L[ys, xs], L[ys, xs]
            dL = L1 - L0
            safe = np.where(np.abs(dL) > 0, dL, 1.0)
            last = self.last[ys, xs]
            p = (sgn > 0).astype(np.uint8)
            for k in range(1, int(nn.max()) + 1):
                m = nn >= k
                level = ref0[m] + sgn[m] * k * c[m]
                frac = np.where(np.abs(dL[m]) > 0, (level - L0[m]) / safe[m], 1.0)
                tk = self.t + np.floor(np.clip(frac, 0.0, 1.0) * (t_us - self.t)).astype(np.int64)
                ok = tk - last[m] >= self.refractory_us if self.refractory_us else np.ones(len(tk), bool)
                idx = np.flatnonzero(m)[ok]
                last[idx] = tk[ok]
                e = np.empty(len(idx), EVENT_DTYPE)
                e["t"], e["x"], e["y"], e["p"] = tk[ok], xs[idx], ys[idx], p[idx]
                out.append(e)
            self.last[ys, xs] = last
            self.ref[ys, xs] = ref0 + sgn * nn * c
        self.L, self.t = L, t_us
        if not out:
            return np.zeros(0, EVENT_DTYPE)
        ev = np.concatenate(out)
        return ev[np.argsort(ev["t"], kind="stable")]


def random_motion(duration_us: int, image_hw, sensor=(240, 304), seed: int = 0, zoom_range=(0.6, 1.0),
                  speed: float = 40.0, zoom_rate: float = 0.1, scale_range=None):
    """A smooth random pan/zoom: a function ``t_us -> (cx, cy, s)``: viewport centre in image pixels and
    scale ``s`` (image pixels per sensor pixel).

    The centre follows a sinusoid per axis (random phase and frequency) whose top speed is about ``speed``
    sensor pixels per second (less when there is no room). The scale starts at a random value in
    ``zoom_range`` times the largest scale that fits the viewport (``s * W`` by ``s * H``) inside the image,
    or, with ``scale_range``, at a random value in that absolute range, so objects keep the same size on the
    sensor whatever the photo's size; it changes by at most ``zoom_rate`` (relative) per second.
    Along an axis where the viewport is larger than the image, the image moves inside the view instead.
    """
    rng = np.random.default_rng(seed)
    ih, iw = image_hw
    H, W = sensor
    s_fit = min(iw / W, ih / H)
    dur = max(1e-6, duration_us / 1e6)
    s0 = rng.uniform(*scale_range) if scale_range is not None else s_fit * rng.uniform(*zoom_range)
    fz = rng.uniform(0.2, 0.5) / dur
    az = min(zoom_rate / (2 * np.pi * fz), 0.3)
    if scale_range is None:  # zooming out must not leave the image
        az = min(az, 0.5 * (s_fit / s0 - 1) if s_fit > s0 else 0.0)
    f = rng.uniform(0.3, 0.8, 2) / dur  # cycles per second
    phase = rng.uniform(0, 2 * np.pi, 3)
    base = rng.uniform(0.2, 0.8, 2)

    def motion(t_us):
        u = t_us / 1e6
        s = s0 * (1 + az * np.sin(2 * np.pi * fz * u + phase[2]))
        hx, hy = s * W / 2, s * H / 2
        out = []
        for k, (half, full) in enumerate(((hx, iw), (hy, ih))):
            # the centre's range: viewport inside the image, or image inside the viewport when it is smaller
            lo, hi = min(half, full - half), max(half, full - half)
            slack = hi - lo
            amp = min(speed * s / (2 * np.pi * f[k]), slack / 2)
            c = lo + slack * base[k] + amp * np.sin(2 * np.pi * f[k] * u + phase[k])
            out.append(float(np.clip(c, lo, hi)))
        return out[0], out[1], float(s)

    return motion


def _affine(cx: float, cy: float, s: float, sensor) -> np.ndarray:
    """2x3 map image pixels -> sensor pixels for viewport centre (cx, cy) and scale s."""
    H, W = sensor
    return np.array([[1 / s, 0, W / 2 - cx / s], [0, 1 / s, H / 2 - cy / s]], np.float64)


def render_view(gray: np.ndarray, cx: float, cy: float, s: float, sensor=(240, 304),
                background: float | None = None) -> np.ndarray:
    """The sensor-size view of a float image for viewport ``(cx, cy, s)`` (bilinear). Outside the image:
    the border replicated, or a flat ``background`` level (a photo moving in front of a plain wall)."""
    H, W = sensor
    border = ({"borderMode": cv2.BORDER_REPLICATE} if background is None
              else {"borderMode": cv2.BORDER_CONSTANT, "borderValue": float(background)})
    return cv2.warpAffine(gray, _affine(cx, cy, s, sensor), (W, H), flags=cv2.INTER_LINEAR, **border)


def view_boxes(boxes_xyxy: np.ndarray, cx: float, cy: float, s: float, sensor=(240, 304),
               min_visibility: float = 0.5) -> tuple[np.ndarray, np.ndarray]:
    """Image-pixel boxes -> ``(sensor-pixel boxes clipped to the view, indices kept)``; a box is kept when
    at least ``min_visibility`` of its area is inside the view."""
    H, W = sensor
    b = np.asarray(boxes_xyxy, np.float64).reshape(-1, 4)
    m = _affine(cx, cy, s, sensor)
    v = np.stack((b[:, 0] * m[0, 0] + m[0, 2], b[:, 1] * m[1, 1] + m[1, 2],
                  b[:, 2] * m[0, 0] + m[0, 2], b[:, 3] * m[1, 1] + m[1, 2]), 1)
    c, visible = clip_visible(v, (0, 0, W, H), min_visibility)
    keep = np.flatnonzero(visible)
    return c[keep], keep


def _gray(image: np.ndarray) -> np.ndarray:
    img = np.asarray(image)
    if img.ndim == 3:
        img = cv2.cvtColor(img, cv2.COLOR_BGR2GRAY)
    img = img.astype(np.float32)
    return img / 255.0 if img.max() > 1.0 else img


def simulate_recording(image: np.ndarray, boxes_xyxy, cls, duration_us: int = 2_000_000, fps: float = 1000,
                       motion=None, sensor=(240, 304), out_dir=None, name: str = "rec", C: float = 0.2,
                       sigma: float = 0.03, refractory_us: int = 0, label_hz: float = 20, seed: int = 0,
                       min_visibility: float = 0.5, zoom_range=(0.6, 1.0), speed: float = 40.0,
                       scale_range=None):
    """Move a still image (BGR or grey; random smooth pan/zoom unless ``motion(t_us) -> (cx, cy, s)`` is
    given, see :func:`random_motion` for ``zoom_range``, ``speed`` and ``scale_range``) in front of a
    simulated ``sensor = (H, W)`` event camera for ``duration_us``, rendering frames at ``fps``; where the
    view leaves the image the sensor sees a flat wall at the image's mean level. Boxes (image pixels) move
    with the image; at ``label_hz`` (first label at ``1 / label_hz``) the boxes at least ``min_visibility``
    visible are labelled, clipped to the view, ``track_id`` = box index.

    Returns ``(events, boxes)`` (:data:`EVENT_DTYPE`, :data:`BBOX_DTYPE`); with ``out_dir`` also writes
    ``<out_dir>/<name>_td.dat`` and ``<name>_bbox.npy``.
    """
    gray = _gray(image)
    boxes_xyxy = np.asarray(boxes_xyxy, np.float64).reshape(-1, 4)
    cls = np.asarray(cls, np.int64).reshape(-1)
    motion = motion or random_motion(duration_us, gray.shape, sensor, seed=seed, zoom_range=zoom_range,
                                    speed=speed, scale_range=scale_range)
    wall = float(gray.mean())
    sim = EventSimulator(sensor, C=C, sigma=sigma, refractory_us=refractory_us, seed=seed)
    dt = 1e6 / fps
    n_frames = int(np.floor(duration_us / dt)) + 1
    events = []
    for k in range(n_frames):
        t = int(round(k * dt))
        events.append(sim.step(render_view(gray, *motion(t), sensor, background=wall), t))
    events = np.concatenate(events) if events else np.zeros(0, EVENT_DTYPE)

    labels = []
    step = 1e6 / label_hz
    k = 1
    while round(k * step) <= duration_us:
        t = int(round(k * step))
        b, keep = view_boxes(boxes_xyxy, *motion(t), sensor, min_visibility)
        labels.append(xyxy_to_bbox(t, b, cls[keep], 1.0, keep))
        k += 1
    labels = np.concatenate(labels) if labels else np.zeros(0, BBOX_DTYPE)
    if out_dir is not None:
        out_dir = Path(out_dir)
        write_dat(out_dir / f"{name}_td.dat", events, height=sensor[0], width=sensor[1],
                  date="2026-01-01 00:00:00")
        write_bbox(out_dir / f"{name}_bbox.npy", labels)
    return events, labels


def make_gen1_dataset(images_with_boxes_by_split: dict, out_dir, names=("Tree",),
                      recordings_per_image: int | dict = 1,
                      duration_us: int | dict = 2_000_000, fps: float = 1000, T: int = 4, window_us: int = 250_000,
                      representation: str = "counts", seed: int = 0, progress: bool = True, **sim_kwargs):
    """Write a Gen1-layout dataset: ``out_dir/{split}/<name>_td.dat + <name>_bbox.npy`` and
    ``out_dir/data.yaml`` (``type: gen1``).

    ``images_with_boxes_by_split``: ``{split: [(name, image, boxes_xyxy, cls), ...]}``; each entry gives
    ``recordings_per_image`` recordings of ``duration_us`` each (either an int, or ``{split: int}``), with
    different random motions.
    ``sim_kwargs`` go to :func:`simulate_recording`; all these settings are recorded under ``simulation`` in
    the YAML. Returns the YAML path.
    """
    out_dir = Path(out_dir)
    per_split = (recordings_per_image if isinstance(recordings_per_image, dict)
                 else dict.fromkeys(images_with_boxes_by_split, recordings_per_image))
    jobs = [(split, item, r) for split, items in images_with_boxes_by_split.items() for item in items
            for r in range(per_split.get(split, 1))]
    for split, (name, image, boxes, cls), r in tqdm(jobs, desc="simulating events", disable=not progress):
        # a recording's motion depends on its own name only, not on how many recordings other splits have
        rec_seed = seed + zlib.crc32(f"{split}/{name}/{r}".encode())
        duration = duration_us[split] if isinstance(duration_us, dict) else duration_us
        simulate_recording(image, boxes, cls, duration_us=duration, fps=fps, out_dir=out_dir / split,
                           name=f"{name}_{r:02d}", seed=rec_seed, **sim_kwargs)
    data = {"type": "gen1", "path": str(out_dir.resolve()), "window_us": int(window_us), "T": int(T),
            "representation": representation, "names": list(names)}
    for split in images_with_boxes_by_split:
        data[split] = split
    # provenance: how the recordings were made (plain YAML types; the Gen1 reader ignores this key)
    sim = {"recordings_per_image": per_split, "duration_us": duration_us, "fps": fps, "seed": seed, **sim_kwargs}
    data["simulation"] = yaml.safe_load(json.dumps(sim))
    y = out_dir / "data.yaml"
    y.write_text(yaml.safe_dump(data, sort_keys=False))
    return y

