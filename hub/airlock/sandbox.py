"""Trusted recomputation of an output from its spec, in a sandbox.

Running a researcher's SQL on the trusted side is running untrusted code, so every job is a
separate process (:mod:`hub.airlock.sandbox_worker`) that

* runs, when the airlock runs as root, in a mount namespace of its own where the project's data
  folder is bind-mounted read-only, with every capability dropped (bounding set empty) and
  ``no_new_privs`` set (``unshare`` and ``setpriv`` from util-linux): the data cannot be changed
  at the operating-system level even by a bug in DuckDB; in its own session, an empty working
  folder and a minimal environment;
* sees only that one project's data folder through DuckDB's ``allowed_directories``, with
  ``enable_external_access`` off, extension installing and autoloading off, and the
  configuration locked before the researcher's SQL runs;
* accepts exactly one SELECT statement (checked with DuckDB's own parser) and nothing else;
* has limits: DuckDB's ``memory_limit`` and ``threads``, address-space, CPU-time, file-size and
  open-file limits, and a wall-clock timeout after which the whole process group is killed.

:func:`recompute` returns a :class:`Recomputed` or raises :class:`SandboxError` with a message
fit to show the researcher.
"""

from __future__ import annotations

import json
import os
import resource
import signal
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


class SandboxError(RuntimeError):
    """The job was refused or failed; the message is for the researcher."""


@dataclass(frozen=True)
class Limits:
    timeout_s: float = 120.0
    memory_mb: int = 2048          # DuckDB's memory_limit
    address_space_mb: int = 8192   # RLIMIT_AS for the whole worker
    threads: int = 1
    max_output_bytes: int = 64 * 1024 * 1024


@dataclass(frozen=True)
class Recomputed:
    kind: str
    json: dict            # the releasable JSON (suppressed values null)
    evidence: dict        # the same with true values, for checkers only
    files: dict           # file name -> bytes that would be released
    html: str             # the checker's view of the output
    why: list             # per unsafe cell: key, status, the rules and their evidence
    summary: dict


# Run as root: a private mount namespace, the data folder read-only in it, then drop every
# capability before Python starts.
_CONFINE = (
    'set -e; mount --bind "$1" "$1"; mount -o remount,bind,ro "$1"; shift; '
    'exec setpriv --no-new-privs --inh-caps=-all --bounding-set=-all -- "$@"'
)


def _preexec(limits: Limits):
    def fn():
        os.setsid()
        mb = 1024 * 1024
        resource.setrlimit(resource.RLIMIT_AS, (limits.address_space_mb * mb,) * 2)
        cpu = int(limits.timeout_s) + 5
        resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 1))
        resource.setrlimit(resource.RLIMIT_FSIZE, (limits.max_output_bytes,) * 2)
        resource.setrlimit(resource.RLIMIT_NOFILE, (256, 256))
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    return fn


def worker_command(data_dir: Path) -> list[str]:
    cmd = [sys.executable, "-I", "-m", "hub.airlock.sandbox_worker"]
    if os.geteuid() != 0:
        # Without root there is no mount namespace to make; the data must then be read-only
        # to this user already (it is: data_ingest publishes 0444/0555 files owned by root).
        return cmd
    return ["unshare", "--mount", "--propagation", "private", "--",
            "sh", "-c", _CONFINE, "sh", str(data_dir), *cmd]


def recompute(data_dir: Path, spec: dict, policy: str, limits: Limits = Limits()) -> Recomputed:
    """Recompute ``spec`` over the project's ``data_dir`` under ``policy`` (name or file)."""
    data_dir = Path(data_dir).resolve()
    if not data_dir.is_dir():
        raise SandboxError("this project has no published data")
    job = {"data_dir": str(data_dir), "spec": spec, "policy": policy,
           "memory_mb": limits.memory_mb, "threads": limits.threads}
    env = {"PATH": "/usr/bin:/bin", "HOME": "/nonexistent", "LANG": "C.UTF-8",
           "PYTHONPATH": str(ROOT), "PYTHONDONTWRITEBYTECODE": "1", "MPLBACKEND": "Agg",
           "OMP_NUM_THREADS": str(limits.threads), "POLARS_MAX_THREADS": str(limits.threads)}
    with tempfile.TemporaryDirectory(prefix="airlock-job-") as work:
        env["TMPDIR"] = work
        env["MPLCONFIGDIR"] = work
        proc = subprocess.Popen(
            worker_command(data_dir),
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            cwd=work, env=env, preexec_fn=_preexec(limits), close_fds=True)
        try:
            out, err = proc.communicate(json.dumps(job).encode(), timeout=limits.timeout_s)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
            raise SandboxError(
                f"the query ran longer than the limit of {limits.timeout_s:.0f} s and was "
                "stopped") from None
    if proc.returncode != 0 or not out:
        if proc.returncode in (-signal.SIGKILL, -signal.SIGXCPU):
            raise SandboxError("the query used more CPU time than allowed and was stopped")
        last = (err.decode(errors="replace").strip().splitlines() or ["no output"])[-1]
        if "MemoryError" in last or "Out of Memory" in last:
            raise SandboxError("the query needed more memory than allowed")
        raise SandboxError(f"the recomputation failed: {last[:300]}")
    result = json.loads(out)
    if not result.get("ok"):
        raise SandboxError(result.get("error", "refused"))
    files = {name: content.encode() for name, content in result["files"].items()}
    return Recomputed(kind=result["kind"], json=result["json"], evidence=result["evidence"],
                      files=files, html=result["html"], why=result.get("why", []),
                      summary=result.get("summary", {}))
