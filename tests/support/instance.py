"""A real, throw-away workspace instance for integration tests and benchmarks.

It builds (or reuses) the workspace image, writes a store with projects and small Parquet
datasets, and starts the real proxy and hub through :class:`hub.cli.Launcher` on their own
ports, network, subnet and container prefix, so it never touches a running demo.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import docker
import duckdb

from hub import netsetup
from hub.cli import Launcher
from hub.settings import ROOT, Settings


def build_image() -> str:
    out = subprocess.run([str(ROOT / ".venv" / "bin" / "python") if (ROOT / ".venv").exists()
                          else "python3", str(ROOT / "images" / "build.py")],
                         check=True, capture_output=True, text=True)
    return out.stdout.strip().splitlines()[-1]


def write_project(store: Path, name: str, members, checkers, datasets: dict[str, str]) -> None:
    """A project folder; ``datasets`` maps a dataset name to a DuckDB SELECT producing it."""
    pdir = store / "projects" / name
    (pdir / "data").mkdir(parents=True, exist_ok=True)
    cfg = [f'name = "{name}"', f'title = "Test project {name}"',
           f"members = {json.dumps(list(members))}", f"checkers = {json.dumps(list(checkers))}",
           f"datasets = {json.dumps(list(datasets))}", 'policy = "acro"']
    (pdir / "project.toml").write_text("\n".join(cfg) + "\n")
    con = duckdb.connect()
    for ds, query in datasets.items():
        d = pdir / "data" / ds
        d.mkdir()
        con.execute(f"COPY ({query}) TO '{d / 'part-0.parquet'}' (FORMAT parquet)")
        (d / "metadata.json").write_text(json.dumps({"title": ds}))
    # published data is read-only, as data_ingest writes it
    for p in sorted((pdir / "data").rglob("*"), reverse=True):
        p.chmod(0o555 if p.is_dir() else 0o444)
    (pdir / "data").chmod(0o555)


@dataclass
class Instance:
    prefix: str = "twtest"
    subnet: str = "172.29.7.0/24"
    port: int = 28000
    projects: dict = field(default_factory=dict)
    home: Path | None = None
    env: dict = field(default_factory=dict)

    def __post_init__(self):
        self.home = Path(tempfile.mkdtemp(prefix=f"{self.prefix}-"))
        self.home.chmod(0o755)
        self.env = {
            "WORKSPACE_HOME": str(self.home),
            "WORKSPACE_PREFIX": self.prefix,
            "WORKSPACE_SUBNET": self.subnet,
            "WORKSPACE_PORT": str(self.port),
            "WORKSPACE_PROXY_API_PORT": str(self.port + 1),
            "WORKSPACE_HUB_PORT": str(self.port + 81),
            "WORKSPACE_AIRLOCK_PORT": str(self.port + 82),
            "WORKSPACE_IDLE_TIMEOUT": "3600",
            "WORKSPACE_MEM_LIMIT": "1G",
        }
        self.settings = Settings.from_env(self.env)
        self.launcher = Launcher(self.settings)
        self.docker = docker.from_env()

    # --- lifecycle
    def clean_stale(self) -> None:
        """Remove what a killed earlier run with this prefix may have left behind."""
        for c in self.docker.containers.list(
                all=True, filters={"label": f"org.tw.instance={self.prefix}"}):
            c.remove(force=True)
        for v in self.docker.volumes.list(filters={"name": f"{self.prefix}-home-"}):
            v.remove(force=True)

    def start(self) -> Instance:
        self.clean_stale()
        for name, (members, checkers, datasets) in self.projects.items():
            write_project(self.settings.store, name, members, checkers, datasets)
        self.launcher.up()
        return self

    def stop(self) -> None:
        try:
            self.launcher.down(servers=True)
        finally:
            for v in self.docker.volumes.list(filters={"name": f"{self.prefix}-home-"}):
                v.remove(force=True)
            try:
                self.docker.networks.get(self.settings.network).remove()
            except docker.errors.NotFound:
                pass
            netsetup.remove_firewall(self.settings)
            for p in self.home.rglob("*"):
                if not p.is_symlink():
                    p.chmod(0o755 if p.is_dir() else 0o644)
            shutil.rmtree(self.home, ignore_errors=True)

    # --- hub API
    @property
    def url(self) -> str:
        return self.launcher.public_url

    def token(self, user: str) -> str:
        return self.launcher.user_token(user, note="tests")

    def request(self, method: str, path: str, token: str, body=None, raw: bytes | None = None,
                headers: dict | None = None, timeout: float = 30):
        """(status, body bytes) of a request to the public URL; never raises on HTTP errors."""
        data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
        req = urllib.request.Request(self.url + path, data=data, method=method)
        req.add_header("Authorization", f"token {token}")
        for k, v in (headers or {}).items():
            req.add_header(k, v)
        if data is not None and "Content-Type" not in (headers or {}):
            req.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(req, timeout=timeout) as r:
                return r.status, r.read()
        except urllib.error.HTTPError as e:
            return e.code, e.read()

    def spawn(self, user: str, project: str, token: str | None = None, timeout: float = 120):
        """Start USER's server for PROJECT through the hub API; wait until ready."""
        token = token or self.token(user)
        t0 = time.monotonic()
        status, body = self.request("POST", f"/hub/api/users/{user}/servers/{project}", token,
                                    body={"project": project}, timeout=timeout)
        if status not in (201, 202):
            raise RuntimeError(f"spawn {user}/{project}: {status} {body[:300]!r}")
        while time.monotonic() - t0 < timeout:
            st, b = self.request("GET", f"/hub/api/users/{user}", token)
            server = json.loads(b)["servers"].get(project) if st == 200 else None
            if server and server.get("ready"):
                return time.monotonic() - t0
            time.sleep(0.1)
        raise TimeoutError(f"{user}/{project} not ready after {timeout}s")

    def stop_server(self, user: str, project: str, token: str | None = None) -> None:
        token = token or self.token(user)
        self.request("DELETE", f"/hub/api/users/{user}/servers/{project}", token)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            st, b = self.request("GET", f"/hub/api/users/{user}", token)
            if project not in json.loads(b)["servers"]:
                return
            time.sleep(0.2)
        raise TimeoutError(f"{user}/{project} did not stop")

    def airlock(self, method: str, path: str, token: str, body=None):
        """(status, parsed JSON or bytes) of a call to the airlock's API, as a workspace makes it."""
        url = f"{self.settings.airlock_url}/services/airlock/{path}"
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(url, data=data, method=method)
        req.add_header("Authorization", f"token {token}")
        if data is not None:
            req.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(req, timeout=300) as r:
                raw, status = r.read(), r.status
        except urllib.error.HTTPError as e:
            raw, status = e.read(), e.code
        try:
            return status, json.loads(raw)
        except ValueError:
            return status, raw

    def container(self, user: str, project: str):
        return self.docker.containers.get(f"{self.prefix}-{user}--{project}")

    def exec_python(self, container, code: str) -> tuple[int, str]:
        """Run Python inside a workspace container as its own user."""
        res = container.exec_run(["python3", "-c", code], user="1000:1000", demux=False)
        return res.exit_code, res.output.decode(errors="replace")
