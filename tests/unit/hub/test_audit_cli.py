"""`workspace-hub audit` reports an intact chain, and the first broken link after an edit."""

import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from hub.airlock.core import Airlock
from hub.airlock.directory import ProjectDirectory

ROOT = Path(__file__).resolve().parents[3]


@pytest.fixture
def home(tmp_path):
    proj = tmp_path / "store" / "projects" / "p"
    proj.mkdir(parents=True)
    (proj / "project.toml").write_text('members = ["ann"]\ncheckers = ["cas"]\n')
    (tmp_path / "airlock").mkdir()
    core = Airlock(f"sqlite:///{tmp_path / 'airlock' / 'airlock.sqlite'}",
                   tmp_path / "airlock" / "releases", ProjectDirectory(tmp_path / "store"))
    r = core.create_request("ann", "p", "a request")
    core.add_output("ann", r["id"], name="notes", kind="file", description="d",
                    files={"notes.md": b"# notes\n"}, verified=False)
    core.submit("ann", r["id"])
    core.close()
    return tmp_path


def run(home):
    env = {"WORKSPACE_HOME": str(home), "PATH": "/usr/bin:/bin"}
    return subprocess.run([sys.executable, "-m", "hub.cli", "audit"], cwd=ROOT, env=env,
                          capture_output=True, text=True)


def test_intact_chain(home):
    res = run(home)
    assert res.returncode == 0, res.stderr
    assert "audit log intact" in res.stdout


@pytest.mark.parametrize("sql", [
    "UPDATE audit_log SET actor = 'mallory' WHERE seq = 2",
    "DELETE FROM audit_log WHERE seq = 2",
])
def test_an_edited_or_removed_entry_is_reported(home, sql):
    with sqlite3.connect(home / "airlock" / "airlock.sqlite") as db:
        db.execute(sql)
    res = run(home)
    assert res.returncode == 1
    assert "BROKEN at entry" in res.stdout


def test_missing_database_is_one_clear_line(tmp_path):
    res = run(tmp_path)
    assert res.returncode != 0
    assert res.stderr.strip().startswith("workspace-hub: no airlock database")
    assert "Traceback" not in res.stderr
