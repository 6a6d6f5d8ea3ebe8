"""Closed download paths for the Jupyter server in the workspace.

Loaded by ``jupyter_server_config.py``:

* ``/files/``, ``/view/``, ``/nbconvert/`` and ``/api/nbconvert`` answer 403. They are
  registered through ``ServerApp.extra_services``, which jupyter_server loads *before* its
  default services, so they shadow the built-in handlers.
* :class:`GuardedContentsManager` refuses, through the contents API, to hand out binary
  content (``format=base64``), data files (Parquet, spreadsheets, archives, databases, …) and
  data-like text files (CSV, TSV, …) over :attr:`max_data_text_bytes`; and accepts saves
  (uploads) only of notebooks and small text files with an allowed extension.

This is one layer: a browser still shows what is on the screen (see the README).
"""

from __future__ import annotations

import posixpath

from jupyter_server.base.handlers import JupyterHandler
from jupyter_server.services.contents.largefilemanager import AsyncLargeFileManager
from tornado import web
from traitlets import Int, List, Unicode

BLOCKED_MESSAGE = "Downloads are closed in this workspace: outputs leave through the airlock."


class ForbiddenHandler(JupyterHandler):
    """403 for every method, before anything is read."""

    def prepare(self):  # noqa: D401
        raise web.HTTPError(403, BLOCKED_MESSAGE)


default_handlers = [
    (r"/files/.*", ForbiddenHandler),
    (r"/view/.*", ForbiddenHandler),
    (r"/nbconvert/.*", ForbiddenHandler),
    (r"/api/nbconvert.*", ForbiddenHandler),
]


def _ext(path: str) -> str:
    name = posixpath.basename(path).lower()
    for double in (".tar.gz", ".tar.bz2", ".tar.xz"):
        if name.endswith(double):
            return double
    return posixpath.splitext(name)[1]


class GuardedContentsManager(AsyncLargeFileManager):
    """The contents API without a way to carry data files out, or data in."""

    blocked_extensions = List(
        Unicode(),
        default_value=[
            ".parquet", ".arrow", ".feather", ".ipc", ".orc", ".avro",
            ".xlsx", ".xlsm", ".xls", ".ods", ".sav", ".zsav", ".dta", ".sas7bdat", ".xpt",
            ".rds", ".rdata", ".rda", ".pkl", ".pickle", ".joblib", ".npy", ".npz",
            ".h5", ".hdf5", ".nc", ".mat",
            ".db", ".duckdb", ".sqlite", ".sqlite3", ".wal",
            ".zip", ".gz", ".bz2", ".xz", ".zst", ".tar", ".tgz", ".7z", ".rar",
            ".tar.gz", ".tar.bz2", ".tar.xz",
            ".pdf", ".docx", ".pptx",
        ],
        config=True,
        help="Files with these extensions are never handed out by the contents API.",
    )
    data_text_extensions = List(
        Unicode(), default_value=[".csv", ".tsv", ".tab", ".psv", ".dat", ".txt", ".json",
                                  ".jsonl", ".ndjson", ".xml"],
        config=True, help="Text files that may hold data: handed out only when small.",
    )
    max_data_text_bytes = Int(64 * 1024, config=True,
                              help="Largest data-like text file the contents API hands out.")
    max_text_bytes = Int(2 * 1024 * 1024, config=True,
                         help="Largest other text file the contents API hands out.")
    upload_extensions = List(
        Unicode(), default_value=[".py", ".sql", ".md", ".txt", ".r", ".toml", ".yaml", ".yml",
                                  ".cfg", ".ini", ".sh", ".ipynb"],
        config=True, help="Extensions a saved (uploaded or edited) text file may have.",
    )
    max_upload_bytes = Int(256 * 1024, config=True,
                           help="Largest text file that may be saved through the contents API.")
    max_notebook_bytes = Int(16 * 1024 * 1024, config=True,
                             help="Largest notebook that may be saved through the contents API.")

    def _refuse(self, path: str, why: str):
        self.log.warning("contents API refused %s: %s", path, why)
        raise web.HTTPError(403, f"{posixpath.basename(path) or path}: {why}")

    async def get(self, path, content=True, type=None, format=None, **kwargs):
        if not content:
            return await super().get(path, content=False, type=type, format=format, **kwargs)
        if format == "base64":
            self._refuse(path, "binary content is not handed out. " + BLOCKED_MESSAGE)
        meta = await super().get(path, content=False, type=type, **kwargs)
        if meta["type"] == "directory":
            return await super().get(path, content=True, type=type, format=format, **kwargs)
        ext, size = _ext(path), meta.get("size") or 0
        if ext in self.blocked_extensions:
            self._refuse(path, "data files are not handed out. " + BLOCKED_MESSAGE)
        if meta["type"] == "file":
            if ext in self.data_text_extensions and size > self.max_data_text_bytes:
                self._refuse(path, f"data files over {self.max_data_text_bytes} bytes are not "
                                   "handed out. " + BLOCKED_MESSAGE)
            if size > self.max_text_bytes:
                self._refuse(path, "large files are not handed out. " + BLOCKED_MESSAGE)
        model = await super().get(path, content=True, type=type, format=format, **kwargs)
        if model.get("format") == "base64":
            self._refuse(path, "binary content is not handed out. " + BLOCKED_MESSAGE)
        return model

    async def save(self, model, path=""):
        kind = model.get("type")
        if kind == "directory" or "content" not in model:
            return await super().save(model, path)
        if model.get("chunk") is not None:
            self._refuse(path, "chunked uploads are refused: data comes in through the data "
                               "managers")
        if kind == "notebook":
            import json

            size = len(json.dumps(model.get("content")).encode())
            if size > self.max_notebook_bytes:
                self._refuse(path, f"notebooks over {self.max_notebook_bytes} bytes are refused")
            return await super().save(model, path)
        if model.get("format") != "text":
            self._refuse(path, "only text files can be saved or uploaded: data comes in "
                               "through the data managers")
        if _ext(path) not in self.upload_extensions:
            self._refuse(path, "only code and notes ("
                         + ", ".join(self.upload_extensions) + ") can be saved or uploaded")
        if len((model.get("content") or "").encode()) > self.max_upload_bytes:
            self._refuse(path, f"text files over {self.max_upload_bytes} bytes are refused")
        return await super().save(model, path)
