"""Shared test fixtures. Keep this file small: fixtures used by one test file belong in that file."""

from __future__ import annotations

import numpy as np
import pytest


@pytest.fixture(autouse=True)
def _private_cache_dir(tmp_path_factory, monkeypatch):
    """Label caches that fall back to the user cache dir go to a temporary folder, not ~/.cache."""
    monkeypatch.setenv("SPIKEYOLO_CACHE_DIR", str(tmp_path_factory.mktemp("spikeyolo_cache")))


@pytest.fixture
def recording(tmp_path):
    """``(tmp_path / "r_td.dat", events)``: 3000 random events over 0.4 s (event stream and checkpoint tests)."""
    from _event_data import random_events
    from spikeyolo.events.io import write_dat

    e = random_events(np.random.default_rng(0), 3000, 400_000)
    write_dat(tmp_path / "r_td.dat", e)
    return tmp_path / "r_td.dat", e
