"""Projects: folders in the store with a ``project.toml`` (see docs/store-layout.md).

Pure functions and a frozen dataclass: no JupyterHub and no Docker in here.
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

NAME_RE = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")
USER_RE = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")
DATASET_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class ProjectError(ValueError):
    """A project folder or its project.toml is not valid."""


@dataclass(frozen=True)
class Project:
    name: str
    title: str
    members: tuple[str, ...]
    checkers: tuple[str, ...]
    datasets: tuple[str, ...]
    policy: str
    path: Path = field(compare=False)
    checkers_required: int = 2

    @property
    def data_dir(self) -> Path:
        return self.path / "data"

    def is_member(self, user: str) -> bool:
        return user in self.members

    def is_checker(self, user: str) -> bool:
        return user in self.checkers

    def policy_ref(self) -> str:
        """The policy as ``sdc.load_policy`` takes it: a shipped name, or a file in the project."""
        if self.policy.endswith(".toml"):
            return str(self.path / Path(self.policy).name)
        return self.policy

    def published_datasets(self) -> list[str]:
        """Datasets that are actually present in the project's data folder."""
        if not self.data_dir.is_dir():
            return []
        return sorted(
            d.name for d in self.data_dir.iterdir()
            if d.is_dir() and DATASET_RE.match(d.name) and any(d.glob("*.parquet"))
        )


def _names(raw, what: str, pattern: re.Pattern, where: Path) -> tuple[str, ...]:
    if raw is None:
        return ()
    if not isinstance(raw, list) or not all(isinstance(x, str) for x in raw):
        raise ProjectError(f"{where}: '{what}' must be a list of strings")
    bad = [x for x in raw if not pattern.match(x)]
    if bad:
        raise ProjectError(f"{where}: invalid {what}: {', '.join(bad)}")
    return tuple(dict.fromkeys(raw))


def parse_project(path: Path) -> Project:
    """Read and validate ``<path>/project.toml``."""
    cfg = path / "project.toml"
    try:
        data = tomllib.loads(cfg.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ProjectError(f"{cfg}: missing") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ProjectError(f"{cfg}: not valid TOML: {exc}") from None
    name = data.get("name", path.name)
    if name != path.name:
        raise ProjectError(f"{cfg}: name '{name}' differs from its folder '{path.name}'")
    if not isinstance(name, str) or not NAME_RE.match(name):
        raise ProjectError(f"{cfg}: project name must match {NAME_RE.pattern}")
    unknown = set(data) - {"name", "title", "members", "checkers", "datasets", "policy",
                           "checkers_required"}
    if unknown:
        raise ProjectError(f"{cfg}: unknown keys: {', '.join(sorted(unknown))}")
    members = _names(data.get("members"), "members", USER_RE, cfg)
    checkers = _names(data.get("checkers"), "checkers", USER_RE, cfg)
    both = set(members) & set(checkers)
    if both:
        # A checker never reviews a project they work on (no self-review, by construction).
        raise ProjectError(f"{cfg}: users both member and checker: {', '.join(sorted(both))}")
    policy = data.get("policy", "acro")
    if not isinstance(policy, str) or not policy:
        raise ProjectError(f"{cfg}: 'policy' must be a policy name or a file name")
    required = data.get("checkers_required", 2 if len(checkers) >= 2 else 1)
    if required not in (1, 2):
        raise ProjectError(f"{cfg}: 'checkers_required' must be 1 or 2")
    if checkers and required > len(checkers):
        raise ProjectError(f"{cfg}: {required} checkers required but only {len(checkers)} named")
    return Project(
        checkers_required=required,
        name=name,
        title=str(data.get("title", name)),
        members=members,
        checkers=checkers,
        datasets=_names(data.get("datasets"), "datasets", DATASET_RE, cfg),
        policy=policy,
        path=path,
    )


def load_projects(store: Path) -> dict[str, Project]:
    """All valid projects in ``store/projects``; an invalid one raises :class:`ProjectError`."""
    root = Path(store) / "projects"
    if not root.is_dir():
        return {}
    out = {}
    for d in sorted(root.iterdir()):
        if d.is_dir() and not d.name.startswith("."):
            p = parse_project(d)
            out[p.name] = p
    return out


def projects_of(user: str, projects: dict[str, Project]) -> list[Project]:
    """The projects ``user`` may start a workspace for."""
    return [p for p in projects.values() if p.is_member(user)]


def choose_project(user: str, projects: dict[str, Project], requested: str | None,
                   server_name: str = "") -> Project:
    """Which project a server start is for, or :class:`ProjectError` with the reason.

    Order: the explicit request (spawn form / API body), else a server named after a project,
    else the user's only project.
    """
    wanted = requested or (server_name if server_name in projects else None)
    if wanted:
        project = projects.get(wanted)
        if project is None:
            raise ProjectError(f"no project named '{wanted}'")
        if not project.is_member(user):
            raise ProjectError(f"{user} is not a member of project '{wanted}'")
        return project
    mine = projects_of(user, projects)
    if not mine:
        raise ProjectError(f"{user} is not a member of any project")
    if len(mine) > 1:
        raise ProjectError(
            f"{user} is a member of several projects ({', '.join(p.name for p in mine)}): "
            "choose one")
    return mine[0]
