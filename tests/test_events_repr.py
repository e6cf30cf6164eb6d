"""Event representations against per-event Python loops."""

import numpy as np
import pytest

from spikeyolo.events.io import EVENT_DTYPE
from spikeyolo.events.representations import (
    events_to_frames,
    representation_background,
    representation_channels,
)

H, W = 6, 7


def _random_events(n=400, seed=0, t0=1000, t1=2000):
    rng = np.random.default_rng(seed)
    e = np.zeros(n, EVENT_DTYPE)
    e["t"] = np.sort(rng.integers(t0 - 100, t1 + 100, n))  # some outside the window
    e["x"] = rng.integers(0, W + 1, n)  # some outside the sensor
    e["y"] = rng.integers(0, H, n)
    e["p"] = rng.integers(0, 2, n)
    return e


def _loop_counts(e, t0, t1, T):
    out = np.zeros((T, 2, H, W))
    for t, x, y, p in zip(e["t"], e["x"], e["y"], e["p"]):
        if t0 <= t < t1 and x < W and y < H:
            b = int((int(t) - t0) * T // (t1 - t0))
            out[b, int(p), y, x] += 1
    return out


def test_channels():
    assert representation_channels("counts") == 2
    assert representation_channels("spikeyolo") == 3
    assert representation_channels("histogram", bins=5) == 10
    assert representation_background("spikeyolo") == pytest.approx(127 / 255)
    with pytest.raises(ValueError, match="unknown"):
        representation_channels("voxel")


def test_counts_vs_loop():
    e = _random_events()
    ref = _loop_counts(e, 1000, 2000, 3)
    got = events_to_frames(e, 1000, 2000, 3, H, W, "counts")
    assert got.dtype == np.float32 and got.shape == (3, 2, H, W)
    np.testing.assert_array_equal(got, ref)
    np.testing.assert_allclose(events_to_frames(e, 1000, 2000, 3, H, W, "counts", norm="log"), np.log1p(ref),
                               rtol=1e-6)
    np.testing.assert_allclose(events_to_frames(e, 1000, 2000, 3, H, W, "counts", norm="clip", clip=2),
                               np.minimum(ref, 2) / 2)


def test_bin_edges_by_hand():
    e = np.zeros(4, EVENT_DTYPE)
    e["t"] = [0, 49, 50, 99]  # window [0, 100), T = 2: bins [0, 50) and [50, 100)
    e["p"] = 1
    f = events_to_frames(e, 0, 100, 2, H, W, "counts")
    assert f[0, 1, 0, 0] == 2 and f[1, 1, 0, 0] == 2


def test_spikeyolo_vs_loop():
    e = _random_events(seed=2)
    T = 2
    ref = np.full((T, H, W), 127 / 255, np.float32)
    for t, x, y, p in zip(e["t"], e["x"], e["y"], e["p"]):  # time order: the last event wins
        if 1000 <= t < 2000 and x < W and y < H:
            ref[int((int(t) - 1000) * T // 1000), y, x] = 1.0 if p else 0.0
    got = events_to_frames(e, 1000, 2000, T, H, W, "spikeyolo")
    assert got.shape == (T, 3, H, W)
    for c in range(3):
        np.testing.assert_array_equal(got[:, c], ref)


def test_spikeyolo_orientation_and_order():
    e = np.zeros(2, EVENT_DTYPE)
    e["t"], e["x"], e["y"], e["p"] = [10, 60], [6, 6], [1, 1], [1, 0]
    f = events_to_frames(e, 0, 100, 2, H, W, "spikeyolo")
    assert f[0, 0, 1, 6] == 1.0 and f[1, 0, 1, 6] == 0.0  # [H, W] orientation, first bin first
    # unsorted input: the later timestamp still wins
    e2 = np.zeros(2, EVENT_DTYPE)
    e2["t"], e2["x"], e2["y"], e2["p"] = [30, 20], [0, 0], [0, 0], [0, 1]
    assert events_to_frames(e2, 0, 100, 1, H, W, "spikeyolo")[0, 0, 0, 0] == 0.0


def test_histogram_vs_loop():
    e = _random_events(n=2000, seed=3)
    T, B = 2, 3
    ref = np.zeros((T, 2 * B, H, W))
    for t, x, y, p in zip(e["t"], e["x"], e["y"], e["p"]):
        if 1000 <= t < 2000 and x < W and y < H:
            s = int((int(t) - 1000) * T * B // 1000)
            ref[s // B, int(p) * B + s % B, y, x] += 1
    got = events_to_frames(e, 1000, 2000, T, H, W, "histogram", bins=B)  # default clip 10
    np.testing.assert_allclose(got, np.minimum(ref, 10) / 10, rtol=1e-6)
    got4 = events_to_frames(e, 1000, 2000, T, H, W, "histogram", bins=B, clip=4)
    np.testing.assert_allclose(got4, np.minimum(ref, 4) / 4, rtol=1e-6)
    assert ref.max() > 4  # the clip was exercised


def test_event_input_owns_the_settings():
    from spikeyolo.events.representations import EventInput

    d = EventInput()
    assert (d.window_us, d.T, d.representation, d.opts) == (250_000, 4, "spikeyolo", {})  # official Gen1
    cfg = {"window_us": 50_000, "T": 2, "representation": "histogram", "representation_opts": {"bins": 3}}
    ev = EventInput.from_data_config(cfg)
    assert (ev.window_us, ev.T, ev.representation, ev.opts, ev.channels) == (50_000, 2, "histogram", {"bins": 3}, 6)
    assert EventInput.from_data_config(cfg, T=5, options={"bins": 1}).T == 5  # given beats the YAML
    assert EventInput.from_data_config({}) == d
    # checkpoint: the events entry plus the model's T
    assert ev.to_config() == {"window_us": 50_000, "representation": "histogram", "representation_opts": {"bins": 3}}
    assert EventInput.from_checkpoint({"T": 2, "events": ev.to_config()}) == ev
    assert EventInput.from_checkpoint({"T": 2}) is None
    assert EventInput(1000, 2, "counts", {"norm": "log"}) == EventInput(1000, 2, "counts", (("norm", "log"),))
    assert EventInput(1000, 2, "spikeyolo").background == 127 / 255
    with pytest.raises(ValueError, match="window_us >= T"):
        EventInput(window_us=3, T=4)
    with pytest.raises(ValueError, match="unknown event representation"):
        EventInput(representation="voxel")
    with pytest.raises(AttributeError):
        d.T = 2  # frozen
