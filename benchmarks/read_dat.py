"""Reading speed of Prophesee ``*_td.dat`` files: full reads and windowed reads of a large generated file.

    python benchmarks/read_dat.py [--events 50000000] [--rate 2000000] [--window-ms 50] [--windows 1000]

Writes a file of ``--events`` random events at ``--rate`` events/s (50M events = 400 MB) into a temporary
folder, measures, prints a table, and deletes the file. "cold" rows first ask the kernel to drop the file's
pages from the page cache (``posix_fadvise DONTNEED``; best effort), "warm" rows read it again from memory.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

import numpy as np

from spikeyolo.events.io import RAW_DTYPE, DatReader, read_dat, write_dat


def make_file(path: str, n: int, rate: float, chunk: int = 5_000_000, seed: int = 0) -> int:
    """Random events (uniform pixels, Poisson-like times at ``rate``/s) appended chunk by chunk."""
    rng = np.random.default_rng(seed)
    write_dat(path, np.zeros(0, [("t", "i8"), ("x", "u2"), ("y", "u2"), ("p", "u1")]))
    t_last = 0
    with open(path, "ab") as f:
        for a in range(0, n, chunk):
            m = min(chunk, n - a)
            dt = rng.exponential(1e6 / rate, m)
            t = t_last + np.floor(np.cumsum(dt)).astype(np.int64)
            t_last = int(t[-1])
            rec = np.empty(m, RAW_DTYPE)
            rec["t"] = (t % (1 << 32)).astype(np.uint32)
            x = rng.integers(0, 304, m, dtype=np.uint32)
            y = rng.integers(0, 240, m, dtype=np.uint32)
            p = rng.integers(0, 2, m, dtype=np.uint32)
            rec["w"] = x | (y << 14) | (p << 28)
            f.write(rec.tobytes())
    return t_last


def drop_cache(path: str) -> None:
    try:
        with open(path, "rb") as f:
            os.posix_fadvise(f.fileno(), 0, 0, os.POSIX_FADV_DONTNEED)
    except (AttributeError, OSError):
        pass


def timed(fn, repeat: int = 1):
    best, out = float("inf"), None
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return best, out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--events", type=int, default=50_000_000)
    ap.add_argument("--rate", type=float, default=2_000_000, help="events per second of recording")
    ap.add_argument("--window-ms", type=float, default=50.0)
    ap.add_argument("--windows", type=int, default=1000)
    args = ap.parse_args()

    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "bench_td.dat")
        t0 = time.perf_counter()
        t_last = make_file(path, args.events, args.rate)
        size_mb = os.path.getsize(path) / 2**20
        print(f"wrote {args.events:,} events ({size_mb:.0f} MiB, {t_last / 1e6:.1f} s of recording) "
              f"in {time.perf_counter() - t0:.1f} s")
        rows = []

        drop_cache(path)
        s, r = timed(lambda: DatReader(path))
        rows.append(("open + timestamp scan (cold)", s, len(r), None))
        s, r = timed(lambda: DatReader(path), 3)
        rows.append(("open + timestamp scan (warm)", s, len(r), None))
        s, _ = timed(lambda: DatReader(path, check=False), 3)
        rows.append(("open without scan", s, None, None))

        drop_cache(path)
        s, ev = timed(lambda: read_dat(path))
        rows.append(("full read + decode (cold)", s, len(ev), None))
        del ev
        s, ev = timed(lambda: read_dat(path), 2)
        rows.append(("full read + decode (warm)", s, len(ev), None))
        del ev

        w = int(args.window_ms * 1000)
        rng = np.random.default_rng(1)
        starts = rng.integers(0, max(1, t_last - w), args.windows)
        reader = DatReader(path, check=False)
        drop_cache(path)

        def windows():
            return sum(len(reader.read(int(a), int(a) + w)) for a in starts)

        s, n = timed(windows)
        rows.append((f"{args.windows} random {args.window_ms:g} ms windows (cold)", s, n, args.windows))
        s, n = timed(windows, 2)
        rows.append((f"{args.windows} random {args.window_ms:g} ms windows (warm)", s, n, args.windows))

        def sweep():
            k = n_ev = 0
            for _, _, e in reader.iter_windows(w, w):
                k += 1
                n_ev += len(e)
            return k, n_ev

        s, (k, n) = timed(sweep)
        rows.append((f"sequential {args.window_ms:g} ms windows, whole file", s, n, k))

    print(f"\n| {'operation':<44} | {'time (s)':>9} | {'events':>12} | {'Mevents/s':>9} | {'windows/s':>9} |")
    print(f"|{'-' * 46}|{'-' * 11}|{'-' * 14}|{'-' * 11}|{'-' * 11}|")
    for name, s, n, k in rows:
        ev = f"{n:,}" if n is not None else ""
        rate = f"{n / s / 1e6:.1f}" if n else ""
        wps = f"{k / s:.0f}" if k else ""
        print(f"| {name:<44} | {s:>9.3f} | {ev:>12} | {rate:>9} | {wps:>9} |")


if __name__ == "__main__":
    main()
