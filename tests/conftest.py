"""Shared test fixtures. Keep this file small: fixtures used by one test file belong in that file."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def _private_cache_dir(tmp_path_factory, monkeypatch):
    """Label caches that fall back to the user cache dir go to a temporary folder, not ~/.cache."""
    monkeypatch.setenv("SPIKEYOLO_CACHE_DIR", str(tmp_path_factory.mktemp("spikeyolo_cache")))
