"""Authentication.

* ``demo``: :class:`DemoAuthenticator`, fixed demo accounts with passwords generated at first
  start into ``<home>/hub/demo-users.json`` (mode 0600, never in the repository). Only allowed
  when the proxy listens on 127.0.0.1 (checked in :mod:`hub.settings`).
* ``native``: NativeAuthenticator with its two-factor option, for small sites.
* ``oauth``: OAuthenticator's GenericOAuthenticator against the site's OIDC provider, which does
  MFA; configured through OAuthenticator's own environment variables
  (``OAUTH2_AUTHORIZE_URL``, ``OAUTH2_TOKEN_URL``, ``OAUTH_CLIENT_ID``, …) or an extra config file.
"""

from __future__ import annotations

import hmac
import json
import os
import secrets
from pathlib import Path

from jupyterhub.auth import Authenticator
from traitlets import Unicode

DEMO_USERS = ("researcher", "researcher2", "checker", "checker2", "datamanager", "admin")


def ensure_demo_users(path: Path) -> dict[str, str]:
    """Create the demo password file once; return user -> password."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.exists():
        return json.loads(path.read_text())
    users = {u: secrets.token_urlsafe(9) for u in DEMO_USERS}
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(users, f, indent=1)
    os.replace(tmp, path)
    return users


class DemoAuthenticator(Authenticator):
    """Demo accounts for a single machine; passwords in a local 0600 file."""

    users_file = Unicode(config=True, help="JSON file: user -> password.")

    async def authenticate(self, handler, data):
        users = json.loads(Path(self.users_file).read_text())
        name = (data.get("username") or "").strip()
        expected = users.get(name)
        given = data.get("password") or ""
        if expected and hmac.compare_digest(expected.encode(), given.encode()):
            return name
        self.log.warning("demo login refused for %r", name)
        return None
