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

import atexit
import base64
import json
import os
import resource
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
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


def _limit_rlimits(address_space_mb: int, cpu_s: int | None, max_output_bytes: int) -> None:
    """Resource limits for a job (called in the job's own process)."""
    mb = 1024 * 1024
    resource.setrlimit(resource.RLIMIT_AS, (address_space_mb * mb,) * 2)
    if cpu_s:
        resource.setrlimit(resource.RLIMIT_CPU, (cpu_s, cpu_s + 1))
    resource.setrlimit(resource.RLIMIT_FSIZE, (max_output_bytes,) * 2)
    resource.setrlimit(resource.RLIMIT_NOFILE, (256, 256))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))


def worker_command(data_dir: Path, serve: bool = False) -> list[str]:
    cmd = [sys.executable, "-I", "-m", "hub.airlock.sandbox_worker", *(["--serve"] if serve else [])]
    if os.geteuid() != 0:
        # Without root there is no mount namespace to make; the data must then be read-only
        # to this user already (it is: data_ingest publishes 0444/0555 files owned by root).
        return cmd
    return ["unshare", "--mount", "--propagation", "private", "--",
            "sh", "-c", _CONFINE, "sh", str(data_dir), *cmd]


def _env(limits: Limits, work: str) -> dict:
    return {"PATH": "/usr/bin:/bin", "HOME": "/nonexistent", "LANG": "C.UTF-8",
            "PYTHONDONTWRITEBYTECODE": "1", "MPLBACKEND": "Agg", "TMPDIR": work,
            "MPLCONFIGDIR": work, "OMP_NUM_THREADS": str(limits.threads),
            "OPENBLAS_NUM_THREADS": "1", "POLARS_MAX_THREADS": str(limits.threads)}


class _Worker:
    """A warm worker for one project's data: started confined (see the module doc), it has
    imported sdc, DuckDB and friends once, and forks a fresh child with the job's limits for
    each job. This removes the interpreter and import start-up (about half a second) from
    every recomputation, without sharing anything between jobs but the imported code."""

    def __init__(self, data_dir: Path, limits: Limits):
        self.data_dir = data_dir
        self.lock = threading.Lock()
        self.work = tempfile.mkdtemp(prefix="airlock-worker-")
        self.proc = subprocess.Popen(
            worker_command(data_dir, serve=True), stdin=subprocess.PIPE,
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, cwd=self.work,
            env=_env(limits, self.work), start_new_session=True, close_fds=True)
        self.last_used = time.monotonic()

    def alive(self) -> bool:
        return self.proc.poll() is None

    def run(self, job: dict, timeout: float) -> dict | None:
        """The worker's answer, or None when the worker itself died or hung (it is stopped)."""
        with self.lock:
            self.last_used = time.monotonic()
            try:
                self.proc.stdin.write(json.dumps(job).encode() + b"\n")
                self.proc.stdin.flush()
                ready, _, _ = select.select([self.proc.stdout], [], [], timeout)
                line = self.proc.stdout.readline() if ready else b""
            except (BrokenPipeError, OSError):
                line = b""
            if not line:
                self.stop()
                return None
            return json.loads(line)

    def stop(self) -> None:
        if self.alive():
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.proc.wait()
        shutil.rmtree(self.work, ignore_errors=True)


class Recomputer:
    """Recomputes outputs in confined workers, one warm worker per project data folder."""

    def __init__(self, limits: Limits = Limits(), idle_s: float = 900.0):
        self.limits = limits
        self.idle_s = idle_s
        self._workers: dict[Path, _Worker] = {}
        self._lock = threading.Lock()

    def _worker(self, data_dir: Path) -> _Worker:
        with self._lock:
            now = time.monotonic()
            for d, w in list(self._workers.items()):
                if not w.alive() or (now - w.last_used > self.idle_s and not w.lock.locked()):
                    w.stop()
                    del self._workers[d]
            w = self._workers.get(data_dir)
            if w is None:
                w = self._workers[data_dir] = _Worker(data_dir, self.limits)
            return w

    def close(self) -> None:
        with self._lock:
            for w in self._workers.values():
                w.stop()
            self._workers.clear()

    def recompute(self, data_dir: Path, spec: dict, policy: str,
                  limits: Limits | None = None) -> Recomputed:
        limits = limits or self.limits
        data_dir = Path(data_dir).resolve()
        if not data_dir.is_dir():
            raise SandboxError("this project has no published data")
        job = {"data_dir": str(data_dir), "spec": spec, "policy": policy,
               "memory_mb": limits.memory_mb, "threads": limits.threads,
               "timeout_s": limits.timeout_s, "address_space_mb": limits.address_space_mb,
               "max_output_bytes": limits.max_output_bytes}
        result = self._worker(data_dir).run(job, timeout=limits.timeout_s + 30)
        if result is None:
            raise SandboxError("the recomputation failed: its worker stopped unexpectedly")
        if not result.get("ok"):
            raise SandboxError(result.get("error", "refused"))
        files = {name: base64.b64decode(content) for name, content in result["files"].items()}
        return Recomputed(kind=result["kind"], json=result["json"], evidence=result["evidence"],
                          files=files, html=result["html"], why=result.get("why", []),
                          summary=result.get("summary", {}))


_default: Recomputer | None = None
_default_lock = threading.Lock()


def recompute(data_dir: Path, spec: dict, policy: str, limits: Limits = Limits()) -> Recomputed:
    """Recompute ``spec`` over the project's ``data_dir`` under ``policy`` (name or file), with
    a process-wide :class:`Recomputer`."""
    global _default
    with _default_lock:
        if _default is None:
            _default = Recomputer()
            atexit.register(_default.close)
    return _default.recompute(data_dir, spec, policy, limits)
