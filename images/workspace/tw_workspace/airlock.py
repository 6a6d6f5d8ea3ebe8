"""Ask for outputs to be released, from the notebook.

    from tw_workspace import airlock
    req = airlock.new_request("Positive tests by region")
    req.add_table(t, name="tests_by_region", description="Positive tests per region, 2021")
    req.add_file("notes.md", description="How the table was made")   # marked unverified
    req.submit()
    airlock.requests()            # my requests and their states

Tables are sent as their *spec* (the query and the table's arguments): the airlock recomputes
them itself and releases its own result, never bytes computed here. What you see in the notebook
is a preview; if it differs from the airlock's result, the checker sees that.

The client speaks to the airlock's API with this server's JupyterHub token; it can reach nothing
else. Errors are shown as one line, not a traceback.
"""

from __future__ import annotations

import base64
import html
import json
import os
import urllib.error
import urllib.request
from pathlib import Path

MAX_FILE_BYTES = 10 * 1024 * 1024


class AirlockError(Exception):
    """Something the airlock refused or could not do; the message says what and why."""


def _url() -> str:
    url = os.environ.get("WORKSPACE_AIRLOCK_URL")
    if not url:
        raise AirlockError("this workspace has no airlock configured (WORKSPACE_AIRLOCK_URL)")
    return url.rstrip("/") + "/"


def _call(method: str, path: str, body: dict | None = None, timeout: float = 300):
    token = os.environ.get("JUPYTERHUB_API_TOKEN")
    if not token:
        raise AirlockError("no JupyterHub token in this workspace (JUPYTERHUB_API_TOKEN)")
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(_url() + path, data=data, method=method)
    req.add_header("Authorization", f"token {token}")
    if data is not None:
        req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return json.loads(r.read() or b"null")
    except urllib.error.HTTPError as e:
        try:
            message = json.loads(e.read()).get("error") or e.reason
        except ValueError:
            message = e.reason
        raise AirlockError(f"the airlock said: {message}") from None
    except (urllib.error.URLError, OSError) as e:
        raise AirlockError(f"the airlock cannot be reached: {getattr(e, 'reason', e)}") from None


class Request:
    """A release request; its state lives in the airlock."""

    def __init__(self, data: dict):
        self._data = data

    @property
    def id(self) -> int:
        return self._data["id"]

    @property
    def state(self) -> str:
        return self._data["state"]

    @property
    def outputs(self) -> list[dict]:
        return self._data.get("outputs", [])

    def refresh(self) -> Request:
        self._data = _call("GET", f"api/requests/{self.id}")
        return self

    def add(self, output, name: str, description: str, justification: str = "") -> dict:
        """Add a checked table, figure or model from ``sdc`` (made from a SQL query over the
        project's views): the airlock recomputes it and releases its own result."""
        spec = getattr(output, "spec", None)
        if not isinstance(spec, dict):
            raise AirlockError("add() takes a checked output from sdc.table(), sdc.figure() or "
                               "sdc.model()")
        kind = spec.get("kind", "table")
        if "sql" not in (spec.get("source") or {}):
            raise AirlockError(
                f"only a {kind} made from a SQL query on the project's data can be recomputed "
                "by the airlock: pass the query, e.g. sdc.table(\"SELECT ... FROM <dataset>\", "
                "..., con=con). Something computed in the notebook can be attached with "
                "add_file() as unverified.")
        out = _call("POST", f"api/requests/{self.id}/outputs", {
            "name": name, "kind": kind, "spec": {**spec, "kind": kind},
            "description": description, "justification": justification,
            "preview": output.to_json(),
        })
        self.refresh()
        return out

    add_table = add_figure = add_model = add

    def add_file(self, path: str | os.PathLike, description: str, name: str | None = None,
                 justification: str = "") -> dict:
        """Attach a file made in the workspace; it is *unverified* and reviewed by hand."""
        p = Path(path)
        if not p.is_file():
            raise AirlockError(f"{p}: no such file")
        size = p.stat().st_size
        if size > MAX_FILE_BYTES:
            raise AirlockError(f"{p.name}: {size} bytes, over the limit of {MAX_FILE_BYTES}")
        out = _call("POST", f"api/requests/{self.id}/outputs", {
            "name": name or p.stem, "kind": "file", "filename": p.name,
            "content_b64": base64.b64encode(p.read_bytes()).decode(),
            "description": description, "justification": justification,
        })
        self.refresh()
        return out

    def submit(self) -> Request:
        self._data = _call("POST", f"api/requests/{self.id}/submit", {})
        return self

    def withdraw(self) -> Request:
        self._data = _call("POST", f"api/requests/{self.id}/withdraw", {})
        return self

    def __repr__(self) -> str:
        outs = ", ".join(f"{o['name']} ({o['kind']}{'' if o.get('verified') else ', unverified'})"
                         for o in self.outputs) or "no outputs"
        return f"<release request #{self.id} '{self._data.get('title')}': {self.state}; {outs}>"

    def _repr_html_(self) -> str:
        rows = "".join(
            f"<tr><td>{html.escape(o['name'])}</td><td>{html.escape(o['kind'])}</td>"
            f"<td>{'recomputed by the airlock' if o.get('verified') else 'unverified'}</td>"
            f"<td>{html.escape((o.get('diff') or {}).get('reason', ''))}</td></tr>"
            for o in self.outputs)
        return (f"<p><b>Release request #{self.id}</b> {html.escape(self._data.get('title', ''))}"
                f" &middot; <b>{html.escape(self.state)}</b></p>"
                f"<table><tr><th>output</th><th>kind</th><th>check</th><th>preview</th></tr>"
                f"{rows}</table>")


def new_request(title: str, project: str | None = None) -> Request:
    """Start a release request (a draft) for this workspace's project."""
    project = project or os.environ.get("WORKSPACE_PROJECT")
    if not project:
        raise AirlockError("which project? (WORKSPACE_PROJECT is not set)")
    return Request(_call("POST", "api/requests", {"project": project, "title": title}))


def requests() -> list[Request]:
    """My release requests."""
    return [Request(d) for d in _call("GET", "api/requests")["requests"]]


def get(request_id: int) -> Request:
    return Request(_call("GET", f"api/requests/{int(request_id)}"))


def _install_ipython_handler() -> None:
    """In a notebook, show airlock and sdc errors as one clear line instead of a traceback."""
    try:
        from IPython import get_ipython
    except ImportError:
        return
    ip = get_ipython()
    if ip is None:
        return
    kinds = [AirlockError]
    try:
        import sdc

        kinds.append(sdc.SdcError)
    except Exception:  # noqa: BLE001 - sdc is optional here
        pass

    def show(shell, etype, value, tb, tb_offset=None):
        print(f"{etype.__name__}: {value}")

    ip.set_custom_exc(tuple(kinds), show)


_install_ipython_handler()
