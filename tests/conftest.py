"""Shared fixtures: a real workspace instance (hub, proxy, Docker) for integration and browser tests."""
import os
import shutil
import socket
import subprocess
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest

from tests.support.instance import Instance, build_image


def _docker_ok() -> bool:
    return shutil.which("docker") is not None and subprocess.run(
        ["docker", "info"], capture_output=True).returncode == 0


@pytest.fixture(scope="session")
def image():
    if not _docker_ok():
        if os.environ.get("CI"):
            pytest.fail("no Docker engine answers (CI must have one)")
        pytest.skip("no Docker engine answers")
    return build_image()


@pytest.fixture(scope="session")
def instance(image):
    inst = Instance(projects={
        "covid": (["researcher"], ["checker", "checker2"], {
            "persons": "SELECT range AS person_id, range % 2 AS sex, 20 + (range * 7) % 60 AS age "
                       "FROM range(500)",
            "covid_tests": "SELECT range AS person_id, range % 3 = 0 AS positive FROM range(300)",
        }),
        "income": (["researcher", "researcher2"], ["checker", "checker2"], {
            "income": "SELECT range AS person_id, (range * 37) % 90000 AS income FROM range(400)",
        }),
    })
    inst.start()
    yield inst
    inst.stop()


@pytest.fixture(scope="session")
def researcher_token(instance):
    return instance.token("researcher")


@pytest.fixture(scope="session")
def covid_server(instance, researcher_token):
    """researcher's running workspace for project covid."""
    instance.spawn("researcher", "covid", researcher_token)
    return instance.container("researcher", "covid")


class _Hello(BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200)
        self.end_headers()
        self.wfile.write(b"hello from outside")

    def log_message(self, *a):
        pass


@pytest.fixture(scope="session")
def host_listener():
    """An HTTP server on every host address (0.0.0.0), on a free port."""
    srv = HTTPServer(("0.0.0.0", 0), _Hello)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield srv.server_address[1]
    srv.shutdown()


def _host_ip() -> str:
    """The host's address on its main interface (not loopback, not a Docker bridge)."""
    out = subprocess.run(["ip", "-4", "-o", "route", "get", "198.18.0.1"], capture_output=True,
                         text=True).stdout
    parts = out.split()
    return parts[parts.index("src") + 1] if "src" in parts else ""


@pytest.fixture(scope="session")
def host_ip():
    ip = _host_ip()
    if not ip:
        pytest.skip("no main host address")
    return ip


@pytest.fixture(scope="session")
def outside_host():
    """A test host 'outside' the workspace: a network namespace of our own, reached through a
    veth pair at 198.18.100.2 (a benchmarking range), serving HTTP on port 8080."""
    ns, veth = "twtest-outside", "twto0"
    def ip(*a, check=True):
        return subprocess.run(["ip", *a], capture_output=True, text=True, check=check)
    ip("netns", "del", ns, check=False)
    ip("link", "del", veth, check=False)
    try:
        ip("netns", "add", ns)
    except subprocess.CalledProcessError as exc:
        pytest.skip(f"cannot make a network namespace here: {exc.stderr.strip()}")
    ip("link", "add", veth, "type", "veth", "peer", "name", "twto1")
    ip("link", "set", "twto1", "netns", ns)
    ip("addr", "add", "198.18.100.1/30", "dev", veth)
    ip("link", "set", veth, "up")
    ip("netns", "exec", ns, "ip", "addr", "add", "198.18.100.2/30", "dev", "twto1")
    ip("netns", "exec", ns, "ip", "link", "set", "twto1", "up")
    ip("netns", "exec", ns, "ip", "link", "set", "lo", "up")
    server = subprocess.Popen(
        ["ip", "netns", "exec", ns, "python3", "-m", "http.server", "8080", "--bind",
         "198.18.100.2"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    import time
    for _ in range(50):
        try:
            socket.create_connection(("198.18.100.2", 8080), timeout=0.5).close()
            break
        except OSError:
            time.sleep(0.1)
    yield "198.18.100.2", 8080
    server.kill()
    ip("link", "del", veth, check=False)
    ip("netns", "del", ns, check=False)
