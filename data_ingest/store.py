"""The store on disk (docs/store-layout.md): immutable dataset versions, projects, linkage runs.

Everything is written into ``<store>/.staging/`` first and renamed into place when complete, so
a failed or interrupted run never leaves a partial dataset where the hub or a reader would see
it. Written versions are made read-only (files 0444, folders 0555).
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import stat
import tomllib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from .errors import IngestError

ENV_STORE = "WORKSPACE_STORE"
VERSION = re.compile(r"^v([0-9]+)$")
PROJECT_NAME = re.compile(r"^[a-z0-9-]+$")
DATASET_NAME = re.compile(r"^[a-z][a-z0-9_]*$")


def default_store() -> Path:
    return Path(os.environ.get(ENV_STORE, "var/store"))


def make_readonly(path: Path) -> None:
    """Files 0444, folders 0555, bottom-up."""
    for dirpath, dirnames, filenames in os.walk(path, topdown=False):
        for f in filenames:
            os.chmod(os.path.join(dirpath, f), 0o444)
        os.chmod(dirpath, 0o555)


def make_files_readonly(path: Path) -> None:
    for dirpath, _dirs, filenames in os.walk(path):
        for f in filenames:
            os.chmod(os.path.join(dirpath, f), 0o444)


def remove_tree(path: Path) -> None:
    """Remove a tree, including read-only ones this tool wrote."""
    if not path.exists():
        return
    for dirpath, _dirnames, _ in os.walk(path):
        os.chmod(dirpath, stat.S_IRWXU)
    shutil.rmtree(path)


def parse_ref(ref: str) -> tuple[str, str | None]:
    """``persons``, ``persons@v2`` or ``persons@2`` -> (name, version or None)."""
    name, _, version = ref.partition("@")
    if not DATASET_NAME.match(name):
        raise IngestError(f"'{ref}' is not a dataset name (lowercase letters, digits, _)")
    if version:
        if version.isdigit():
            version = f"v{int(version)}"
        if not VERSION.match(version):
            raise IngestError(f"'{ref}': a version looks like v1, v2, ...")
    return name, version or None


class Store:
    def __init__(self, root: str | Path):
        self.root = Path(root)

    # --- layout ---
    @property
    def datasets_dir(self) -> Path:
        return self.root / "datasets"

    @property
    def projects_dir(self) -> Path:
        return self.root / "projects"

    @property
    def linkage_dir(self) -> Path:
        return self.root / "linkage"

    @property
    def objections_dir(self) -> Path:
        return self.root / "objections"

    @property
    def staging_dir(self) -> Path:
        return self.root / ".staging"

    def ensure(self) -> None:
        for d in (self.datasets_dir, self.projects_dir, self.linkage_dir, self.objections_dir, self.staging_dir):
            d.mkdir(parents=True, exist_ok=True)
        self.clean_stale_staging()

    # --- staging ---
    @contextmanager
    def staging(self, label: str) -> Iterator[Path]:
        """A fresh folder inside the store to write into; removed unless moved away."""
        self.staging_dir.mkdir(parents=True, exist_ok=True)
        path = self.staging_dir / f"{label}-{os.getpid()}-{secrets.token_hex(4)}"
        path.mkdir()
        try:
            yield path
        finally:
            remove_tree(path)

    def clean_stale_staging(self) -> None:
        """Remove staging folders left by runs that died (their process is gone)."""
        if not self.staging_dir.exists():
            return
        for p in self.staging_dir.iterdir():
            m = re.match(r"^.*-(\d+)-[0-9a-f]{8}$", p.name)
            if m and not _pid_alive(int(m.group(1))):
                remove_tree(p)

    # --- datasets ---
    def datasets(self) -> list[str]:
        if not self.datasets_dir.exists():
            return []
        return sorted(p.name for p in self.datasets_dir.iterdir() if p.is_dir() and DATASET_NAME.match(p.name))

    def versions(self, dataset: str) -> list[str]:
        d = self.datasets_dir / dataset
        if not d.is_dir():
            return []
        vs = [p.name for p in d.iterdir() if VERSION.match(p.name) and (p / "metadata.json").exists()]
        return sorted(vs, key=lambda v: int(v[1:]))

    def version_dir(self, dataset: str, version: str) -> Path:
        return self.datasets_dir / dataset / version

    def resolve(self, ref: str) -> tuple[str, str]:
        name, version = parse_ref(ref)
        versions = self.versions(name)
        if not versions:
            raise IngestError(f"no dataset '{name}' in the store {self.root} (see `ingest catalog`)")
        if version is None:
            return name, versions[-1]
        if version not in versions:
            raise IngestError(f"dataset '{name}' has no version {version} (it has {', '.join(versions)})")
        return name, version

    def metadata(self, dataset: str, version: str) -> dict[str, Any]:
        return json.loads((self.version_dir(dataset, version) / "metadata.json").read_text())

    def data_files(self, dataset: str, version: str) -> list[Path]:
        return sorted(self.version_dir(dataset, version).glob("part-*.parquet"))

    def find_fingerprint(self, dataset: str, fingerprint: str) -> str | None:
        for v in self.versions(dataset):
            if self.metadata(dataset, v).get("provenance", {}).get("fingerprint") == fingerprint:
                return v
        return None

    @contextmanager
    def claim_version(self, dataset: str) -> Iterator[tuple[str, Path]]:
        """Reserve the next version name (an empty folder: not a version until it holds
        metadata.json). Released again if the run fails before :meth:`commit_version`."""
        parent = self.datasets_dir / dataset
        parent.mkdir(parents=True, exist_ok=True)
        for _ in range(1000):
            existing = [int(p.name[1:]) for p in parent.iterdir() if VERSION.match(p.name)]
            version = f"v{max(existing, default=0) + 1}"
            target = parent / version
            try:
                os.mkdir(target)  # a concurrent run gets FileExistsError and takes the next one
            except FileExistsError:
                continue
            break
        else:  # pragma: no cover
            raise IngestError(f"could not claim a new version of '{dataset}'")
        try:
            yield version, target
        finally:
            for d in (target, parent):  # a failed run leaves neither its claim nor a new dataset folder
                try:
                    if d.is_dir() and not any(d.iterdir()):
                        d.rmdir()
                except OSError:  # a concurrent run just used it
                    pass

    def commit_version(self, staged: Path, target: Path) -> None:
        """Move a complete staged folder onto its claimed (empty) name: one atomic rename."""
        make_files_readonly(staged)
        os.rename(staged, target)
        make_readonly(target)

    # --- projects ---
    def project_dir(self, project: str) -> Path:
        return self.projects_dir / project

    def read_project(self, project: str) -> dict[str, Any]:
        if not PROJECT_NAME.match(project):
            raise IngestError(f"'{project}' is not a project name ([a-z0-9-]+)")
        path = self.project_dir(project) / "project.toml"
        try:
            conf = tomllib.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise IngestError(f"project '{project}' does not exist (no project.toml)", file=str(path)) from None
        except tomllib.TOMLDecodeError as e:
            raise IngestError(f"not valid TOML: {e}", file=str(path)) from None
        if conf.get("name", project) != project:
            raise IngestError(f"name = '{conf.get('name')}' does not match the folder '{project}'", file=str(path))
        if not isinstance(conf.get("datasets", []), list):
            raise IngestError("datasets must be a list", file=str(path))
        return conf

    def projects(self) -> list[str]:
        if not self.projects_dir.exists():
            return []
        return sorted(p.name for p in self.projects_dir.iterdir() if (p / "project.toml").exists())

    def published(self, project: str) -> dict[str, dict[str, Any]]:
        data = self.project_dir(project) / "data"
        out = {}
        if data.is_dir():
            for d in sorted(data.iterdir()):
                m = d / "metadata.json"
                if m.exists():
                    out[d.name] = json.loads(m.read_text())
        return out

    # --- catalogue ---
    def catalog(self) -> list[dict[str, Any]]:
        """One entry per dataset version with its metadata, and where it is published."""
        published: dict[tuple[str, str], list[str]] = {}
        for p in self.projects():
            for name, md in self.published(p).items():
                published.setdefault((name, md.get("version", "")), []).append(p)
        rows = []
        for name in self.datasets():
            for v in self.versions(name):
                md = self.metadata(name, v)
                md["published_to"] = published.get((name, v), [])
                rows.append(md)
        return rows


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def write_json(path: Path, obj: Any) -> None:
    path.write_text(json.dumps(obj, indent=2, sort_keys=False, default=str) + "\n", encoding="utf-8")
