"""JupyterHub configuration from :class:`hub.settings.Settings`.

``hub/jupyterhub_config.py`` calls :func:`configure`; everything the hub does is set here, in
one place, from the settings and the projects in the store.
"""

from __future__ import annotations

import sys

from .projects import load_projects, projects_of
from .settings import ROOT, Settings

# Custom scopes (JupyterHub >= 3): what the airlock and the ingest tools check.
CUSTOM_SCOPES = {
    "custom:airlock:request": {
        "description": "Create, submit, withdraw and download one's own release requests.",
    },
    "custom:airlock:review": {
        "description": "Review release requests of projects one checks (never one's own).",
    },
    "custom:airlock:admin": {
        "description": "Administer the airlock: audit log, all requests.",
        "subscopes": ["custom:airlock:review"],
    },
    "custom:ingest:write": {
        "description": "Ingest, link and publish datasets (data managers).",
    },
}


def roles(s: Settings, members: set[str], checkers: set[str]) -> list[dict]:
    """The four roles, with the users the projects and settings put in them."""
    return [
        {
            "name": "researcher",
            "description": "Works in a project's workspace; asks for outputs to be released.",
            "scopes": ["self", "custom:airlock:request", "access:services!service=airlock"],
            "users": sorted(members),
        },
        {
            "name": "checker",
            "description": "Reviews release requests in the airlock.",
            "scopes": ["custom:airlock:review", "access:services!service=airlock",
                       "read:users:name"],
            "users": sorted(checkers),
        },
        {
            "name": "data-manager",
            "description": "Ingests, pseudonymises, links and publishes data.",
            "scopes": ["custom:ingest:write", "read:users:name"],
            "users": sorted(s.data_managers),
        },
        {
            "name": "workspace-admin",
            "description": "Runs the service: users, servers, the airlock's audit log.",
            "scopes": ["admin:users", "admin:servers", "custom:airlock:admin",
                       "access:services"],
            "users": sorted(s.admins),
        },
    ]


def named_server_limit(s: Settings):
    """One server per project the user is a member of.

    A start refused for a project the user is not in (or that does not exist) leaves a stopped
    server entry behind in JupyterHub; those entries do not count, so a typo never uses up the
    user's quota, and a request for a name that is not one of the user's projects passes the
    limit so that the spawner can answer with the real reason.
    """

    def limit(handler) -> int:
        args = handler.path_args or ()
        name = args[0] if args else handler.current_user.name
        requested = args[1] if len(args) > 1 else ""
        mine = {p.name for p in projects_of(name, load_projects(s.store))}
        user = handler.find_user(name)
        orphans = [n for n in (user.orm_user.orm_spawners if user else {}) if n and n not in mine]
        return max(1, len(mine)) + len(orphans) + (1 if requested not in mine else 0)

    return limit


def landing_page(s: Settings):
    """Where a user lands after login: researchers start (or choose) their workspace; checkers,
    data managers and admins, who have no workspace, go to the airlock."""

    def url(handler) -> str:
        user = handler.current_user
        if user and projects_of(user.name, load_projects(s.store)):
            return "/hub/spawn"
        return "/services/airlock/"

    return url


def configure(c, s: Settings) -> None:
    s.hub_dir.mkdir(parents=True, exist_ok=True)
    projects = load_projects(s.store)
    members = {u for p in projects.values() for u in p.members}
    checkers = {u for p in projects.values() for u in p.checkers}
    everyone = members | checkers | set(s.admins) | set(s.data_managers)

    # --- hub, proxy, database
    c.JupyterHub.bind_url = f"http://{s.public_ip}:{s.public_port}"
    c.JupyterHub.hub_bind_url = f"http://{s.gateway}:{s.hub_port}"
    c.JupyterHub.hub_connect_url = f"http://{s.gateway}:{s.hub_port}"
    c.JupyterHub.db_url = s.db_url
    c.JupyterHub.cookie_secret_file = str(s.hub_dir / "jupyterhub_cookie_secret")
    c.JupyterHub.pid_file = str(s.hub_dir / "jupyterhub.pid")
    c.JupyterHub.cleanup_servers = False      # a hub restart keeps workspaces running
    c.JupyterHub.cleanup_proxy = False
    c.ConfigurableHTTPProxy.should_start = False  # the launcher runs the proxy (hub/cli.py)
    c.ConfigurableHTTPProxy.api_url = f"http://127.0.0.1:{s.proxy_api_port}"
    c.ConfigurableHTTPProxy.auth_token = (s.hub_dir / "proxy-token").read_text().strip()
    c.JupyterHub.allow_named_servers = True
    c.JupyterHub.named_server_limit_per_user = named_server_limit(s)
    c.JupyterHub.cookie_max_age_days = 1
    c.JupyterHub.shutdown_on_logout = False
    c.JupyterHub.default_url = landing_page(s)
    c.JupyterHub.active_server_limit = 0
    c.JupyterHub.template_vars = {"announcement": "Secure research workspace: outputs leave "
                                                  "only through the airlock."}

    # --- authentication
    if s.auth == "demo":
        from .auth import ensure_demo_users

        users_file = s.hub_dir / "demo-users.json"
        ensure_demo_users(users_file)
        c.JupyterHub.authenticator_class = "hub.auth.DemoAuthenticator"
        c.DemoAuthenticator.users_file = str(users_file)
    elif s.auth == "native":
        c.JupyterHub.authenticator_class = "nativeauthenticator.NativeAuthenticator"
        c.NativeAuthenticator.allow_2fa = True
        c.NativeAuthenticator.open_signup = False
        c.NativeAuthenticator.check_common_password = True
        c.NativeAuthenticator.minimum_password_length = 12
        c.NativeAuthenticator.allowed_failed_logins = 5
    else:
        c.JupyterHub.authenticator_class = "oauthenticator.generic.GenericOAuthenticator"
        c.GenericOAuthenticator.scope = ["openid", "profile", "email"]
        c.GenericOAuthenticator.username_claim = "preferred_username"
    c.Authenticator.allowed_users = everyone
    c.Authenticator.admin_users = set(s.admins)
    c.Authenticator.any_allow_config = False

    # --- roles and scopes
    c.JupyterHub.custom_scopes = CUSTOM_SCOPES
    c.JupyterHub.load_roles = roles(s, members, checkers)

    # --- services: the idle culler and the operations token used by the launcher and tests
    services = []
    if s.idle_timeout > 0:
        services.append({
            "name": "idle-culler",
            "command": [sys.executable, "-m", "jupyterhub_idle_culler",
                        f"--timeout={s.idle_timeout}", "--cull-every=300",
                        "--remove-named-servers=true"],
        })
        c.JupyterHub.load_roles.append({
            "name": "idle-culler",
            "scopes": ["list:users", "read:users:activity", "read:servers", "delete:servers"],
            "services": ["idle-culler"],
        })
    services.append({
        "name": "airlock",
        "url": s.airlock_url,
        "command": [sys.executable, "-m", "hub.airlock.service"],
        "environment": {**s.as_env(), "PYTHONPATH": str(ROOT)},
        "oauth_no_confirm": True,
        "oauth_client_allowed_scopes": ["custom:airlock:request", "custom:airlock:review",
                                        "custom:airlock:admin"],
        "display": True,
    })
    ops_token = s.hub_dir / "ops-token"
    services.append({"name": "workspace-ops", "api_token": ops_token.read_text().strip()})
    c.JupyterHub.load_roles.append({
        "name": "workspace-ops",
        "scopes": ["admin:users", "admin:servers", "tokens", "list:users", "read:users",
                   "list:services", "read:services"],
        "services": ["workspace-ops"],
    })
    c.JupyterHub.services = services

    # --- the spawner
    c.JupyterHub.spawner_class = "hub.spawner.WorkspaceSpawner"
    sp = c.WorkspaceSpawner
    sp.image = s.image
    sp.allowed_images = [s.image]
    sp.pull_policy = "never"
    sp.prefix = s.prefix
    sp.store_path = str(s.store)
    sp.network_name = s.network
    sp.use_internal_ip = True
    sp.remove = True
    sp.mem_limit = s.mem_limit
    sp.cpu_limit = s.cpu_limit
    sp.pids_limit = s.pids_limit
    sp.tmp_size = s.tmp_size
    sp.disable_user_config = True
    sp.start_timeout = 120
    sp.http_timeout = 60
    sp.debug = False
    sp.extra_labels = {"org.tw.instance": s.prefix}
    sp.environment = {"WORKSPACE_AIRLOCK_URL": f"{s.airlock_url}/services/airlock/"}
    # The workspace's own token may call the airlock (as its user) and nothing else new.
    sp.server_token_scopes = ["users:activity!user", "access:servers!server",
                              "access:services!service=airlock", "custom:airlock:request!user",
                              "read:users:name!user"]
