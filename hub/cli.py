"""``workspace-hub``: run the hub and its proxy on this machine.

    workspace-hub up          network + firewall, proxy, hub (reuses whatever already runs)
    workspace-hub down        stop hub and proxy (workspaces keep running unless --servers)
    workspace-hub restart     restart the hub only (running workspaces stay reachable)
    workspace-hub status      what runs
    workspace-hub token USER  an API token for USER (through the operations service)
    workspace-hub logins      the demo accounts and their passwords

The proxy (configurable-http-proxy) runs as its own process, so the hub can restart without
dropping a route. Both write logs to ``<home>/log``; pid files live in ``<home>/hub``.
All settings come from ``WORKSPACE_*`` variables (docs/hub.md).
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from .settings import ROOT, Settings


class LaunchError(RuntimeError):
    pass


def _secret_file(path: Path) -> str:
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_hex(32))
    return path.read_text().strip()


def _pid_alive(pidfile: Path) -> int | None:
    try:
        pid = int(pidfile.read_text().strip())
        os.kill(pid, 0)
    except (FileNotFoundError, ValueError, ProcessLookupError, PermissionError):
        return None
    return pid


def _stop(pidfile: Path, what: str, timeout: float = 15) -> None:
    """Stop a process we started and everything it started. JupyterHub starts its managed
    services (the airlock, the idle culler) in sessions of their own, so they are found as
    descendants before the hub goes, and stopped after it if they outlive it."""
    import psutil

    pid = _pid_alive(pidfile)
    if pid is None:
        pidfile.unlink(missing_ok=True)
        return
    try:
        proc = psutil.Process(pid)
        family = [proc, *proc.children(recursive=True)]
    except psutil.NoSuchProcess:
        family = []
    for p in family[:1]:
        p.terminate()
    gone, alive = psutil.wait_procs(family[:1], timeout=timeout)
    rest = [p for p in family[1:] if p.is_running()]
    for p in rest:
        p.terminate()
    gone, alive2 = psutil.wait_procs(rest, timeout=5)
    for p in alive + alive2:
        p.kill()
    pidfile.unlink(missing_ok=True)
    print(f"stopped {what} (pid {pid})")


def _get(url: str, token: str | None = None, timeout: float = 2.0):
    req = urllib.request.Request(url)
    if token:
        req.add_header("Authorization", f"token {token}")
    with urllib.request.urlopen(req, timeout=timeout) as r:
        return r.status, r.read()


def _wait(url: str, what: str, log: Path, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            _get(url)
            return
        except urllib.error.HTTPError:
            return  # it answers
        except (urllib.error.URLError, OSError):
            time.sleep(0.2)
    tail = log.read_text(errors="replace").splitlines()[-15:] if log.exists() else []
    raise LaunchError(f"{what} did not answer at {url} within {timeout:.0f}s; last log lines:\n"
                      + "\n".join(tail))


class Launcher:
    def __init__(self, s: Settings):
        self.s = s
        self.proxy_pid = s.hub_dir / "proxy.pid"
        self.hub_pid = s.hub_dir / "hub.pid"

    @property
    def public_url(self) -> str:
        return f"http://{self.s.public_ip}:{self.s.public_port}"

    def prepare(self) -> None:
        from . import netsetup

        self.s.hub_dir.mkdir(parents=True, exist_ok=True)
        self.s.log_dir.mkdir(parents=True, exist_ok=True)
        (self.s.store / "projects").mkdir(parents=True, exist_ok=True)
        _secret_file(self.s.hub_dir / "proxy-token")
        _secret_file(self.s.hub_dir / "ops-token")
        netsetup.setup(self.s)

    def env(self) -> dict[str, str]:
        env = dict(os.environ, **self.s.as_env())
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
        return env

    def start_proxy(self) -> None:
        if _pid_alive(self.proxy_pid):
            print(f"proxy already running (pid {_pid_alive(self.proxy_pid)})")
            return
        chp = shutil.which("configurable-http-proxy")
        if not chp:
            raise LaunchError("configurable-http-proxy is missing: npm install -g "
                              "configurable-http-proxy")
        log = self.s.log_dir / "proxy.log"
        env = self.env()
        env["CONFIGPROXY_AUTH_TOKEN"] = (self.s.hub_dir / "proxy-token").read_text().strip()
        hub = f"http://{self.s.gateway}:{self.s.hub_port}"
        cmd = [chp, "--ip", self.s.public_ip, "--port", str(self.s.public_port),
               "--api-ip", "127.0.0.1", "--api-port", str(self.s.proxy_api_port),
               "--default-target", hub, "--error-target", f"{hub}/hub/error",
               "--log-level", "warn"]
        with open(log, "ab") as out:
            p = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT,
                                 stdin=subprocess.DEVNULL, start_new_session=True)
        self.proxy_pid.write_text(str(p.pid))
        _wait(f"http://127.0.0.1:{self.s.proxy_api_port}/api/routes", "the proxy API", log, 20)
        print(f"proxy started (pid {p.pid})")

    def start_hub(self) -> None:
        if _pid_alive(self.hub_pid):
            print(f"hub already running (pid {_pid_alive(self.hub_pid)})")
            return
        log = self.s.log_dir / "hub.log"
        cmd = [sys.executable, "-m", "jupyterhub", "-f", str(ROOT / "hub" / "jupyterhub_config.py")]
        with open(log, "ab") as out:
            p = subprocess.Popen(cmd, env=self.env(), cwd=str(self.s.hub_dir), stdout=out,
                                 stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                 start_new_session=True)
        self.hub_pid.write_text(str(p.pid))
        deadline = time.monotonic() + 90
        url = f"{self.public_url}/hub/health"
        while time.monotonic() < deadline:
            if p.poll() is not None:
                tail = log.read_text(errors="replace").splitlines()[-20:]
                self.hub_pid.unlink(missing_ok=True)
                raise LaunchError("the hub exited at start; last log lines:\n" + "\n".join(tail))
            try:
                status, _ = _get(url)
                if status == 200:
                    # the hub's managed airlock service starts in the background: wait for it
                    _wait(f"{self.s.airlock_url}/services/airlock/api/requests", "the airlock",
                          log, 60)
                    print(f"hub started (pid {p.pid})")
                    return
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.25)
        raise LaunchError(f"the hub did not become healthy at {url}; see {log}")

    def up(self) -> None:
        self.prepare()
        self.start_proxy()
        self.start_hub()

    def down(self, servers: bool = False) -> None:
        _stop(self.hub_pid, "hub")
        _stop(self.proxy_pid, "proxy")
        if servers:
            self.remove_containers()

    def remove_containers(self) -> None:
        import docker

        client = docker.from_env()
        for c in client.containers.list(all=True,
                                        filters={"label": f"org.tw.instance={self.s.prefix}"}):
            c.remove(force=True)
            print(f"removed {c.name}")

    def ops_token(self) -> str:
        return (self.s.hub_dir / "ops-token").read_text().strip()

    def api(self, method: str, path: str, body: dict | None = None, token: str | None = None):
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(f"{self.public_url}/hub/api{path}", data=data, method=method)
        req.add_header("Authorization", f"token {token or self.ops_token()}")
        if data is not None:
            req.add_header("Content-Type", "application/json")
        with urllib.request.urlopen(req, timeout=30) as r:
            raw = r.read()
            return json.loads(raw) if raw else None

    def user_token(self, user: str, note: str = "workspace-hub token",
                   expires_in: int = 3600) -> str:
        r = self.api("POST", f"/users/{user}/tokens",
                     {"note": note, "expires_in": expires_in})
        return r["token"]

    def status(self) -> dict:
        return {
            "proxy": _pid_alive(self.proxy_pid),
            "hub": _pid_alive(self.hub_pid),
            "url": self.public_url,
            "store": str(self.s.store),
        }


def print_logins(s: Settings) -> None:
    f = s.hub_dir / "demo-users.json"
    if s.auth != "demo" or not f.exists():
        print("no demo accounts (WORKSPACE_AUTH is not demo, or the hub never started)")
        return
    users = json.loads(f.read_text())
    print(f"\nOpen http://{s.public_ip}:{s.public_port} and log in as one of (demo only):")
    roles = {"researcher": "researcher (projects covid, income)",
             "researcher2": "researcher (project income)",
             "checker": "output checker", "checker2": "output checker",
             "datamanager": "data manager", "admin": "administrator"}
    for u, pw in users.items():
        print(f"  {u:<12} {pw:<16} {roles.get(u, '')}")
    print(f"(passwords are in {f}, readable by root only)")


def verify_audit(s: Settings, show: int = 0) -> int:
    """Print whether the audit chain is intact; exit status 1 at the first broken link."""
    from sqlalchemy import create_engine, inspect

    from .airlock.core import Airlock
    from .airlock.directory import ProjectDirectory
    from .airlock.service import airlock_db_url

    url = airlock_db_url(s)
    if url.startswith("sqlite:///") and not Path(url[len("sqlite:///"):]).exists():
        raise LaunchError(f"no airlock database at {url}")
    if "audit" not in " ".join(inspect(create_engine(url)).get_table_names()):
        raise LaunchError(f"{url} holds no audit log")
    core = Airlock(url, s.home / "airlock" / "releases", ProjectDirectory(s.store),
                   recover_on_start=False)
    result = core.verify_audit()
    for e in core.audit_entries()[-show:] if show else []:
        print(json.dumps(e, sort_keys=True))
    if result["ok"]:
        print(f"audit log intact: {result['count']} entries, head {str(result['head'])[:16]}")
        return 0
    print(f"audit log BROKEN at entry {result['first_broken_seq']} "
          f"(index {result['first_broken_index']}): {result['reason']}")
    return 1


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="workspace-hub", description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    sub.add_parser("up", help="start network, proxy and hub (idempotent)")
    d = sub.add_parser("down", help="stop hub and proxy")
    d.add_argument("--servers", action="store_true", help="also remove workspace containers")
    sub.add_parser("restart", help="restart the hub only")
    sub.add_parser("status", help="show what runs")
    t = sub.add_parser("token", help="print an API token for a user")
    t.add_argument("user")
    sub.add_parser("logins", help="print the demo accounts")
    a = sub.add_parser("audit", help="verify the airlock's hash-chained audit log")
    a.add_argument("--show", type=int, default=0, metavar="N", help="also print the last N entries")
    args = ap.parse_args(argv)
    try:
        s = Settings.from_env()
        launcher = Launcher(s)
        if args.cmd == "up":
            launcher.up()
            print(f"workspace hub at {launcher.public_url}")
        elif args.cmd == "down":
            launcher.down(servers=args.servers)
        elif args.cmd == "restart":
            _stop(launcher.hub_pid, "hub")
            launcher.start_hub()
        elif args.cmd == "status":
            print(json.dumps(launcher.status(), indent=1))
        elif args.cmd == "token":
            print(launcher.user_token(args.user))
        elif args.cmd == "logins":
            print_logins(s)
        elif args.cmd == "audit":
            sys.exit(verify_audit(s, args.show))
    except (LaunchError, ValueError, OSError, urllib.error.URLError) as exc:
        sys.exit(f"workspace-hub: {exc}")
    except Exception as exc:  # docker errors, network errors: one clear line
        sys.exit(f"workspace-hub: {type(exc).__name__}: {exc}")


if __name__ == "__main__":
    main()
