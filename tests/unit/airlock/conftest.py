"""Fixtures for the airlock's core: a real SQLite file and a real release folder in tmp_path."""
import pytest

from airlock_support import FakeDirectory
from hub.airlock.core import Airlock


@pytest.fixture
def directory():
    return FakeDirectory()


@pytest.fixture
def db_url(tmp_path):
    return f"sqlite:///{tmp_path / 'airlock.sqlite'}"


@pytest.fixture
def airlock(tmp_path, db_url, directory):
    a = Airlock(db_url, tmp_path / "released", directory)
    yield a
    a.close()
