"""The sandboxed half of :mod:`hub.airlock.sandbox`: one job on stdin, one JSON answer on stdout.

Never imported by the airlock itself; run as ``python -I -m hub.airlock.sandbox_worker`` in a
process with limits and (as root) dropped privileges.
"""

from __future__ import annotations

import json
import os
import re
import sys
from pathlib import Path

SAFE_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class Refused(Exception):
    pass


def connect(data_dir: Path, memory_mb: int, threads: int):
    import duckdb

    con = duckdb.connect(config={
        "autoinstall_known_extensions": False,
        "autoload_known_extensions": False,
        "allow_community_extensions": False,
        "allow_unsigned_extensions": False,
        "memory_limit": f"{memory_mb}MB",
        "threads": threads,
        "temp_directory": "",
    })
    con.execute("SET allowed_directories = [?]", [str(data_dir) + "/"])
    con.execute("SET enable_external_access = false")
    for d in sorted(data_dir.iterdir()):
        if d.is_dir() and SAFE_NAME.match(d.name) and any(d.glob("*.parquet")):
            glob = str(d / "*.parquet").replace("'", "''")
            con.execute(f"CREATE VIEW \"{d.name}\" AS SELECT * FROM read_parquet('{glob}')")
    con.execute("SET lock_configuration = true")
    return con


def check_select(con, sql) -> str:
    import duckdb

    if not isinstance(sql, str) or not sql.strip():
        raise Refused("the output has no SQL query to recompute")
    try:
        statements = con.extract_statements(sql)
    except duckdb.Error as exc:
        raise Refused(f"the query does not parse: {str(exc).splitlines()[0]}") from None
    if len(statements) != 1:
        raise Refused(f"exactly one SELECT statement is accepted, not {len(statements)}")
    if statements[0].type != duckdb.StatementType.SELECT:
        raise Refused(f"only a SELECT statement is accepted, not {statements[0].type.name}")
    return sql.strip().rstrip(";")


# kind -> the sdc function that recomputes it from its spec
RECOMPUTE = {"table": "table_from_spec", "figure": "figure_from_spec", "model": "model_from_spec"}


def run(job: dict) -> dict:
    import base64

    import duckdb

    import sdc

    spec = job.get("spec")
    if not isinstance(spec, dict):
        raise Refused("the output has no spec")
    kind = spec.get("kind", "table")
    fn = getattr(sdc, RECOMPUTE.get(kind, ""), None) if isinstance(kind, str) else None
    if fn is None:
        raise Refused(f"outputs of kind {kind!r} cannot be recomputed by the airlock")
    spec = dict(spec)
    if kind == "table":
        spec.pop("kind")
    source = spec.get("source") or {}
    if not isinstance(source, dict) or set(source) != {"sql"}:
        raise Refused(f"only a {kind} defined by a SQL query on the project's data can be "
                      "recomputed")
    con = connect(Path(job["data_dir"]), int(job["memory_mb"]), int(job["threads"]))
    spec["source"] = {"sql": check_select(con, source["sql"])}
    try:
        policy = sdc.load_policy(job["policy"])
        out = fn(spec, con, policy=policy)
        released = out.to_json()
        evidence = out.to_json(reveal=True)
        if kind == "table":
            tips = out.explanations()
            why = [{"key": c["key"], "status": c["status"], "text": tips[i]}
                   for i, c in enumerate(released["cells"])
                   if c["status"] != "safe" or c["review"]]
            files = {"table.csv": out.to_csv().encode(),
                     "table.json": json.dumps(released, indent=1).encode()}
        else:
            why = [{"key": {}, "status": "primary", "text": str(r)}
                   for r in released.get("reasons") or released.get("rules") or []]
            files = out.files()
        html = out.to_html()
    except (sdc.SdcError, duckdb.Error) as exc:
        msg = str(exc).splitlines()[0]
        if "Out of Memory" in msg:
            raise Refused(f"the query needed more memory than the limit of "
                          f"{job['memory_mb']} MB") from None
        if isinstance(exc, duckdb.Error):
            msg = f"the query failed: {msg}"
        raise Refused(msg) from None
    return {
        "ok": True,
        "kind": kind,
        "json": released,
        "evidence": evidence,
        "why": why,
        "files": {name: base64.b64encode(data).decode() for name, data in files.items()},
        "html": html,
        "summary": released.get("summary", {}),
    }


def answer(job: dict) -> dict:
    try:
        return run(job)
    except Refused as exc:
        return {"ok": False, "error": str(exc)}
    except MemoryError:
        return {"ok": False, "error": "the query needed more memory than allowed"}
    except Exception as exc:  # noqa: BLE001 - the job's own failure, reported in one line
        return {"ok": False, "error": f"the recomputation failed: {type(exc).__name__}: {exc}"}


def _read_all(fd: int, deadline: float) -> bytes | None:
    """Everything the child writes before it closes the pipe, or None past the deadline."""
    import select
    import time

    chunks = []
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            return None
        ready, _, _ = select.select([fd], [], [], left)
        if not ready:
            return None
        chunk = os.read(fd, 1 << 20)
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)


def fork_job(job: dict) -> dict:
    """Run one job in a forked child with the job's limits; the child shares nothing back but
    its answer."""
    import signal
    import time

    from hub.airlock.sandbox import _limit_rlimits

    timeout = float(job.get("timeout_s", 120))
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child
        try:
            os.close(r)
            _limit_rlimits(int(job.get("address_space_mb", 8192)), int(timeout) + 5,
                           int(job.get("max_output_bytes", 64 << 20)))
            data = json.dumps(answer(job)).encode()
            view = memoryview(data)
            while view:
                view = view[os.write(w, view):]
        finally:
            os._exit(0)
    os.close(w)
    try:
        data = _read_all(r, time.monotonic() + timeout)
    finally:
        os.close(r)
    if data is None:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        return {"ok": False, "error": f"the query ran longer than the limit of {timeout:.0f} s "
                                      "and was stopped"}
    _, status = os.waitpid(pid, 0)
    if not data:
        sig = os.WTERMSIG(status) if os.WIFSIGNALED(status) else 0
        if sig in (signal.SIGXCPU, signal.SIGKILL):
            return {"ok": False, "error": "the query used more CPU time than allowed"}
        return {"ok": False, "error": "the recomputation failed (its process ended without an "
                                      "answer, most likely out of memory)"}
    return json.loads(data)


def serve() -> None:
    """Import everything once, then answer one JSON job per line, each in a forked child."""
    import duckdb  # noqa: F401 - warm imports shared by every job
    import numpy  # noqa: F401
    import polars  # noqa: F401

    import sdc  # noqa: F401
    import sdc.table  # noqa: F401

    out = sys.stdout.buffer
    for line in sys.stdin.buffer:
        if not line.strip():
            continue
        try:
            job = json.loads(line)
            result = fork_job(job)
        except ValueError:
            result = {"ok": False, "error": "the job is not JSON"}
        out.write(json.dumps(result).encode() + b"\n")
        out.flush()


def main() -> None:
    if "--serve" in sys.argv[1:]:
        serve()
        return
    sys.stdout.write(json.dumps(answer(json.loads(sys.stdin.buffer.read()))))


if __name__ == "__main__":
    main()
