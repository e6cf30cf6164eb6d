"""Prophesee .dat / bbox .npy I/O against hand-packed bytes and brute-force filtering."""

import struct

import numpy as np
import pytest

from spikeyolo.events import io as dat_io
from spikeyolo.events.io import (
    EVENT_DTYPE,
    DatFormatError,
    DatReader,
    read_bbox,
    read_dat,
    write_bbox,
    write_dat,
)

HEADER = b"% Date 2020-01-01 00:00:00\n% Height 240\n% Width 304\n"


def _raw_file(path, records, header=HEADER, size=8, extra=b""):
    body = b"".join(struct.pack("<II", t, w) for t, w in records)
    path.write_bytes(header + bytes((0, size)) + body + extra)
    return path


def _events(t, x, y, p):
    e = np.zeros(len(t), EVENT_DTYPE)
    e["t"], e["x"], e["y"], e["p"] = t, x, y, p
    return e


def test_bit_layout_hand_packed(tmp_path):
    # x = 5, y = 7, p = 1 -> 5 + 7 * 2**14 + 2**28
    word = 5 + 7 * 16384 + 268435456
    f = _raw_file(tmp_path / "a_td.dat", [(1000, word), (1500, 303 + 239 * 16384)])
    ev = read_dat(f)
    assert ev.dtype == EVENT_DTYPE
    assert ev["t"].tolist() == [1000, 1500]
    assert ev["x"].tolist() == [5, 303] and ev["y"].tolist() == [7, 239] and ev["p"].tolist() == [1, 0]
    r = DatReader(f)
    assert (r.height, r.width) == (240, 304) and r.header["Date"] == "2020-01-01 00:00:00"

    # writing the same events gives exactly these record bytes after a '%' header and the bytes 0, 8
    out = write_dat(tmp_path / "b_td.dat", ev)
    data = out.read_bytes()
    assert data.startswith(b"% Date ")
    assert b"% Height 240\n" in data and b"% Width 304\n" in data
    assert data[-18:] == bytes((0, 8)) + struct.pack("<II", 1000, word) + struct.pack("<II", 1500, 303 + 239 * 16384)


def test_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    n = 1000
    ev = _events(np.sort(rng.integers(0, 10**7, n)), rng.integers(0, 304, n), rng.integers(0, 240, n),
                 rng.integers(0, 2, n))
    write_dat(tmp_path / "r_td.dat", ev, header_lines=["Height 240", "Width 304", "custom line"])
    back = read_dat(tmp_path / "r_td.dat")
    for k in "txyp":
        np.testing.assert_array_equal(back[k], ev[k])
    assert DatReader(tmp_path / "r_td.dat").header["custom"] == "line"


def test_header_errors(tmp_path):
    f = tmp_path / "nohdr_td.dat"
    f.write_bytes(bytes((0, 8)) + struct.pack("<II", 1, 1))
    with pytest.raises(DatFormatError, match="nohdr_td.dat.*missing header"):
        read_dat(f)
    g = _raw_file(tmp_path / "size_td.dat", [(1, 1)], size=4)
    with pytest.raises(DatFormatError, match="size_td.dat.*event size is 4"):
        read_dat(g)
    h = tmp_path / "cut_td.dat"
    h.write_bytes(b"% Height 240\n% Width 30")
    with pytest.raises(DatFormatError, match="cut_td.dat"):
        read_dat(h)


def test_truncated_last_event_warns(tmp_path):
    f = _raw_file(tmp_path / "t_td.dat", [(10, 1), (20, 2)], extra=b"\x01\x02\x03")
    with pytest.warns(UserWarning, match="t_td.dat.*truncated"):
        ev = read_dat(f)
    assert ev["t"].tolist() == [10, 20] and ev["x"].tolist() == [1, 2]


def test_garbage_time_order_is_rejected(tmp_path):
    f = _raw_file(tmp_path / "back_td.dat", [(100, 0), (200, 0), (150, 0)])  # 1 of 3 events out of order
    with pytest.raises(DatFormatError, match=r"back_td.dat: at least 1 of 3 events .*event 2.* not in time order"):
        read_dat(f)


@pytest.mark.parametrize("chunk", [7, 1 << 22])  # scanned in chunks of 7 events too: the clamp crosses chunks
def test_small_backward_steps_are_clamped_with_a_warning(tmp_path, monkeypatch, chunk):
    monkeypatch.setattr(dat_io, "_SCAN_CHUNK", chunk)
    # issue 11.12: 3 of 400 events (0.75%, under the 1% limit) are earlier than the event before them
    t = np.arange(400) * 10
    t[[50, 51, 300]] = [485, 470, 2995]  # after 490, 485 -> clamped to 490; 2995 after 2990 is fine
    t[301] = 2000  # a single event far back (after 2995)
    ev = _events(t, np.arange(400) % 304, np.zeros(400), np.ones(400))
    f = _raw_file(tmp_path / "s_td.dat", [(int(a), int(x)) for a, x in zip(t, ev["x"])])
    with pytest.warns(UserWarning, match=r"s_td.dat: 3 of 400 events .*by up to 995 us.*clamped"):
        r = DatReader(f)
    want = np.maximum.accumulate(t)  # brute force: each event gets the latest time seen so far
    assert r.n_clamped == 3 and (want != t).sum() == 3
    np.testing.assert_array_equal(r.read()["t"], want)
    np.testing.assert_array_equal(r.read()["x"], ev["x"])  # no event lost or moved
    for a, b in [(480, 500), (490, 491), (2000, 3000), (2995, 3005), (0, 10**6)]:
        np.testing.assert_array_equal(r.read(a, b)["x"], ev["x"][(want >= a) & (want < b)])


def test_header_size_is_capped_and_malformed_values_name_the_line(tmp_path):
    # issue 11.11: a 100000x100000 header would have frames asking for tens of GiB
    for name, header, msg in [
        ("big", b"% Height 100000\n% Width 100000\n", r"big_td.dat: header line 1: Height 100000 outside 1..16384"),
        ("prod", b"% Height 16000\n% Width 16000\n", r"prod_td.dat: sensor 16000x16000 is larger than"),
        ("zero", b"% Date x\n% Width 0\n", r"zero_td.dat: header line 2: Width 0 outside"),
        ("text", b"% Date x\n% Height 24O\n", r"text_td.dat: header line 2: Height '24O' is not an integer"),
    ]:
        f = _raw_file(tmp_path / f"{name}_td.dat", [(1, 1)], header=header)
        with pytest.raises(DatFormatError, match=msg):
            DatReader(f, check=False)
    r = DatReader(_raw_file(tmp_path / "ok_td.dat", [(1, 1)], header=b"% Height 720\n% Width 1280\n"))
    assert (r.height, r.width) == (720, 1280)


@pytest.mark.parametrize("chunk", [2, 1 << 22])
def test_uint32_wrap_around(tmp_path, monkeypatch, chunk):
    monkeypatch.setattr(dat_io, "_SCAN_CHUNK", chunk)
    big = 2**32 - 10
    f = _raw_file(tmp_path / "w_td.dat", [(big - 5, 1), (big, 2), (3, 3), (7, 4), (2**31, 5)])
    ev = read_dat(f)
    assert ev["t"].tolist() == [big - 5, big, 2**32 + 3, 2**32 + 7, 2**32 + 2**31]
    r = DatReader(f)
    assert r.read(big, 2**32 + 7)["x"].tolist() == [2, 3]
    assert r.read(2**32 + 4, None)["x"].tolist() == [4, 5]
    assert r.read(0, big)["x"].tolist() == [1]
    # writer stores modulo 2**32 and the reader restores the same times
    write_dat(tmp_path / "w2_td.dat", ev)
    np.testing.assert_array_equal(read_dat(tmp_path / "w2_td.dat")["t"], ev["t"])


def test_windowed_reads_match_brute_force(tmp_path):
    rng = np.random.default_rng(1)
    n = 5000
    t = np.sort(rng.integers(0, 200_000, n))
    t[100:110] = t[100]  # runs of equal timestamps
    ev = _events(t, rng.integers(0, 304, n), rng.integers(0, 240, n), rng.integers(0, 2, n))
    write_dat(tmp_path / "x_td.dat", ev)
    r = DatReader(tmp_path / "x_td.dat")
    for a, b in [(0, 1), (t[100], t[100] + 1), (-50, 10), (150_000, 10**9), (10**9, 10**9 + 5)] + [
        tuple(sorted(rng.integers(-1000, 210_000, 2))) for _ in range(30)
    ]:
        got = r.read(a, b)
        want = ev[(ev["t"] >= a) & (ev["t"] < b)]
        np.testing.assert_array_equal(got["t"], want["t"])
        np.testing.assert_array_equal(got["x"], want["x"])
    wins = list(r.iter_windows(50_000, 20_000, t_start=0, t_end=200_000))
    assert [w[:2] for w in wins] == [(s, s + 50_000) for s in range(0, 150_001, 20_000)]
    for t0, t1, e in wins:
        assert len(e) == int(((ev["t"] >= t0) & (ev["t"] < t1)).sum())


def test_bbox_round_trip_and_ts_field(tmp_path):
    gen1 = np.dtype([("ts", "<u8"), ("x", "<f4"), ("y", "<f4"), ("w", "<f4"), ("h", "<f4"),
                     ("class_id", "u1"), ("confidence", "<f4"), ("track_id", "<u4")])
    a = np.zeros(2, gen1)
    a["ts"] = [50_000, 100_000]
    a["x"], a["w"], a["class_id"], a["track_id"] = [1.5, 2], [10, 20], [0, 1], [7, 8]
    np.save(tmp_path / "g_bbox.npy", a)
    b = read_bbox(tmp_path / "g_bbox.npy")
    assert b["t"].tolist() == [50_000, 100_000] and b["track_id"].tolist() == [7, 8]
    write_bbox(tmp_path / "o_bbox.npy", b, time_field="ts")
    c = np.load(tmp_path / "o_bbox.npy")
    assert c.dtype == gen1 and c["x"].tolist() == [1.5, 2.0]
    # without confidence / track_id
    d = np.zeros(1, [("t", "<u8"), ("x", "<f4"), ("y", "<f4"), ("w", "<f4"), ("h", "<f4"), ("class_id", "u1")])
    np.save(tmp_path / "d_bbox.npy", d)
    e = read_bbox(tmp_path / "d_bbox.npy")
    assert e["confidence"].tolist() == [1.0] and e["track_id"].tolist() == [0]
    np.save(tmp_path / "bad_bbox.npy", np.zeros(3))
    with pytest.raises(ValueError, match="bad_bbox.npy"):
        read_bbox(tmp_path / "bad_bbox.npy")


def test_windowed_read_touches_only_the_window(tmp_path):
    import tracemalloc

    n = 1_000_000  # 8 MB of records
    ev = _events(np.arange(n) * 10, np.zeros(n), np.zeros(n), np.ones(n))
    write_dat(tmp_path / "big_td.dat", ev)
    r = DatReader(tmp_path / "big_td.dat", check=False)
    tracemalloc.start()
    got = r.read(5_000_000, 5_001_000)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert got["t"].tolist() == list(range(5_000_000, 5_001_000, 10))
    assert peak < 200_000  # no copy of the 4 MB timestamp column


def test_xyxy_to_bbox_by_hand():
    from spikeyolo.events.io import BBOX_DTYPE, xyxy_to_bbox

    a = xyxy_to_bbox(50_000, [[10, 20, 40, 60], [0, 0, 5, 8]], [1, 0], [0.9, 0.4], [7, 8])
    assert a.dtype == BBOX_DTYPE and a["t"].tolist() == [50_000, 50_000]
    assert a["x"].tolist() == [10, 0] and a["y"].tolist() == [20, 0]
    assert a["w"].tolist() == [30, 5] and a["h"].tolist() == [40, 8]
    assert a["class_id"].tolist() == [1, 0] and a["track_id"].tolist() == [7, 8]
    np.testing.assert_allclose(a["confidence"], [0.9, 0.4], rtol=1e-6)
    assert len(xyxy_to_bbox(0, np.zeros((0, 4)), 0)) == 0
