"""Event simulator: threshold crossings counted by hand, moving edges, boxes moving with the image."""

import math

import numpy as np
import pytest

from spikeyolo.demo.simulator import EventSimulator, render_view, simulate_recording, view_boxes
from spikeyolo.events.io import read_bbox, read_dat

EPS = 1e-3


def test_brightness_step_counts_and_times():
    sim = EventSimulator((2, 3), C=0.2, eps=EPS)
    f0 = np.full((2, 3), 0.1)
    f1 = f0.copy()
    f1[0, 1] = 0.6
    f1[1, 2] = 0.02
    assert len(sim.step(f0, 0)) == 0
    ev = sim.step(f1, 1000)
    up = math.log(0.6 + EPS) - math.log(0.1 + EPS)
    down = math.log(0.1 + EPS) - math.log(0.02 + EPS)
    n_on, n_off = math.floor(up / 0.2), math.floor(down / 0.2)
    assert (n_on, n_off) == (8, 7)
    on = ev[ev["p"] == 1]
    off = ev[ev["p"] == 0]
    assert len(on) == n_on and set(zip(on["x"], on["y"])) == {(1, 0)}
    assert len(off) == n_off and set(zip(off["x"], off["y"])) == {(2, 1)}
    # crossing k of the linear log ramp happens at k * C / up of the interval
    assert on["t"].tolist() == [math.floor(1000 * k * 0.2 / up) for k in range(1, 9)]
    assert np.all(np.diff(ev["t"]) >= 0)
    # the reference moved by 8 C, not to the new level: the remainder plus a small rise crosses once more
    assert len(sim.step(f1, 2000)) == 0
    rest = up - 8 * 0.2
    f2 = f1.copy()
    f2[0, 1] = math.exp(math.log(0.6 + EPS) + (0.2 - rest) + 0.01) - EPS
    ev2 = sim.step(f2, 3000)
    assert len(ev2) == 1 and ev2["p"][0] == 1 and (ev2["x"][0], ev2["y"][0]) == (1, 0)


def test_refractory_drops_close_events():
    sim = EventSimulator((1, 1), C=0.2, eps=EPS, refractory_us=300)
    sim.step(np.full((1, 1), 0.1), 0)
    ev = sim.step(np.full((1, 1), 0.6), 1000)  # 8 crossings at ~112, 224, ..., 897 us
    times = [math.floor(1000 * k * 0.2 / (math.log(0.601) - math.log(0.101))) for k in range(1, 9)]
    kept, last = [], -(10**9)
    for t in times:
        if t - last >= 300:
            kept.append(t)
            last = t
    assert ev["t"].tolist() == kept


def test_threshold_noise_is_seeded():
    a = EventSimulator((4, 4), sigma=0.1, seed=3)
    b = EventSimulator((4, 4), sigma=0.1, seed=3)
    np.testing.assert_array_equal(a.C_on, b.C_on)
    assert a.C_on.std() > 0


def test_moving_edge_events_only_where_it_moves():
    H, W = 8, 40
    sim = EventSimulator((H, W), C=0.15, eps=EPS)
    xs = np.arange(W, dtype=np.float64)
    all_ev = []
    for k in range(11):
        e = 10.0 + 0.5 * k  # the edge moves from x = 10 to x = 15 (dark left, bright right, 1 px ramp)
        frame = (0.1 + 0.7 * np.clip(xs - e + 0.5, 0, 1))[None, :] * np.ones((H, 1))
        all_ev.append(sim.step(frame, k * 1000))
    ev = np.concatenate(all_ev)
    # only pixels the ramp passes over (9.5 < x < 15.5) change; static regions stay silent
    assert len(ev) > 0 and ev["x"].min() >= 10 and ev["x"].max() <= 15
    assert np.all(ev["p"] == 0)  # bright -> dark as the dark side grows
    assert set(np.unique(ev["x"]).tolist()) == set(range(10, 16))
    assert set(np.unique(ev["y"]).tolist()) == set(range(H))


def test_boxes_move_with_the_image(tmp_path):
    rng = np.random.default_rng(0)
    img = (rng.random((300, 500)) * 200 + 20).astype(np.uint8)
    boxes = np.array([[200.0, 100, 260, 160], [5, 5, 40, 40]])

    def motion(t):  # pan right by 20 image px per 100 ms, scale 1
        return 250.0 + 200.0 * t / 1e6, 150.0, 1.0

    ev, lab = simulate_recording(img, boxes, [0, 0], duration_us=200_000, fps=500, motion=motion,
                                 out_dir=tmp_path, name="pan", label_hz=20)
    assert sorted(set(lab["t"].tolist())) == [50_000, 100_000, 150_000, 200_000]
    for t in (50_000, 200_000):
        row = lab[(lab["t"] == t) & (lab["track_id"] == 0)]
        cx = 250.0 + 200.0 * t / 1e6
        # sensor x = image x - cx + W / 2, y = image y - cy + H / 2
        assert row["x"][0] == pytest.approx(200 - cx + 152) and row["y"][0] == pytest.approx(100 - 150 + 120)
        assert row["w"][0] == pytest.approx(60) and row["h"][0] == pytest.approx(60)
    assert not np.any(lab["track_id"] == 1)  # the corner box is outside the view
    back = read_dat(tmp_path / "pan_td.dat")
    assert len(back) == len(ev) > 0 and back["x"].max() < 304 and back["y"].max() < 240
    np.testing.assert_array_equal(read_bbox(tmp_path / "pan_bbox.npy")["x"], lab["x"])


def test_view_boxes_clip_and_drop():
    b, keep = view_boxes(np.array([[0.0, 0, 100, 100], [0, 0, 10, 10]]), 152 + 50, 120 + 50, 1.0,
                         min_visibility=0.5)
    # view starts at image (50, 50): box 0 has 50x50 of 100x100 visible (0.25 < 0.5) -> dropped
    assert keep.tolist() == []
    b, keep = view_boxes(np.array([[40.0, 40, 100, 100]]), 152 + 50, 120 + 50, 1.0, min_visibility=0.5)
    assert keep.tolist() == [0]
    np.testing.assert_allclose(b, [[0, 0, 50, 50]])


def test_tree_split_is_spatial():
    from spikeyolo.demo.trees import tree_event_splits

    sp = tree_event_splits()
    assert set(sp) == {"train", "val", "test"}
    for (_, img_tr, _, _), (_, img_va, b_va, _) in zip(sp["train"], sp["val"]):
        assert img_tr.shape[0] > img_va.shape[0]  # val is the top half of the right strip
        assert len(b_va) > 0 and b_va.min() >= 0
        assert b_va[:, 2].max() <= img_va.shape[1] and b_va[:, 3].max() <= img_va.shape[0]


def test_absolute_scale_and_image_smaller_than_the_view():
    from spikeyolo.demo.simulator import random_motion

    for seed in range(5):
        motion = random_motion(1_000_000, (100, 80), seed=seed, scale_range=(0.5, 0.7), speed=200.0)
        assert 0.5 * 0.7 <= motion(0)[2] <= 0.7 * 1.3  # starts in the range, zooms by at most 30 %
        for t in range(0, 1_000_001, 50_000):
            cx, cy, s = motion(t)
            # the 80x100 image covers 160x200 sensor pixels at s=0.5: it must stay inside the 304x240 view
            left, top = 152 - cx / s, 120 - cy / s
            assert left >= -1e-6 and top >= -1e-6
            assert left + 80 / s <= 304 + 1e-6 and top + 100 / s <= 240 + 1e-6


def test_outside_the_image_is_a_flat_wall_at_its_mean_level():
    img = np.zeros((60, 80), np.float32)
    img[:, :40], img[:, 40:] = 0.2, 0.6  # two-tone card, mean 0.4
    view = render_view(img, 40.0, 30.0, 1.0, background=0.4)  # the card centred: sensor x 112..191, y 90..149
    assert view[0, 0] == pytest.approx(0.4) and view[120, 120] == pytest.approx(0.2)

    def motion(t):  # the card slides right by 20 sensor px over 100 ms
        return 40.0 - 200.0 * t / 1e6, 30.0, 1.0

    ev, _ = simulate_recording(img, np.zeros((0, 4)), [], duration_us=100_000, fps=200, motion=motion)
    x = ev["x"].astype(int)
    # the card's outer edges against the wall fire (with a replicated border they would not), the wall does not
    assert np.any((x >= 110) & (x < 134)) and np.any((x >= 190) & (x < 214))
    assert np.all((x >= 110) & (x < 214)) and np.all((ev["y"] >= 89) & (ev["y"] <= 150))
