"""The ``ingest`` command as a data manager runs it (a subprocess of the installed script)."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from data_ingest import native
from ingest_helpers import PERSON_CSV, PERSON_SPEC, write

INGEST = Path(sys.executable).with_name("ingest")
pytestmark = pytest.mark.skipif(not INGEST.exists(), reason="the ingest script is not installed in this venv")


def run(*args, env_extra=None, cwd=None):
    env = {k: v for k, v in os.environ.items()
           if k not in ("INGEST_KEY_FILE", "WORKSPACE_STORE", "INGEST_DEBUG", native.ENV_SWITCH)}
    env.update(env_extra or {})
    return subprocess.run([str(INGEST), *map(str, args)], capture_output=True, text=True, env=env, cwd=cwd,
                          timeout=120)


def one_error_line(p) -> str:
    assert p.returncode == 2, (p.returncode, p.stdout, p.stderr)
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1, p.stderr
    assert lines[0].startswith("ingest: error: ") and "Traceback" not in p.stderr
    return lines[0]


@pytest.fixture(scope="module")
def cli_env(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("cli")
    store, key = tmp / "store", tmp / "keys" / "master.key"
    p = run("keys", "init", "--store", store, "--key-file", key)
    assert p.returncode == 0, p.stderr
    assert "key id sha256:" in p.stdout
    return store, key


def test_keys_init_is_private_and_refuses_to_overwrite(cli_env):
    store, key = cli_env
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    content = key.read_text()
    line = one_error_line(run("keys", "init", "--store", store, "--key-file", key))
    assert "refusing to overwrite" in line and str(key) in line
    assert key.read_text() == content
    line = one_error_line(run("keys", "init", "--store", store, "--key-file", store / "k.key"))
    assert "must not be inside the store" in line


def test_default_key_file_is_beside_the_store(tmp_path):
    p = run("keys", "init", "--store", tmp_path / "var" / "store")
    assert p.returncode == 0 and (tmp_path / "var" / "keys" / "master.key").exists()
    p = run("keys", "init", env_extra={"INGEST_KEY_FILE": str(tmp_path / "env.key")}, cwd=tmp_path)
    assert p.returncode == 0 and (tmp_path / "env.key").exists()


def test_add_catalog_and_a_summary(cli_env, tmp_path):
    store, key = cli_env
    src = write(tmp_path / "people.csv", PERSON_CSV)
    spec = write(tmp_path / "people.toml", PERSON_SPEC.replace('name = "people"', 'name = "cli_people"'))
    p = run("add", src, "--spec", spec, "--store", store, "--key-file", key)
    assert p.returncode == 0, p.stderr
    assert "cli_people@v1" in p.stdout and "rows in" in p.stdout and "name" in p.stdout  # dropped, reported
    assert "pseudonyms computed by" in p.stdout  # which HMAC ran: native by default, or polars-hash
    assert ("native" if native.available(force=True) else "polars-hash") in p.stdout
    p = run("add", src, "--spec", spec, "--store", store, "--key-file", key)
    assert p.returncode == 0 and "nothing written" in p.stdout
    obj = write(tmp_path / "objections.txt", "123456782\n")
    p = run("objections", "add", obj, "--store", store, "--key-file", key)
    assert p.returncode == 0 and "1 new in the register" in p.stdout
    p = run("add", src, "--spec", spec, "--store", store, "--key-file", key)  # the register changed
    assert p.returncode == 0 and "cli_people@v2" in p.stdout
    p = run("catalog", "cli_people", "--store", store, "--json")
    rows = json.loads(p.stdout)
    assert [r["identifier"] for r in rows] == ["cli_people@v1", "cli_people@v2"]
    assert [r["number_of_records"] for r in rows] == [4, 3]
    p = run("catalog", "cli_people", "--store", store)
    assert p.returncode == 0 and "birth_year" in p.stdout


@pytest.mark.parametrize("content, expect", [
    ("bsn,birth,sex,postcode,income\n111222333,1970-05-01,X,1234AB,1\n", ["people.csv, row 1 (line 2), column 'sex'"]),
    ("bsn;birth;sex;postcode;income\n111222333;1970-05-01;M;1234AB;1\n", ["people.csv", "';'-delimited"]),
    ("", ["people.csv: the file is empty"]),
])
def test_bad_input_is_one_line_and_writes_nothing(cli_env, tmp_path, content, expect):
    store, key = cli_env
    before = sorted(p.name for p in (store / "datasets").rglob("*")) if (store / "datasets").exists() else []
    src = tmp_path / "people.csv"
    src.write_text(content)
    spec = write(tmp_path / "people.toml", PERSON_SPEC)
    line = one_error_line(run("add", src, "--spec", spec, "--store", store, "--key-file", key))
    for e in expect:
        assert e in line
    after = sorted(p.name for p in (store / "datasets").rglob("*")) if (store / "datasets").exists() else []
    assert after == before


def test_missing_key_and_unknown_project_are_one_line(cli_env, tmp_path):
    store, key = cli_env
    src, spec = write(tmp_path / "people.csv", PERSON_CSV), write(tmp_path / "people.toml", PERSON_SPEC)
    line = one_error_line(run("add", src, "--spec", spec, "--store", store, "--key-file", tmp_path / "no.key"))
    assert "ingest keys init" in line
    line = one_error_line(run("publish", "cli_people", "--project", "nope", "--store", store, "--key-file", key))
    assert "project 'nope' does not exist" in line
    line = one_error_line(run("publish", "nothing", "--project", "nope", "--store", store, "--key-file", key))
    assert "nope" in line or "nothing" in line
