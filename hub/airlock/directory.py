"""Who may do what in the airlock, from the projects in the store (hub.projects)."""

from __future__ import annotations

import time
from pathlib import Path

from ..projects import Project, load_projects


class ProjectDirectory:
    """Membership, checkers and review rules per project; re-read at most every few seconds."""

    def __init__(self, store: Path, ttl: float = 5.0):
        self.store = Path(store)
        self.ttl = ttl
        self._loaded = 0.0
        self._projects: dict[str, Project] = {}

    @property
    def projects(self) -> dict[str, Project]:
        if time.monotonic() - self._loaded > self.ttl:
            self._projects = load_projects(self.store)
            self._loaded = time.monotonic()
        return self._projects

    def project(self, name: str) -> Project | None:
        return self.projects.get(name)

    def is_member(self, user: str, project: str) -> bool:
        p = self.project(project)
        return bool(p and p.is_member(user))

    def is_checker(self, user: str, project: str) -> bool:
        p = self.project(project)
        return bool(p and p.is_checker(user))

    def checkers_required(self, project: str) -> int:
        p = self.project(project)
        return p.checkers_required if p else 2

    def member_projects(self, user: str) -> list[str]:
        return [p.name for p in self.projects.values() if p.is_member(user)]

    def checker_projects(self, user: str) -> list[str]:
        return [p.name for p in self.projects.values() if p.is_checker(user)]
