"""Fixtures for data_ingest: a store and a key file in a temporary folder, small sources."""

from __future__ import annotations

from pathlib import Path

import pytest

from data_ingest.keys import init_key
from ingest_helpers import PERSON_CSV, PERSON_SPEC, write


@pytest.fixture
def env(tmp_path: Path):
    """(store, key_file) in a fresh folder; the key lives beside the store, not in it."""
    store = tmp_path / "store"
    key = tmp_path / "keys" / "master.key"
    init_key(key, store)
    return store, key


@pytest.fixture
def people(tmp_path: Path):
    """(source csv, spec) for a small person file."""
    return write(tmp_path / "people.csv", PERSON_CSV), write(tmp_path / "people.toml", PERSON_SPEC)
