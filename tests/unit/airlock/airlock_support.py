"""Helpers for the airlock tests (imported by conftest and the test modules)."""
from dataclasses import dataclass, field

@dataclass
class FakeDirectory:
    """Projects as hub.projects has them: members, checkers and the number of reviews required."""
    members: dict = field(default_factory=lambda: {
        "covid": {"alice", "bob"}, "income": {"carol"}})
    checkers: dict = field(default_factory=lambda: {
        # "carol" checks covid while being a researcher in income; "alice" is listed as a checker
        # of her own project (hub.projects forbids it, the airlock must not rely on that).
        "covid": {"chk1", "chk2", "carol", "alice"}, "income": {"chk1"}})
    required: dict = field(default_factory=lambda: {"covid": 2, "income": 1})

    def is_member(self, user, project):
        return user in self.members.get(project, set())

    def is_checker(self, user, project):
        return user in self.checkers.get(project, set())

    def checkers_required(self, project):
        return self.required.get(project, 1)


CSV = b"sex,n\nF,12\nM,15\n"


def make_request(airlock, *, author="alice", project="covid", outputs=("t1",), submit=True):
    r = airlock.create_request(author, project, "Counts by sex")
    for name in outputs:
        airlock.add_output(author, r["id"], name=name, kind="table", description=f"{name} table",
                           files={f"{name}.csv": CSV}, verified=True,
                           evidence={"policy": {"name": "acro"},
                                     "cells": [{"rules": ["threshold"]}, {"rules": []}]},
                           spec={"sql": "SELECT 1"})
    if submit:
        airlock.submit(author, r["id"])
    return r["id"]


def approve_all(airlock, rid, checkers=("chk1", "chk2"), outputs=("t1",)):
    for c in checkers:
        for o in outputs:
            airlock.vote(c, rid, o, "approve")
        airlock.submit_review(c, rid)
    airlock.approve(checkers[0], rid)
