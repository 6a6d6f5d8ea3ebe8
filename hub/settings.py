"""Deployment settings, read from the environment (``WORKSPACE_*``), all documented in docs/hub.md.

One frozen dataclass, so the launcher, the JupyterHub config and the tests agree on paths,
ports and names. Anything beyond these can go in an extra JupyterHub config file
(``WORKSPACE_EXTRA_CONFIG``), loaded last.
"""

from __future__ import annotations

import ipaddress
import os
from dataclasses import dataclass, fields
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _split(value: str) -> tuple[str, ...]:
    return tuple(x.strip() for x in value.split(",") if x.strip())


@dataclass(frozen=True)
class Settings:
    home: Path                    # WORKSPACE_HOME: var folder (hub state, logs, secrets)
    store: Path                   # WORKSPACE_STORE
    image: str                    # WORKSPACE_IMAGE
    prefix: str                   # WORKSPACE_PREFIX: container, volume and network names
    network: str                  # WORKSPACE_NETWORK: the internal Docker network
    subnet: str                   # WORKSPACE_SUBNET
    bridge: str                   # WORKSPACE_BRIDGE: its Linux bridge name (firewall rules)
    public_ip: str                # WORKSPACE_IP: where browsers connect (the proxy)
    public_port: int              # WORKSPACE_PORT
    proxy_api_port: int           # WORKSPACE_PROXY_API_PORT (127.0.0.1 only)
    hub_port: int                 # WORKSPACE_HUB_PORT (on the internal network's gateway)
    airlock_port: int             # WORKSPACE_AIRLOCK_PORT (the airlock service, same address)
    open_ports: tuple[int, ...]   # WORKSPACE_OPEN_PORTS: more host ports workspaces may reach
    auth: str                     # WORKSPACE_AUTH: demo | native | oauth
    db_url: str                   # WORKSPACE_DB_URL (SQLAlchemy URL)
    mem_limit: str                # WORKSPACE_MEM_LIMIT
    cpu_limit: float              # WORKSPACE_CPU_LIMIT
    pids_limit: int               # WORKSPACE_PIDS_LIMIT
    tmp_size: str                 # WORKSPACE_TMP_SIZE (tmpfs at /tmp)
    idle_timeout: int             # WORKSPACE_IDLE_TIMEOUT seconds (0: no culling)
    admins: tuple[str, ...]       # WORKSPACE_ADMINS
    data_managers: tuple[str, ...]  # WORKSPACE_DATA_MANAGERS
    extra_config: str             # WORKSPACE_EXTRA_CONFIG: a JupyterHub config file loaded last

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> Settings:
        e = os.environ if env is None else env
        home = Path(e.get("WORKSPACE_HOME", ROOT / "var")).resolve()
        prefix = e.get("WORKSPACE_PREFIX", "tw")
        network = e.get("WORKSPACE_NETWORK", f"{prefix}-internal")
        auth = e.get("WORKSPACE_AUTH", "demo")
        s = cls(
            home=home,
            store=Path(e.get("WORKSPACE_STORE", home / "store")).resolve(),
            image=e.get("WORKSPACE_IMAGE", "tw-workspace:latest"),
            prefix=prefix,
            network=network,
            subnet=e.get("WORKSPACE_SUBNET", "172.29.0.0/24"),
            bridge=e.get("WORKSPACE_BRIDGE", f"{prefix}-int0")[:15],
            public_ip=e.get("WORKSPACE_IP", "127.0.0.1"),
            public_port=int(e.get("WORKSPACE_PORT", "8000")),
            proxy_api_port=int(e.get("WORKSPACE_PROXY_API_PORT", "8001")),
            hub_port=int(e.get("WORKSPACE_HUB_PORT", "8081")),
            airlock_port=int(e.get("WORKSPACE_AIRLOCK_PORT", "8082")),
            open_ports=tuple(int(p) for p in _split(e.get("WORKSPACE_OPEN_PORTS", ""))),
            auth=auth,
            db_url=e.get("WORKSPACE_DB_URL", f"sqlite:///{home / 'hub' / 'jupyterhub.sqlite'}"),
            mem_limit=e.get("WORKSPACE_MEM_LIMIT", "4G"),
            cpu_limit=float(e.get("WORKSPACE_CPU_LIMIT", "1.0")),
            pids_limit=int(e.get("WORKSPACE_PIDS_LIMIT", "512")),
            tmp_size=e.get("WORKSPACE_TMP_SIZE", "512m"),
            idle_timeout=int(e.get("WORKSPACE_IDLE_TIMEOUT", "3600")),
            admins=_split(e.get("WORKSPACE_ADMINS", "admin" if auth == "demo" else "")),
            data_managers=_split(
                e.get("WORKSPACE_DATA_MANAGERS", "datamanager" if auth == "demo" else "")),
            extra_config=e.get("WORKSPACE_EXTRA_CONFIG", ""),
        )
        s.validate()
        return s

    def validate(self) -> None:
        if self.auth not in ("demo", "native", "oauth"):
            raise ValueError(f"WORKSPACE_AUTH must be demo, native or oauth, not {self.auth!r}")
        if self.auth == "demo" and self.public_ip != "127.0.0.1":
            raise ValueError("demo accounts exist only on 127.0.0.1: set WORKSPACE_IP=127.0.0.1 "
                             "or choose WORKSPACE_AUTH=native|oauth")
        net = ipaddress.ip_network(self.subnet)
        if net.num_addresses < 8:
            raise ValueError(f"WORKSPACE_SUBNET {self.subnet} is too small")

    @property
    def gateway(self) -> str:
        """The host's address on the internal network: the hub API listens here."""
        return str(next(ipaddress.ip_network(self.subnet).hosts()))

    @property
    def airlock_url(self) -> str:
        """Where workspaces reach the airlock's API (and the hub's proxy routes browsers)."""
        return f"http://{self.gateway}:{self.airlock_port}"

    @property
    def hub_dir(self) -> Path:
        return self.home / "hub"

    @property
    def log_dir(self) -> Path:
        return self.home / "log"

    def as_env(self) -> dict[str, str]:
        """The environment that reproduces these settings (for child processes)."""
        names = {f.name: f.name.upper() for f in fields(self)}
        names.update(home="HOME", public_ip="IP", public_port="PORT")
        out = {}
        for f in fields(self):
            v = getattr(self, f.name)
            v = ",".join(map(str, v)) if isinstance(v, tuple) else str(v)
            out[f"WORKSPACE_{names[f.name]}"] = v
        return out
