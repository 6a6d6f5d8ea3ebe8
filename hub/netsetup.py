"""The workspaces' network: an internal Docker bridge and host firewall rules.

Docker alone closes the way out (``--internal``: no NAT, no route beyond the bridge) and the way
between containers (``enable_icc=false``). What it does not close is the host itself: every
container can reach every port the host listens on at the bridge's gateway address. So
:func:`apply_firewall` puts a chain in the host's INPUT path for that bridge that lets through
only replies, the hub API port and the airlock API port (and any extra port named), and rejects
everything else. A second rule in ``DOCKER-USER`` drops any forwarded packet from the bridge to
another interface, in case the network is ever recreated without ``--internal``.

Idempotent: running it again rebuilds the same rules.
"""

from __future__ import annotations

import ipaddress
import shutil
import subprocess

import docker

from .settings import Settings


class NetworkError(RuntimeError):
    pass


def ensure_network(s: Settings) -> None:
    client = docker.from_env()
    try:
        net = client.networks.get(s.network)
    except docker.errors.NotFound:
        ipam = docker.types.IPAMConfig(
            pool_configs=[docker.types.IPAMPool(subnet=s.subnet, gateway=s.gateway)])
        client.networks.create(
            s.network, driver="bridge", internal=True, ipam=ipam,
            options={
                "com.docker.network.bridge.name": s.bridge,
                "com.docker.network.bridge.enable_icc": "false",
                "com.docker.network.bridge.enable_ip_masquerade": "false",
            },
            labels={"org.tw.role": "workspace-network"},
        )
        return
    attrs = net.attrs
    opts = attrs.get("Options") or {}
    subnets = [c.get("Subnet") for c in (attrs.get("IPAM") or {}).get("Config") or []]
    problems = []
    if not attrs.get("Internal"):
        problems.append("not internal")
    if opts.get("com.docker.network.bridge.enable_icc") != "false":
        problems.append("inter-container traffic allowed")
    if opts.get("com.docker.network.bridge.name") != s.bridge:
        problems.append(f"bridge is not {s.bridge}")
    if s.subnet not in subnets:
        problems.append(f"subnet is {subnets}, not {s.subnet}")
    if problems:
        raise NetworkError(
            f"network {s.network} exists but is unsafe or different ({'; '.join(problems)}); "
            f"remove it (docker network rm {s.network}) with no containers on it")


def _ipt(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(["iptables", "-w", *args], capture_output=True, text=True, check=check)


def firewall_rules(s: Settings) -> list[list[str]]:
    """The rules of the bridge's INPUT chain, in order (pure: for tests and review)."""
    rules = [["-m", "conntrack", "--ctstate", "ESTABLISHED,RELATED", "-j", "ACCEPT"]]
    for port in (s.hub_port, s.airlock_port, *s.open_ports):
        rules.append(["-p", "tcp", "-d", s.gateway, "--dport", str(port), "-j", "ACCEPT"])
    rules.append(["-p", "tcp", "-j", "REJECT", "--reject-with", "tcp-reset"])
    rules.append(["-j", "REJECT", "--reject-with", "icmp-admin-prohibited"])
    return rules


def chain_name(s: Settings) -> str:
    return f"TW-{s.bridge}"[:28]


def apply_firewall(s: Settings) -> None:
    if not shutil.which("iptables"):
        raise NetworkError("iptables is missing: apt-get install iptables")
    chain = chain_name(s)
    if _ipt("-n", "-L", chain, check=False).returncode != 0:
        _ipt("-N", chain)
    _ipt("-F", chain)
    for rule in firewall_rules(s):
        _ipt("-A", chain, *rule)
    jump = ["INPUT", "-i", s.bridge, "-j", chain]
    if _ipt("-C", *jump, check=False).returncode != 0:
        _ipt("-I", *jump)
    # Defence in depth for forwarded traffic (Docker evaluates DOCKER-USER first).
    if _ipt("-n", "-L", "DOCKER-USER", check=False).returncode == 0:
        fwd = ["DOCKER-USER", "-i", s.bridge, "!", "-o", s.bridge, "-j", "DROP"]
        if _ipt("-C", *fwd, check=False).returncode != 0:
            _ipt("-I", *fwd)


def remove_firewall(s: Settings) -> None:
    chain = chain_name(s)
    _ipt("-D", "INPUT", "-i", s.bridge, "-j", chain, check=False)
    _ipt("-D", "DOCKER-USER", "-i", s.bridge, "!", "-o", s.bridge, "-j", "DROP", check=False)
    _ipt("-F", chain, check=False)
    _ipt("-X", chain, check=False)


def setup(s: Settings) -> None:
    ipaddress.ip_network(s.subnet)
    ensure_network(s)
    apply_firewall(s)
