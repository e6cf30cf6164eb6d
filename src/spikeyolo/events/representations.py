"""Event windows -> dense frames ``float32 [T, C, H, W]`` (vectorized numpy, no per-event Python loop).

The window ``[t0, t1)`` is split into ``T`` equal bins; event ``e`` falls in bin
``(e.t - t0) * T // (t1 - t0)`` (integer arithmetic). Events outside the window or outside the sensor
(``x >= width`` or ``y >= height``) are ignored.

Kinds (:func:`representation_channels` gives ``C``):

- ``counts`` (2 channels): events per pixel, channel 0 = OFF (p = 0), channel 1 = ON (p > 0).
  ``norm=None`` raw counts, ``"log"``: ``log1p(count)``, ``"clip"``: ``min(count, clip) / clip``.
- ``spikeyolo`` (3 identical channels): the official SpikeYOLO Gen1 encoding, fixed: background 127/255, the
  last event at a pixel (latest timestamp, then file order) sets 1.0 for ON and 0.0 for OFF. Unlike the
  official pre-processing, frames are ``[H, W]`` (not transposed) and in time order (not reversed).
- ``histogram`` (``2 * bins`` channels): RVT-style stacked histogram; each of the T frames is split again
  into ``bins`` sub-bins; channel ``p * bins + b`` counts polarity ``p`` events of sub-bin ``b``, clipped at
  ``clip`` (10) and divided by ``clip``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

KINDS = ("counts", "spikeyolo", "histogram")
SPIKEYOLO_BACKGROUND = 127.0 / 255.0


def representation_channels(kind: str, bins: int = 10, **_) -> int:
    """Channels per frame of a representation (``bins`` only matters for ``histogram``)."""
    if kind == "counts":
        return 2
    if kind == "spikeyolo":
        return 3
    if kind == "histogram":
        return 2 * int(bins)
    raise ValueError(f"unknown event representation {kind!r}; expected one of {KINDS}")


def representation_background(kind: str, **_) -> float:
    """Value of a pixel without events (used as the letterbox pad value)."""
    representation_channels(kind)
    return SPIKEYOLO_BACKGROUND if kind == "spikeyolo" else 0.0


def _bin_index(t: np.ndarray, t0: int, t1: int, n: int) -> np.ndarray:
    return ((t.astype(np.int64) - int(t0)) * int(n)) // (int(t1) - int(t0))


def events_to_frames(events, t0: int, t1: int, T: int, height: int, width: int, kind: str = "counts",
                     norm: str | None = None, clip: float = 10.0, bins: int = 10) -> np.ndarray:
    """Events (structured array with ``t``, ``x``, ``y``, ``p``) in ``[t0, t1)`` -> ``float32 [T, C, H, W]``.

    See the module docstring for the kinds; ``norm``/``clip`` apply to ``counts``, ``bins``/``clip`` to
    ``histogram``.
    """
    if int(t1) <= int(t0):
        raise ValueError(f"empty window: t0={t0}, t1={t1}")
    T, H, W = int(T), int(height), int(width)
    C = representation_channels(kind, bins=bins)
    t = np.asarray(events["t"]).astype(np.int64)
    x = np.asarray(events["x"]).astype(np.int64)
    y = np.asarray(events["y"]).astype(np.int64)
    p = (np.asarray(events["p"]) > 0).astype(np.int64)
    keep = (t >= t0) & (t < t1) & (x < W) & (y < H) & (x >= 0) & (y >= 0)
    order = np.flatnonzero(keep)
    t, x, y, p = t[keep], x[keep], y[keep], p[keep]
    pix = y * W + x

    if kind == "counts":
        b = _bin_index(t, t0, t1, T)
        lin = (b * 2 + p) * (H * W) + pix
        out = np.bincount(lin, minlength=T * 2 * H * W).astype(np.float32).reshape(T, 2, H, W)
        if norm == "log":
            np.log1p(out, out=out)
        elif norm == "clip":
            out = np.minimum(out, clip) / np.float32(clip)
        elif norm is not None:
            raise ValueError(f"unknown counts norm {norm!r}; expected None, 'log' or 'clip'")
        return out.astype(np.float32, copy=False)

    if kind == "histogram":
        B = int(bins)
        s = _bin_index(t, t0, t1, T * B)
        f, b = s // B, s % B
        lin = ((f * 2 + p) * B + b) * (H * W) + pix
        out = np.bincount(lin, minlength=T * C * H * W).astype(np.float32).reshape(T, C, H, W)
        return (np.minimum(out, clip) / np.float32(clip)).astype(np.float32, copy=False)

    # spikeyolo: last event per (bin, pixel) wins
    b = _bin_index(t, t0, t1, T)
    lin = b * (H * W) + pix
    frame = np.full(T * H * W, SPIKEYOLO_BACKGROUND, np.float32)
    if len(lin):
        o = np.lexsort((order, t, lin))  # by cell, then time, then file order
        ls = lin[o]
        last = np.append(ls[1:] != ls[:-1], True)
        frame[ls[last]] = p[o][last].astype(np.float32)
    frame = frame.reshape(T, 1, H, W)
    return np.repeat(frame, 3, axis=1)


@dataclass(frozen=True)
class EventInput:
    """How events become network input, the one owner of these settings: windows of ``window_us``
    microseconds split into ``T`` bins, encoded by ``representation`` with its ``options`` (e.g.
    ``{"bins": 10}`` for ``histogram``, ``{"norm": "log"}`` for ``counts``). The defaults are the official
    SpikeYOLO Gen1 ones (250 ms, T = 4, ``spikeyolo``). ``options`` may be given as a dict; it is kept as
    sorted ``(key, value)`` pairs so the object stays frozen and hashable (:attr:`opts` gives the dict).

    A data YAML holds the settings as ``window_us``, ``T``, ``representation``, ``representation_opts``; a
    checkpoint as ``config["events"] = {"window_us", "representation", "representation_opts"}`` beside the
    model's own ``config["T"]`` (T is stored once, with the model).
    """

    window_us: int = 250_000
    T: int = 4
    representation: str = "spikeyolo"
    options: tuple = ()

    def __post_init__(self):
        opts = self.options.items() if isinstance(self.options, dict) else (self.options or ())
        object.__setattr__(self, "options", tuple(sorted((str(k), v) for k, v in opts)))
        object.__setattr__(self, "window_us", int(self.window_us))
        object.__setattr__(self, "T", int(self.T))
        object.__setattr__(self, "representation", str(self.representation))
        if self.T < 1 or self.window_us < self.T:
            raise ValueError(f"need T >= 1 and window_us >= T, got T={self.T}, window_us={self.window_us}")
        representation_channels(self.representation, **self.opts)  # unknown kinds fail here

    @property
    def opts(self) -> dict:
        return dict(self.options)

    @property
    def channels(self) -> int:
        return representation_channels(self.representation, **self.opts)

    @property
    def background(self) -> float:
        return representation_background(self.representation)

    @classmethod
    def from_data_config(cls, cfg: dict, window_us: int | None = None, T: int | None = None,
                         representation: str | None = None, options: dict | None = None) -> EventInput:
        """Settings given here, else from the data config ``cfg``, else the defaults."""
        d = cls()
        return cls(window_us=window_us if window_us is not None else cfg.get("window_us", d.window_us),
                   T=T if T is not None else cfg.get("T", d.T),
                   representation=representation or cfg.get("representation", d.representation),
                   options=options if options is not None else cfg.get("representation_opts") or {})

    def to_config(self) -> dict:
        """The checkpoint entry ``config["events"]`` (plain data; T is the model's ``config["T"]``)."""
        return {"window_us": self.window_us, "representation": self.representation,
                "representation_opts": self.opts}

    @classmethod
    def from_checkpoint(cls, config: dict) -> EventInput | None:
        """The settings a model config (``model.config`` or a checkpoint's ``config``) was trained with, or
        None for a model trained on images."""
        events = config.get("events") if isinstance(config, dict) else None
        if not isinstance(events, dict):
            return None
        return cls(window_us=events["window_us"], T=config.get("T", cls.T),
                   representation=events["representation"], options=events.get("representation_opts") or {})
