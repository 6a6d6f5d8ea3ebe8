"""The airlock service: a JupyterHub service (HubOAuth) with an API for the workspace client and
server-rendered pages (Jinja2) for researchers and output checkers.

Handlers are thin: they authenticate through the hub, call :class:`hub.airlock.core.Airlock`
(the workflow, storage, audit and release rules) and :func:`hub.airlock.sandbox.recompute` (the
trusted recomputation), and render. Run by the hub as a managed service::

    python -m hub.airlock.service

It listens on the internal network's gateway (``WORKSPACE_AIRLOCK_PORT``) so that workspaces can
reach its API, and the proxy routes ``/services/airlock/`` to it for browsers.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import logging
import os
import re
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from pathlib import Path

from jinja2 import Environment, FileSystemLoader, select_autoescape
from jupyterhub.services.auth import HubOAuth, HubOAuthCallbackHandler, HubOAuthenticated
from jupyterhub.utils import url_path_join
from tornado import ioloop, web

from ..settings import Settings
from . import core as airlock_core
from .diff import table_diff
from .directory import ProjectDirectory
from .sandbox import Limits, SandboxError, recompute

log = logging.getLogger("airlock")
TEMPLATES = Path(__file__).parent / "templates"
MAX_BODY = 16 * 1024 * 1024
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9 ._-]{0,79}$")


def airlock_db_url(s: Settings) -> str:
    """The airlock's database: ``AIRLOCK_DB_URL``, else SQLite in ``<home>/airlock``."""
    return os.environ.get("AIRLOCK_DB_URL", f"sqlite:///{s.home / 'airlock' / 'airlock.sqlite'}")


class Context:
    """What every handler needs: the core, the directory, settings, the template environment."""

    def __init__(self, s: Settings, prefix: str):
        self.settings = s
        self.prefix = prefix
        self.directory = ProjectDirectory(s.store)
        adir = s.home / "airlock"
        adir.mkdir(parents=True, exist_ok=True)
        self.airlock = airlock_core.Airlock(airlock_db_url(s), adir / "releases", self.directory)
        self.limits = Limits(
            timeout_s=float(os.environ.get("AIRLOCK_JOB_TIMEOUT", "120")),
            memory_mb=int(os.environ.get("AIRLOCK_JOB_MEMORY_MB", "2048")),
        )
        self.jobs = ThreadPoolExecutor(max_workers=int(os.environ.get("AIRLOCK_JOBS", "2")))
        self.env = Environment(loader=FileSystemLoader(TEMPLATES),
                               autoescape=select_autoescape(["html"]))
        self.env.filters["fromiso"] = _age


def _age(iso: str | None) -> str:
    if not iso:
        return ""
    try:
        then = datetime.fromisoformat(iso)
    except ValueError:
        return iso
    if then.tzinfo is None:
        then = then.replace(tzinfo=timezone.utc)
    secs = (datetime.now(timezone.utc) - then).total_seconds()
    for unit, n in (("d", 86400), ("h", 3600), ("min", 60)):
        if secs >= n:
            return f"{int(secs // n)} {unit} ago"
    return "just now"


class Base(HubOAuthenticated, web.RequestHandler):
    hub_auth_class = HubOAuth

    def initialize(self, ctx: Context):
        self.ctx = ctx

    @property
    def user(self) -> str:
        return self.current_user["name"]

    def check_xsrf_cookie(self):
        # A request with a token in its Authorization header is exempt from the XSRF check
        # (HubAuth marks it once it has identified the caller, so identify it first); a
        # browser's form post is not. (Cookie logins check XSRF inside HubOAuth itself.)
        if self.request.headers.get("Authorization", "").lower().startswith(("token ", "bearer ")):
            _ = self.current_user
            if getattr(self, "_token_authenticated", False):
                return None
        return super().check_xsrf_cookie()

    def core(self):
        return self.ctx.airlock

    def write_error(self, status_code, **kwargs):
        exc = kwargs.get("exc_info", (None, None, None))[1]
        message = getattr(exc, "log_message", None) or getattr(exc, "reason", None) or \
            self._reason
        if self.request.path.startswith(url_path_join(self.ctx.prefix, "api")):
            self.finish({"error": message, "status": status_code})
        else:
            self.finish(self.render_page("error.html", status=status_code, message=message))

    def render_page(self, name: str, **kw) -> str:
        user = self.current_user["name"] if self.current_user else None
        tpl = self.ctx.env.get_template(name)
        return tpl.render(prefix=self.ctx.prefix, user=user, xsrf=self.xsrf_form_html(),
                          hub_url="/hub/home", **kw)

    async def call(self, fn, *args, **kw):
        """Run a core call; turn its errors into HTTP answers with the core's own message."""
        try:
            return await asyncio.get_running_loop().run_in_executor(
                None, lambda: fn(*args, **kw))
        except airlock_core.NotFound as exc:
            raise web.HTTPError(404, str(exc) or "not found") from None
        except airlock_core.Forbidden as exc:
            raise web.HTTPError(403, str(exc)) from None
        except airlock_core.InvalidInput as exc:
            raise web.HTTPError(400, str(exc)) from None
        except airlock_core.AirlockError as exc:
            raise web.HTTPError(409, str(exc)) from None


# ------------------------------------------------------------------------------- the API


class ApiBase(Base):
    def get_login_url(self):
        raise web.HTTPError(403, "not logged in: use a JupyterHub token")

    def body(self) -> dict:
        if len(self.request.body) > MAX_BODY:
            raise web.HTTPError(413, f"request body over {MAX_BODY} bytes")
        try:
            data = json.loads(self.request.body or b"{}")
        except ValueError:
            raise web.HTTPError(400, "the body is not JSON") from None
        if not isinstance(data, dict):
            raise web.HTTPError(400, "the body must be a JSON object")
        return data


class RequestsAPI(ApiBase):
    @web.authenticated
    async def get(self):
        self.finish({"requests": await self.call(self.core().list_requests, self.user,
                                                 role="researcher")})

    @web.authenticated
    async def post(self):
        data = self.body()
        project, title = data.get("project"), (data.get("title") or "").strip()
        if not isinstance(project, str) or not project:
            raise web.HTTPError(400, "'project' is required")
        if not title:
            raise web.HTTPError(400, "a request needs a title")
        self.set_status(201)
        self.finish(await self.call(self.core().create_request, self.user, project, title))


class RequestAPI(ApiBase):
    @web.authenticated
    async def get(self, rid):
        self.finish(await self.call(self.core().get_request, self.user, int(rid)))


class ActionAPI(ApiBase):
    ACTIONS = {"submit", "withdraw"}

    @web.authenticated
    async def post(self, rid, action):
        rid = int(rid)
        if action not in self.ACTIONS:
            raise web.HTTPError(404, f"no action {action!r}")
        await self.call(getattr(self.core(), action), self.user, rid)
        self.finish(await self.call(self.core().get_request, self.user, rid))


class OutputsAPI(ApiBase):
    """Add (or replace) an output: a table spec that the airlock recomputes, or a free file."""

    @web.authenticated
    async def post(self, rid):
        rid = int(rid)
        data = self.body()
        name = (data.get("name") or "").strip()
        if not NAME_RE.match(name):
            raise web.HTTPError(400, "an output needs a name of letters, digits, space . _ - "
                                     "(at most 80)")
        description = (data.get("description") or "").strip()
        if not description:
            raise web.HTTPError(400, "describe the output: what it shows and why it is needed")
        justification = (data.get("justification") or "").strip()
        kind = data.get("kind")
        request = await self.call(self.core().get_request, self.user, rid)
        if kind in ("table", "figure", "model"):
            project = self.ctx.directory.project(request["project"])
            if project is None:
                raise web.HTTPError(404, "no such project")
            try:
                result = await asyncio.get_running_loop().run_in_executor(
                    self.ctx.jobs, recompute, project.data_dir, data.get("spec"),
                    project.policy_ref(), self.ctx.limits)
            except SandboxError as exc:
                raise web.HTTPError(422, f"the airlock could not recompute '{name}': {exc}") \
                    from None
            preview = data.get("preview") if isinstance(data.get("preview"), dict) else None
            diff = table_diff(preview, result.json) if kind == "table" else None
            out = await self.call(
                self.core().add_output, self.user, rid, name=name, kind=kind,
                description=description, justification=justification, spec=data.get("spec"),
                files=result.files,
                evidence={**result.evidence, "html": result.html, "why": result.why},
                preview=preview, verified=True, diff=diff)
        elif kind == "file":
            filename = data.get("filename") or ""
            try:
                content = base64.b64decode(data.get("content_b64") or "", validate=True)
            except (binascii.Error, ValueError):
                raise web.HTTPError(400, "content_b64 is not base64") from None
            out = await self.call(
                self.core().add_output, self.user, rid, name=name, kind="file",
                description=description, justification=justification, spec=None,
                files={filename: content}, evidence=None, preview=None, verified=False,
                diff=None)
        else:
            raise web.HTTPError(400, "kind must be 'table', 'figure', 'model' or 'file'")
        self.set_status(201)
        self.finish(out if isinstance(out, dict) else {"ok": True})


# ------------------------------------------------------------------------------- pages


class HomePage(Base):
    @web.authenticated
    async def get(self):
        core = self.core()
        mine = await self.call(core.list_requests, self.user, role="researcher")
        checking = self.ctx.directory.checker_projects(self.user)
        queue = await self.call(core.list_requests, self.user, role="checker") if checking else []
        self.finish(self.render_page("home.html", mine=mine, queue=queue, checking=checking))


class RequestPage(Base):
    @web.authenticated
    async def get(self, rid):
        rid = int(rid)
        req = await self.call(self.core().get_request, self.user, rid)
        project = self.ctx.directory.project(req["project"])
        is_checker = bool(project and project.is_checker(self.user))
        self.finish(self.render_page("request.html", r=req, is_checker=is_checker,
                                     is_author=req.get("author") == self.user))


class RequestAction(Base):
    """Form posts from the request page: vote, review, return, approve, reject, release…"""

    @web.authenticated
    async def post(self, rid, action):
        core = self.core()
        rid = int(rid)
        arg = lambda k: (self.get_body_argument(k, "") or "").strip()  # noqa: E731
        if action == "vote":
            await self.call(core.vote, self.user, rid, arg("output"), arg("decision"),
                            comment=arg("comment"), public=arg("public") == "on")
        elif action == "review":
            await self.call(core.submit_review, self.user, rid)
        elif action in ("return", "reject"):
            fn = core.return_request if action == "return" else core.reject
            await self.call(fn, self.user, rid, arg("comment"))
        elif action in ("approve", "release", "withdraw", "submit"):
            await self.call(getattr(core, action), self.user, rid)
        else:
            raise web.HTTPError(404, f"no action {action!r}")
        self.redirect(url_path_join(self.ctx.prefix, "requests", str(rid)))


class FileView(Base):
    """The exact bytes under review, shown as text (never executed by the browser)."""

    @web.authenticated
    async def get(self, rid, output, filename):
        data = await self.call(self.core().file_bytes, self.user, int(rid), output, filename)
        if filename.lower().endswith(".png"):
            self.set_header("Content-Type", "image/png")
        else:
            self.set_header("Content-Type", "text/plain; charset=utf-8")
        self.set_header("X-Content-Type-Options", "nosniff")
        self.set_header("Content-Security-Policy", "default-src 'none'; img-src 'self'")
        self.finish(data)


class Download(Base):
    @web.authenticated
    async def get(self, rid):
        name, data = await self.call(self.core().download, self.user, int(rid))
        self.set_header("Content-Type", "application/zip")
        self.set_header("Content-Disposition", f'attachment; filename="{name}"')
        self.finish(data)


class AuditPage(Base):
    @web.authenticated
    async def get(self):
        scopes = set(self.current_user.get("scopes") or [])
        if "custom:airlock:admin" not in scopes and not self.current_user.get("admin"):
            raise web.HTTPError(403, "the audit log is for airlock administrators")
        verify = await self.call(self.core().verify_audit)
        entries = await self.call(self.core().audit_entries)
        self.finish(self.render_page("audit.html", verify=verify, entries=entries[-500:]))


def make_app(s: Settings, prefix: str) -> web.Application:
    ctx = Context(s, prefix)
    r = lambda path: url_path_join(prefix, path)  # noqa: E731
    kw = {"ctx": ctx}
    return web.Application(
        [
            (r("oauth_callback"), HubOAuthCallbackHandler),
            (r("api/requests"), RequestsAPI, kw),
            (r(r"api/requests/([0-9]+)"), RequestAPI, kw),
            (r(r"api/requests/([0-9]+)/outputs"), OutputsAPI, kw),
            (r(r"api/requests/([0-9]+)/(submit|withdraw)"), ActionAPI, kw),
            (r(r"requests/([0-9]+)"), RequestPage, kw),
            (r(r"requests/([0-9]+)/download"), Download, kw),
            (r(r"requests/([0-9]+)/files/([^/]+)/([^/]+)"), FileView, kw),
            (r(r"requests/([0-9]+)/([a-z]+)"), RequestAction, kw),
            (r("audit"), AuditPage, kw),
            (prefix, HomePage, kw),
        ],
        cookie_secret=os.urandom(32),
        xsrf_cookies=True,
        hub_auth=HubOAuth(cache_max_age=60),
        max_body_size=MAX_BODY + 1024,
    )


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="[%(levelname)1.1s %(asctime)s airlock] %(message)s")
    s = Settings.from_env()
    prefix = os.environ.get("JUPYTERHUB_SERVICE_PREFIX", "/services/airlock/")
    app = make_app(s, prefix)
    port = int(os.environ.get("WORKSPACE_AIRLOCK_PORT", "8082"))
    app.listen(port, address=s.gateway)
    log.info("airlock listening on %s:%s%s", s.gateway, port, prefix)
    ioloop.IOLoop.current().start()


if __name__ == "__main__":
    main()
