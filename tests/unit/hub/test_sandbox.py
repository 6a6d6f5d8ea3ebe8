"""The airlock's recomputation sandbox: real DuckDB, real Parquet, real processes."""

import os
from pathlib import Path

import duckdb
import pytest

from hub.airlock.sandbox import Limits, SandboxError, recompute


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    root = tmp_path_factory.mktemp("store")
    data = root / "projects" / "p" / "data"
    other = root / "projects" / "q" / "data" / "secret"
    (data / "persons").mkdir(parents=True)
    other.mkdir(parents=True)
    duckdb.sql(f"""COPY (SELECT range AS person_id, CASE WHEN range % 2 = 0 THEN 'F' ELSE 'M' END
                         AS sex, (range % 4)::VARCHAR AS region, (range * 7) % 1000 AS income
                         FROM range(2000)) TO '{data / 'persons' / 'part-0.parquet'}'""")
    duckdb.sql(f"COPY (SELECT 42 AS x) TO '{other / 'part-0.parquet'}'")
    for p in [*data.rglob("*"), data]:
        p.chmod(0o555 if p.is_dir() else 0o444)
    yield data
    for p in [*data.rglob("*"), data]:
        p.chmod(0o755 if p.is_dir() else 0o644)


def spec(sql, **kw):
    return {"kind": "table", "source": {"sql": sql}, "rows": ["sex"], "stat": "count", **kw}


def test_recomputes_a_table(project):
    r = recompute(project, spec("SELECT * FROM persons", cols=["region"]), "acro")
    assert r.kind == "table"
    total = next(c for c in r.json["cells"] if set(c["key"].values()) == {"Total"})
    assert total["value"] == 2000
    assert r.files["table.csv"].startswith(b"sex")
    assert set(r.files) == {"table.csv", "table.json"}
    assert r.evidence["cells"][0].get("true_value") is not None or r.summary["primary"] == 0


def test_applies_the_given_policy_not_the_researchers(project):
    # the spec claims a lenient policy; the airlock passes the project's own
    s = spec("SELECT * FROM persons WHERE person_id < 15", policy="opensafely")
    r = recompute(project, s, "acro")
    assert r.json["policy"]["name"] == "acro"
    assert r.summary["primary"] > 0  # 15 units split in two cells: under acro's threshold of 10


@pytest.mark.parametrize("sql, message", [
    ("SELECT * FROM persons; SELECT 1", "exactly one SELECT"),
    ("COPY (SELECT 1) TO 'x.csv'", "only a SELECT"),
    ("ATTACH 'x.db'", "only a SELECT"),
    ("INSTALL httpfs", "only a SELECT"),
    ("LOAD httpfs", "only a SELECT"),
    ("SET memory_limit='100GB'", "only a SELECT"),
    ("PRAGMA threads=8", "only a SELECT"),
    ("CREATE TABLE t AS SELECT 1", "only a SELECT"),
    ("SELECT * FROM read_csv('/etc/passwd')", "Permission Error"),
    ("SELECT content AS sex FROM read_text('/etc/hostname')", "Permission Error"),
    ("SELECT 'x' AS sex FROM glob('/**')", "Permission Error"),
    ("SELECT x AS sex FROM read_parquet('{other}')", "Permission Error"),
    ("SELECT * FROM read_parquet('https://example.invalid/x.parquet')", "Permission Error"),
    ("SELEC * FROM persons", "does not parse"),
    ("", "no SQL query"),
])
def test_escapes_are_refused_with_a_clear_reason(project, sql, message):
    other = project.parent.parent / "q" / "data" / "secret" / "part-0.parquet"
    with pytest.raises(SandboxError, match=message):
        recompute(project, spec(sql.format(other=other)), "acro")


def test_only_sql_specs_are_recomputed(project):
    s = {"kind": "table", "source": {"path": "/etc/passwd"}, "rows": ["sex"]}
    with pytest.raises(SandboxError, match="only a table defined by a SQL query"):
        recompute(project, s, "acro")


def test_a_query_that_runs_forever_is_stopped(project):
    s = spec("SELECT 'F' AS sex FROM range(1000000000000) a")
    with pytest.raises(SandboxError, match="longer than the limit|CPU time"):
        recompute(project, s, "acro", Limits(timeout_s=3))


def test_a_query_that_eats_memory_is_stopped(project):
    s = spec("SELECT string_agg(repeat('x', 1000), ',') AS sex FROM range(10000000)")
    with pytest.raises(SandboxError, match="memory"):
        recompute(project, s, "acro", Limits(memory_mb=100, timeout_s=60))


@pytest.mark.skipif(os.geteuid() != 0, reason="the mount namespace needs root")
def test_data_is_read_only_at_the_os_level_even_for_root(project):
    """The worker's confinement: run a shell through the same wrapper and try to write."""
    import subprocess

    from hub.airlock import sandbox

    cmd = sandbox.worker_command(Path(project))
    assert cmd[0] == "unshare"
    wrapper = cmd[: cmd.index(str(project)) + 1]
    shell = wrapper + ["sh", "-c", f"touch {project}/x 2>&1; grep CapEff /proc/self/status"]
    out = subprocess.run(shell, capture_output=True, text=True).stdout
    assert "Read-only file system" in out
    assert "CapEff:\t0000000000000000" in out
    assert not (Path(project) / "x").exists()
