"""The workspace spawner: one hardened container per researcher and project.

``WorkspaceSpawner`` is a :class:`dockerspawner.DockerSpawner` that

* chooses the project (spawn form, API body ``{"project": ...}``, a server named after the
  project, or the user's only project) and refuses anyone who is not a member;
* mounts that project's published data read-only at ``/data`` and a home volume of its own per
  user *and* project (so nothing carries over from one project to another);
* drops every capability, sets ``no-new-privileges``, a read-only root filesystem with a
  ``noexec`` tmpfs at ``/tmp``, memory, CPU and process limits, an init process, and runs as the
  image's unprivileged user;
* joins the internal network only (no route out; see :mod:`hub.netsetup`) and points DNS at
  nothing, so no outside name resolves.
"""

from __future__ import annotations

import asyncio
import html
import time
from pathlib import Path

from dockerspawner import DockerSpawner
from tornado import web
from tornado.httpclient import AsyncHTTPClient
from traitlets import Dict, Int, List, Unicode, default

from .projects import ProjectError, choose_project, load_projects, projects_of


class WorkspaceSpawner(DockerSpawner):
    store_path = Unicode(config=True, help="The store folder holding projects/<name>/data.")
    data_mount = Unicode("/data", config=True, help="Where the project's data appears.")
    home_mount = Unicode("/home/researcher", config=True, help="The researcher's home.")
    home_volume_template = Unicode(
        "{prefix}-home-{username}--{project}", config=True,
        help="Docker volume name of a home; one per user and project.")
    pids_limit = Int(512, config=True, help="Most processes a workspace may run.")
    tmp_size = Unicode("512m", config=True, help="Size of the tmpfs at /tmp.")
    container_user = Unicode("1000:1000", config=True, help="uid:gid the server runs as.")
    dns_servers = List(
        Unicode(), default_value=["127.0.0.1"], config=True,
        help="DNS servers for the container: nothing answers at 127.0.0.1 inside it.")
    extra_labels = Dict(config=True, help="More labels on each container.")

    project_name = Unicode(help="The project of the current or last start (kept in state).")

    @default("options_form")
    def _default_options_form(self):
        return self._project_form

    def _projects(self):
        try:
            return load_projects(Path(self.store_path))
        except ProjectError as exc:
            self.log.error("projects: %s", exc)
            raise web.HTTPError(500, f"project configuration error: {exc}") from None

    def _project_form(self, spawner) -> str:
        projects = self._projects()
        if spawner.name in projects:
            return ""
        mine = projects_of(spawner.user.name, projects)
        if len(mine) <= 1:
            return ""
        opts = "".join(
            f'<option value="{html.escape(p.name)}">{html.escape(p.title)} '
            f"({html.escape(p.name)})</option>"
            for p in mine
        )
        return (
            '<label for="project">Project</label>'
            f'<select class="form-control" name="project" id="project" required>{opts}</select>'
        )

    def options_from_form(self, formdata):
        project = (formdata.get("project") or [""])[0]
        return {"project": project} if project else {}

    def resolve_project(self):
        requested = self.user_options.get("project") if self.user_options else None
        if requested is not None and not isinstance(requested, str):
            raise web.HTTPError(400, "'project' must be a project name")
        try:
            return choose_project(self.user.name, self._projects(), requested, self.name)
        except ProjectError as exc:
            raise web.HTTPError(403, str(exc)) from None

    def get_state(self):
        state = super().get_state()
        if self.project_name:
            state["project_name"] = self.project_name
        return state

    def load_state(self, state):
        super().load_state(state)
        self.project_name = state.get("project_name", "")

    def get_env(self):
        env = super().get_env()
        env["WORKSPACE_PROJECT"] = self.project_name
        env["WORKSPACE_DATA"] = self.data_mount
        return env

    async def start(self):
        project = self.resolve_project()
        self.project_name = project.name
        data_dir = project.data_dir
        if not data_dir.is_dir():
            raise web.HTTPError(409, f"project '{project.name}' has no published data yet")
        home = self.home_volume_template.format(
            prefix=self.prefix, username=self.escaped_name, project=project.name)
        # Volumes for this start only: the home (rw) and the project's data (read-only).
        self.volumes = {home: {"bind": self.home_mount, "mode": "rw"}}
        self.read_only_volumes = {str(data_dir): self.data_mount}
        self.extra_host_config = {
            "cap_drop": ["ALL"],
            "security_opt": ["no-new-privileges"],
            "read_only": True,
            "tmpfs": {"/tmp": f"rw,nosuid,nodev,noexec,size={self.tmp_size}"},
            "pids_limit": self.pids_limit,
            "init": True,
            "dns": list(self.dns_servers),
            "memswap_limit": self.mem_limit,
            "ipc_mode": "private",
        }
        self.extra_create_kwargs = {
            "user": self.container_user,
            "labels": {
                "org.tw.project": project.name,
                "org.tw.user": self.user.name,
                **self.extra_labels,
            },
        }
        self.log.info("starting workspace for %s in project %s", self.user.name, project.name)
        ip, port = await super().start()
        await self._wait_until_listening(ip, port)
        return ip, port

    async def _wait_until_listening(self, ip: str, port: int) -> None:
        """Poll the new server every 50 ms until it answers.

        The hub's own readiness check backs off exponentially (up to seconds between tries);
        answering it on its first try saves about a second per spawn.
        """
        client = AsyncHTTPClient()
        url = f"http://{ip}:{port}{self.server.base_url}api"
        deadline = time.monotonic() + self.http_timeout
        tries = 0
        while time.monotonic() < deadline:
            try:
                await client.fetch(url, request_timeout=2, raise_error=False)
                return
            except Exception:  # refused, reset, not yet listening
                await asyncio.sleep(0.05)
            tries += 1
            if tries % 20 == 0:
                obj = await self.get_object()
                if obj is None or obj["State"].get("Status") not in ("running", "created"):
                    return  # it died: the hub's own checks report why
