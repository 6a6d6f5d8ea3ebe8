"""No route out: each path from inside a running workspace, with a control from the host."""

import socket

import pytest

pytestmark = pytest.mark.docker

CONNECT = """
import socket, sys
host, port = sys.argv[1], int(sys.argv[2])
try:
    socket.create_connection((host, port), timeout=3).close()
    print('CONNECTED')
except OSError as exc:
    print('refused', type(exc).__name__, exc.errno)
"""


def connect_from(instance, container, host, port) -> str:
    res = container.exec_run(["python3", "-c", CONNECT, host, str(port)], user="1000:1000")
    return res.output.decode().strip()


def test_no_http_to_an_outside_host(instance, covid_server, outside_host):
    host, port = outside_host
    socket.create_connection((host, port), timeout=3).close()  # control: reachable from the host
    assert connect_from(instance, covid_server, host, port).startswith("refused")
    code, out = instance.exec_python(covid_server, f"""
import urllib.request
try:
    urllib.request.urlopen('http://{host}:{port}/', timeout=3)
    print('FETCHED')
except OSError as exc:
    print('failed', exc)
""")
    assert out.startswith("failed"), out


def test_forwarding_from_the_bridge_is_dropped(instance, covid_server):
    """Docker 20.10 gives internal networks a default route via the host; what keeps packets
    in is that the host never forwards them: Docker's isolation rules and our DOCKER-USER rule."""
    import subprocess
    br = instance.settings.bridge
    rule = ["iptables", "-w", "-C", "DOCKER-USER", "-i", br, "!", "-o", br, "-j", "DROP"]
    assert subprocess.run(rule, capture_output=True).returncode == 0
    chain = subprocess.run(["iptables", "-w", "-S", f"TW-{br}"[:28]], capture_output=True,
                           text=True).stdout
    assert "REJECT" in chain and f"--dport {instance.settings.hub_port}" in chain


def test_dns_for_outside_names_fails(instance, covid_server):
    code, out = instance.exec_python(covid_server, """
import socket
for name in ('example.org', 'pypi.org', 'localhost.localdomain.'):
    try:
        socket.getaddrinfo(name, 80)
        print('RESOLVED', name)
    except socket.gaierror as exc:
        print('failed', name)
""")
    assert "RESOLVED" not in out and out.count("failed") == 3, out


def test_other_users_container_is_unreachable(instance, covid_server):
    token = instance.token("researcher2")
    instance.spawn("researcher2", "income", token)
    try:
        other = instance.container("researcher2", "income")
        other.reload()
        ip = other.attrs["NetworkSettings"]["Networks"][instance.settings.network]["IPAddress"]
        socket.create_connection((ip, 8888), timeout=3).close()  # control: the host reaches it
        assert connect_from(instance, covid_server, ip, 8888).startswith("refused")
        # nor by name through Docker's DNS
        assert connect_from(instance, covid_server, other.name, 8888).startswith("refused")
    finally:
        instance.stop_server("researcher2", "income", token)


def test_only_the_hub_and_airlock_apis_answer_on_the_host(instance, covid_server, host_listener,
                                                          host_ip):
    gw = instance.settings.gateway
    assert connect_from(instance, covid_server, gw, instance.settings.hub_port) == "CONNECTED"
    assert connect_from(instance, covid_server, gw, instance.settings.airlock_port) == "CONNECTED"
    socket.create_connection((host_ip, host_listener), timeout=3).close()  # control
    socket.create_connection((gw, host_listener), timeout=3).close()  # control
    for host, port in [(gw, host_listener), (host_ip, host_listener), (gw, 22),
                       (gw, instance.settings.proxy_api_port), (gw, instance.settings.public_port),
                       ("172.17.0.1", host_listener)]:
        assert connect_from(instance, covid_server, host, port).startswith("refused"), (host, port)
