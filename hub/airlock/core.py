"""The airlock's application core: what the web handlers call, and nothing else.

Each public method is one operation: it loads the facts in one database transaction, asks
:mod:`hub.airlock.workflow` whether the actor may do it, changes the rows and appends the audit
entry in that same transaction. Everything returned is plain JSON-able data.

Visibility: a user who is neither a member nor an (independent) checker of a request's project
gets :class:`NotFound`, as for a request that does not exist; a checker does not see a request
before its first submission.

Release is crash-safe: :meth:`Airlock.release` first records the intention (committed), then
writes every approved file to the content-addressed :class:`~hub.airlock.releases.ReleaseStore`
(idempotent), then flips the state to ``released`` in one transaction. A crash in between leaves an
*approved* request with the intention recorded, which :meth:`Airlock.recover` (run by the
constructor) or a second :meth:`Airlock.release` completes. The released bytes are the reviewed
bytes: they are stored at :meth:`Airlock.add_output` time (after CSV formula neutralisation, so the
checkers see exactly what will leave), hashed, and checked against their hash when released and
when downloaded.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Protocol

from sqlalchemy import select

from . import auditlog, workflow as wf
from .db import CommentRow, Database, Output, OutputFile, Request, Review, VoteRow
from .releases import (ReleaseStore, ReleaseStoreError, build_zip, extension, neutralize_csv,
                       sanitize_filename, sha256)
from .workflow import (AirlockError, Forbidden, InvalidInput, NotFound, Role, State,
                       WorkflowError)

__all__ = ["Airlock", "Directory", "AirlockError", "NotFound", "Forbidden", "WorkflowError",
           "InvalidInput", "DEFAULT_EXTENSIONS", "OUTPUT_KINDS"]

OUTPUT_KINDS = ("table", "figure", "model", "file")
DEFAULT_EXTENSIONS = frozenset({".csv", ".txt", ".md", ".png", ".svg", ".pdf", ".json"})
OUTPUT_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")
MANIFEST_FORMAT = "trusted-workspace-release/1"


class Directory(Protocol):
    """Who is who, per project (the hub builds one from :mod:`hub.projects`)."""

    def is_member(self, user: str, project: str) -> bool: ...

    def is_checker(self, user: str, project: str) -> bool: ...

    def checkers_required(self, project: str) -> int: ...


def _text(value, what: str, *, limit: int, required: bool = True) -> str:
    if not isinstance(value, str):
        raise InvalidInput(f"{what} must be text")
    value = value.strip()
    if required and not value:
        raise InvalidInput(f"{what} is required")
    if len(value) > limit:
        raise InvalidInput(f"{what} is too long ({len(value)} characters, at most {limit})")
    if any(not (ch.isprintable() or ch in "\n\t") for ch in value):
        raise InvalidInput(f"{what} contains control characters")
    return value


def _dump(obj, what: str, limit: int) -> str | None:
    if obj is None:
        return None
    try:
        text = auditlog.canonical_json(obj).decode("utf-8")
    except (TypeError, ValueError) as exc:
        raise InvalidInput(f"{what} is not valid JSON data: {exc}") from None
    if len(text) > limit:
        raise InvalidInput(f"{what} is too large ({len(text)} bytes, at most {limit})")
    return text


def _load_json(text: str | None):
    return None if text is None else json.loads(text)


class Airlock:
    """The airlock's core.

    :param db_url: any SQLAlchemy URL (``sqlite:////path/airlock.sqlite``, ``postgresql://…``).
    :param release_dir: the folder of the content-addressed release store.
    :param directory: membership and checker lists, and each project's review policy.
    :param max_file_bytes: the largest file an output may hold (default 10 MiB).
    :param max_files_per_output: how many files one output may hold (default 20).
    :param max_outputs: how many outputs one request may hold (default 50).
    :param allowed_extensions: file types a *free* (unverified) output may hold.
    :param verified_extensions: file types a verified (recomputed) output may hold; default: the
        same as ``allowed_extensions``.
    :param max_json_bytes: the largest spec / evidence / preview / diff (JSON text, default 20 MB).
    :param recover_on_start: run :meth:`recover` in the constructor (default on).
    """

    def __init__(self, db_url: str, release_dir: Path, directory: Directory, *,
                 max_file_bytes: int = 10 * 1024 * 1024, max_files_per_output: int = 20,
                 max_outputs: int = 50,
                 allowed_extensions: Iterable[str] = DEFAULT_EXTENSIONS,
                 verified_extensions: Iterable[str] | None = None,
                 max_json_bytes: int = 20_000_000, recover_on_start: bool = True):
        self.db = Database(db_url)
        self.store = ReleaseStore(release_dir)
        self.directory = directory
        self.max_file_bytes = max_file_bytes
        self.max_files_per_output = max_files_per_output
        self.max_outputs = max_outputs
        self.allowed_extensions = frozenset(e.lower() for e in allowed_extensions)
        self.verified_extensions = (self.allowed_extensions if verified_extensions is None
                                    else frozenset(e.lower() for e in verified_extensions))
        self.max_json_bytes = max_json_bytes
        if recover_on_start:
            self.recover()

    def close(self) -> None:
        self.db.dispose()

    # ------------------------------------------------------------------ helpers
    def _roles(self, actor: str, req: Request) -> frozenset[Role]:
        return wf.roles_for(actor, author=req.author,
                            is_member=bool(self.directory.is_member(actor, req.project)),
                            is_checker=bool(self.directory.is_checker(actor, req.project)))

    def _required(self, project: str) -> int:
        n = int(self.directory.checkers_required(project))
        if n not in (1, 2):
            raise AirlockError(f"project {project}: checkers required must be 1 or 2, not {n}")
        return n

    def _load(self, s, actor: str, request_id) -> tuple[Request, frozenset[Role]]:
        """The request and the actor's roles, or NotFound for anyone who may not see it."""
        try:
            rid = int(request_id)
        except (TypeError, ValueError):
            raise NotFound(f"no release request {request_id!r}") from None
        # Lock the request's row (PostgreSQL; SQLite's write lock is already held) so that two
        # checkers' decisions on one request are serialised.
        req = s.get(Request, rid, with_for_update=True)
        if req is None:
            raise NotFound(f"no release request {rid}")
        roles = self._roles(actor, req)
        if not roles or (roles == {Role.CHECKER}
                         and not wf.checker_may_see(req.state, req.submitted_at is not None)):
            raise NotFound(f"no release request {rid}")
        return req, roles

    def _step(self, req: Request, action: wf.Action, roles) -> State:
        return wf.transition(req.state, action, roles)

    def _output(self, req: Request, name: str) -> Output:
        for o in req.outputs:
            if o.name == name:
                return o
        raise NotFound(f"request {req.id} has no output {name!r}")

    def _submitted(self, req: Request) -> set[str]:
        return {r.checker for r in req.reviews if r.round == req.round}

    def _votes(self, req: Request) -> list[wf.Vote]:
        return [wf.Vote(v.checker, o.name, v.decision, v.round)
                for o in req.outputs for v in o.votes]

    def _touch(self, req: Request, now: str) -> None:
        req.updated_at = now

    def _audit(self, s, actor: str, action: str, req: Request | None, **details) -> dict:
        return self.db.append_audit(s, actor=actor, action=action,
                                    request_id=req.id if req is not None else None,
                                    details=details)

    @staticmethod
    def _files_detail(o: Output) -> list[dict]:
        return [{"output": o.name, "name": f.name, "sha256": f.sha256, "size": f.size}
                for f in o.files]

    # ------------------------------------------------------------------ researcher side
    def create_request(self, actor: str, project: str, title: str) -> dict:
        if not self.directory.is_member(actor, project):
            raise NotFound(f"no project {project!r} of yours")
        title = _text(title, "the title", limit=300)
        now = auditlog.utc_now()
        with self.db.transaction() as s:
            req = Request(project=project, title=title, author=actor, state=State.DRAFT.value,
                          round=1, created_at=now, updated_at=now,
                          checkers_required=self._required(project))
            s.add(req)
            s.flush()
            self._audit(s, actor, "create", req, project=project, title=title)
            return self._request_dict(req, actor, frozenset({Role.AUTHOR, Role.MEMBER}))

    def _prepare_files(self, files: Mapping[str, bytes], verified: bool) -> list[dict]:
        if not isinstance(files, Mapping) or not files:
            raise InvalidInput("an output needs at least one file")
        if len(files) > self.max_files_per_output:
            raise InvalidInput(f"too many files in one output ({len(files)}, at most "
                               f"{self.max_files_per_output})")
        allowed = self.verified_extensions if verified else self.allowed_extensions
        out, names = [], set()
        for original, data in files.items():
            if not isinstance(original, str) or not original:
                raise InvalidInput("every file needs a name")
            if not isinstance(data, (bytes, bytearray, memoryview)):
                raise InvalidInput(f"{original}: the file content must be bytes")
            data = bytes(data)
            name = sanitize_filename(original)
            ext = extension(name)
            if ext not in allowed:
                raise InvalidInput(
                    f"{original}: files of type '{ext or '(none)'}' are not allowed"
                    f"{'' if verified else ' as a free file'}; allowed: "
                    f"{', '.join(sorted(allowed))}")
            if len(data) > self.max_file_bytes:
                raise InvalidInput(f"{original}: too large ({len(data)} bytes, at most "
                                   f"{self.max_file_bytes})")
            if name.lower() in names:
                raise InvalidInput(f"{original}: two files would be named {name!r}")
            names.add(name.lower())
            transforms = []
            if name != original:
                transforms.append("name_sanitised")
            if ext in (".csv", ".tsv"):
                try:
                    data, changed = neutralize_csv(data, "\t" if ext == ".tsv" else ",")
                except ValueError as exc:
                    raise InvalidInput(f"{original}: {exc}") from None
                if changed:
                    transforms.append(f"csv_formulas_neutralised:{changed}")
                if len(data) > self.max_file_bytes:
                    raise InvalidInput(f"{original}: too large after neutralisation")
            out.append({"name": name, "original_name": original[:300], "data": data,
                        "sha256": sha256(data), "size": len(data), "transforms": transforms})
        return out

    def add_output(self, actor: str, request_id: int, *, name: str, kind: str, description: str,
                   justification: str = "", spec: dict | None = None,
                   files: Mapping[str, bytes], evidence: dict | None = None,
                   preview: dict | None = None, verified: bool, diff: dict | None = None) -> dict:
        """Add an output, or replace the output of that name (its votes are deleted).

        ``files`` are the exact bytes that would be released (the trusted side's result for a
        verified output). CSV files are stored formula-neutralised, so what the checkers review is
        what leaves. Returns the output as :meth:`get_request` shows it.
        """
        if not isinstance(name, str) or not OUTPUT_NAME_RE.match(name):
            raise InvalidInput("an output name is 1-100 letters, digits, '.', '_' or '-', "
                               "starting with a letter or digit")
        if kind not in OUTPUT_KINDS:
            raise InvalidInput(f"an output's kind is one of {', '.join(OUTPUT_KINDS)}")
        if not isinstance(verified, bool):
            raise InvalidInput("verified must be true or false")
        description = _text(description, "the description", limit=20000)
        justification = _text(justification, "the justification", limit=20000, required=False)
        jspec = _dump(spec, "the spec", self.max_json_bytes)
        jev = _dump(evidence, "the evidence", self.max_json_bytes)
        jprev = _dump(preview, "the preview", self.max_json_bytes)
        jdiff = _dump(diff, "the diff", self.max_json_bytes)
        prepared = self._prepare_files(files, verified)
        now = auditlog.utc_now()
        with self.db.transaction() as s:
            req, roles = self._load(s, actor, request_id)
            self._step(req, wf.Action.EDIT, roles)
            old = next((o for o in req.outputs if o.name == name), None)
            if old is None and len(req.outputs) >= self.max_outputs:
                raise InvalidInput(f"a request holds at most {self.max_outputs} outputs")
            version, votes_reset = 1, 0
            if old is not None:
                version = old.version + 1
                votes_reset = len(old.votes)
                req.outputs.remove(old)
                s.flush()
            out = Output(name=name, kind=kind, description=description,
                         justification=justification, verified=verified, version=version,
                         spec_json=jspec, evidence_json=jev, preview_json=jprev, diff_json=jdiff,
                         created_at=now)
            for f in prepared:
                self.db.put_blob(s, f["sha256"], f["data"])
                out.files.append(OutputFile(name=f["name"], original_name=f["original_name"],
                                            sha256=f["sha256"], size=f["size"],
                                            transforms_json=json.dumps(f["transforms"])))
            req.outputs.append(out)
            self._touch(req, now)
            s.flush()
            self._audit(s, actor, "add_output", req, output=name, kind=kind, verified=verified,
                        version=version, replaced=old is not None, votes_reset=votes_reset,
                        files=[{"name": f["name"], "sha256": f["sha256"], "size": f["size"],
                                "transforms": f["transforms"]} for f in prepared])
            return self._output_dict(req, out, actor, roles, [], [])

    def remove_output(self, actor: str, request_id: int, name: str) -> None:
        with self.db.transaction() as s:
            req, roles = self._load(s, actor, request_id)
            self._step(req, wf.Action.EDIT, roles)
            out = self._output(req, name)
            req.outputs.remove(out)
            self._touch(req, auditlog.utc_now())
            self._audit(s, actor, "remove_output", req, output=name, version=out.version)

    def submit(self, actor: str, request_id: int) -> dict:
        """Submit a draft, or resubmit a returned request (a new review round)."""
        with self.db.transaction() as s:
            req, roles = self._load(s, actor, request_id)
            action = wf.Action.RESUBMIT if req.state == State.RETURNED else wf.Action.SUBMIT
            new = self._step(req, action, roles)
            wf.check_submit(len(req.outputs))
            now = auditlog.utc_now()
            if action is wf.Action.RESUBMIT:
                req.round += 1
            req.state = new.value
            req.submitted_at = req.submitted_at or now
            req.checkers_required = max(req.checkers_required, self._required(req.project))
            self._touch(req, now)
            self._audit(s, actor, action.value, req, round=req.round,
                        files=[f for o in req.outputs for f in self._files_detail(o)])
            return self._summary(req, actor, roles)

    def withdraw(self, actor: str, request_id: int) -> dict:
        with self.db.transaction() as s:
            req, roles = self._load(s, actor, request_id)
            req.state = self._step(req, wf.Action.WITHDRAW, roles).value
            self._touch(req, auditlog.utc_now())
            self._audit(s, actor, "withdraw", req)
            return self._summary(req, actor, roles)

    # ------------------------------------------------------------------ checker side
    def vote(self, actor: str, request_id: int, output_name: str, decision: str,
             comment: str = "", public: bool = False) -> dict:
        comment = _text(comment, "the comment", limit=20000, required=False)
        with self.db.transaction() as s:
            req, roles = self._load(s, actor, request_id)
            self._step(req, wf.Action.VOTE, roles)
            out = self._output(req, output_name)
            d = wf.check_vote(decision, comment,
                              already_submitted=actor in self._submitted(req))
            now = auditlog.utc_now()
            row = next((v for v in out.votes if v.checker == actor), None)
            if row is None:
                out.votes.append(VoteRow(checker=actor, decision=d.value, round=req.round,
                                         updated_at=now))
            else:
                row.decision, row.round, row.updated_at = d.value, req.round, now
            if comment:
                self._add_comment(req, actor, comment, public=bool(public), output=out,
                                  kind="vote", now=now)
            self._touch(req, now)
            self._audit(s, actor, "vote", req, output=output_name, version=out.version,
                        decision=d.value, round=req.round, commented=bool(comment),
                        files=self._files_detail(out))
            return {"output": output_name, "decision": d.value, "round": req.round}

    def _add_comment(self, req: Request, actor: str, text: str, *, public: bool,
                     output: Output | None, kind: str, now: str, by_checker: bool = True):
        req.comments.append(CommentRow(
            output_name=output.name if output else None,
            output_version=output.version if output else None, author=actor,
            by_checker=by_checker, text=text, public=public, round=req.round, kind=kind,
            created_at=now))

    def comment(self, actor: str, request_id: int, text: str, *, output_name: str | None = None,
                public: bool = False) -> None:
        """A comment by a checker (review states; public or private) or by the author while the
        request is returned (always public)."""
        text = _text(text, "the comment", limit=20000)
        with self.db.transaction() as s:
            req, roles = self._load(s, actor, request_id)
            self._step(req, wf.Action.COMMENT, roles)
            out = self._output(req, output_name) if output_name else None
            by_checker = Role.CHECKER in roles
            now = auditlog.utc_now()
            self._add_comment(req, actor, text, public=bool(public) or not by_checker,
                              output=out, kind="comment", now=now, by_checker=by_checker)
            self._touch(req, now)
            self._audit(s, actor, "comment", req, output=output_name,
                        public=bool(public) or not by_checker)

    def submit_review(self, actor: str, request_id: int) -> dict:
        with self.db.transaction() as s:
            req, roles = self._load(s, actor, request_id)
            self._step(req, wf.Action.SUBMIT_REVIEW, roles)
            submitted = self._submitted(req)
            wf.check_submit_review(actor, [o.name for o in req.outputs], self._votes(req),
                                   already_submitted=actor in submitted)
            now = auditlog.utc_now()
            req.reviews.append(Review(checker=actor, round=req.round, submitted_at=now))
            self._touch(req, now)
            self._audit(s, actor, "submit_review", req, round=req.round,
                        votes={o.name: v.decision for o in req.outputs for v in o.votes
                               if v.checker == actor})
            return self._summary(req, actor, roles)

    def return_request(self, actor: str, request_id: int, comment: str) -> dict:
        comment = _text(comment, "the comment", limit=20000, required=False)
        with self.db.transaction() as s:
            req, roles = self._load(s, actor, request_id)
            new = self._step(req, wf.Action.RETURN, roles)
            wf.check_return(comment)
            now = auditlog.utc_now()
            self._add_comment(req, actor, comment, public=True, output=None, kind="return",
                              now=now)
            req.state = new.value
            self._touch(req, now)
            self._audit(s, actor, "return", req, round=req.round,
                        reviews=sorted(self._submitted(req)))
            return self._summary(req, actor, roles)

    def approve(self, actor: str, request_id: int) -> dict:
        with self.db.transaction() as s:
            req, roles = self._load(s, actor, request_id)
            new = self._step(req, wf.Action.APPROVE, roles)
            required = max(req.checkers_required, self._required(req.project))
            submitted = self._submitted(req)
            wf.check_approve([o.name for o in req.outputs], self._votes(req), submitted, required)
            now = auditlog.utc_now()
            req.state, req.decided_at, req.decided_by = new.value, now, actor
            req.checkers_required = required
            self._touch(req, now)
            self._audit(s, actor, "approve", req, round=req.round, reviews=sorted(submitted),
                        files=[f for o in req.outputs for f in self._files_detail(o)])
            return self._summary(req, actor, roles)

    def reject(self, actor: str, request_id: int, comment: str) -> dict:
        comment = _text(comment, "the comment", limit=20000, required=False)
        with self.db.transaction() as s:
            req, roles = self._load(s, actor, request_id)
            new = self._step(req, wf.Action.REJECT, roles)
            required = max(req.checkers_required, self._required(req.project))
            submitted = self._submitted(req)
            wf.check_reject(submitted, required, comment)
            now = auditlog.utc_now()
            self._add_comment(req, actor, comment, public=True, output=None, kind="reject",
                              now=now)
            req.state, req.decided_at, req.decided_by = new.value, now, actor
            self._touch(req, now)
            self._audit(s, actor, "reject", req, round=req.round, reviews=sorted(submitted))
            return self._summary(req, actor, roles)

    # ------------------------------------------------------------------ release
    def release(self, actor: str, request_id: int) -> dict:
        """Release an approved request (a checker); returns its summary with ``files``.

        Idempotent: releasing a released request again returns the same result.
        """
        with self.db.transaction() as s:
            req, roles = self._load(s, actor, request_id)
            if req.state == State.RELEASED and Role.CHECKER in roles:
                return self._release_result(req, actor, roles)
            self._step(req, wf.Action.RELEASE, roles)
            if req.release_requested_at is None:
                req.release_requested_at = auditlog.utc_now()
                req.release_requested_by = actor
            rid = req.id
        self._write_release_files(rid)
        return self._finish_release(rid)

    def _write_release_files(self, request_id: int) -> None:
        with self.db.transaction() as s:
            req = s.get(Request, request_id)
            shas = sorted({f.sha256 for o in req.outputs for f in o.files})
            for sha in shas:
                data = self.db.get_blob(s, sha)
                if self.store.put(data) != sha:     # pragma: no cover - blob table corrupted
                    raise ReleaseStoreError(f"stored output bytes do not match their hash {sha}")

    def _finish_release(self, request_id: int) -> dict:
        with self.db.transaction() as s:
            req = s.get(Request, request_id)
            actor = req.release_requested_by or "system"
            if req.state == State.RELEASED:
                return self._release_result(req, actor, frozenset({Role.CHECKER}))
            if req.state != State.APPROVED or req.release_requested_at is None:
                raise WorkflowError(f"request {request_id} is {req.state}, not being released")
            files = [f for o in req.outputs for f in self._files_detail(o)]
            for f in files:
                if not self.store.has(f["sha256"]):
                    raise ReleaseStoreError(f"{f['name']} ({f['sha256']}) missing from the store")
            now = auditlog.utc_now()
            req.state, req.released_at, req.released_by = State.RELEASED.value, now, actor
            self._touch(req, now)
            self._audit(s, actor, "release", req, files=files,
                        requested_at=req.release_requested_at)
            return self._release_result(req, actor, frozenset({Role.CHECKER}))

    def _release_result(self, req: Request, actor: str, roles) -> dict:
        d = self._summary(req, actor, roles)
        d["files"] = [f for o in req.outputs for f in self._files_detail(o)]
        return d

    def recover(self) -> list[int]:
        """Complete every release that was started but not finished; the ids completed."""
        with self.db.transaction(readonly=True) as s:
            ids = list(s.scalars(select(Request.id).where(
                Request.state == State.APPROVED.value,
                Request.release_requested_at.is_not(None)).order_by(Request.id)))
        for rid in ids:
            self._write_release_files(rid)
            self._finish_release(rid)
        return ids

    def download(self, actor: str, request_id: int) -> tuple[str, bytes]:
        """``(zip file name, zip bytes)`` of a released request, for members of its project."""
        with self.db.transaction() as s:
            req, roles = self._load(s, actor, request_id)
            if Role.MEMBER not in roles:
                raise Forbidden("only members of the project can download its released files")
            if req.state != State.RELEASED:
                raise WorkflowError(f"the request is {req.state}: only released requests can be "
                                    "downloaded")
            manifest, files = self._manifest(req)
            data = build_zip(manifest, files)
            zip_name = sanitize_filename(f"{req.project}-request-{req.id}-release.zip")
            self._audit(s, actor, "download", req, zip_sha256=sha256(data), zip_size=len(data),
                        files=[f for o in req.outputs for f in self._files_detail(o)])
            return zip_name, data

    def _manifest(self, req: Request) -> tuple[dict, list[tuple[str, bytes]]]:
        outputs, files = [], []
        final = [r for r in req.reviews if r.round == req.round]
        for o in req.outputs:
            folder = sanitize_filename(o.name)
            ev = _load_json(o.evidence_json)
            spec = _load_json(o.spec_json)
            policy = None
            for src in (ev, spec):
                if isinstance(src, dict) and src.get("policy") is not None:
                    policy = src["policy"]
                    break
            rules = sorted({r for c in (ev.get("cells") or []) if isinstance(c, dict)
                            for r in (c.get("rules") or []) if isinstance(r, str)}
                           ) if isinstance(ev, dict) and isinstance(ev.get("cells"), list) else []
            flist = []
            for f in o.files:
                path = f"{folder}/{f.name}"
                files.append((path, self.store.get(f.sha256)))
                flist.append({"name": f.name, "path": path, "sha256": f.sha256, "size": f.size,
                              "transformations": json.loads(f.transforms_json)})
            outputs.append({
                "name": o.name, "kind": o.kind, "verified": o.verified,
                "description": o.description, "justification": o.justification,
                "policy": policy, "rules_applied": rules, "files": flist,
                "decisions": [{"checker": v.checker, "decision": v.decision, "round": v.round}
                              for v in sorted(o.votes, key=lambda v: v.checker)],
            })
        manifest = {
            "format": MANIFEST_FORMAT,
            "request": {"id": req.id, "title": req.title, "project": req.project,
                        "author": req.author, "submitted_at": req.submitted_at,
                        "approved_at": req.decided_at, "approved_by": req.decided_by,
                        "released_at": req.released_at, "released_by": req.released_by},
            "checkers_required": req.checkers_required,
            "reviews": [{"checker": r.checker, "round": r.round, "submitted_at": r.submitted_at}
                        for r in sorted(final, key=lambda r: r.checker)],
            "outputs": outputs,
        }
        return manifest, files

    # ------------------------------------------------------------------ reading
    def list_requests(self, actor: str, *, role: str, states: Iterable[str] | None = None
                      ) -> list[dict]:
        """The requests ``actor`` may see in that role (``researcher`` or ``checker``)."""
        if role not in ("researcher", "checker"):
            raise InvalidInput("role is 'researcher' or 'checker'")
        try:
            wanted = {State(x).value for x in states} if states is not None else None
        except ValueError as exc:
            raise InvalidInput(str(exc)) from None
        with self.db.transaction(readonly=True) as s:
            projects = list(s.scalars(select(Request.project).distinct()))
            if role == "researcher":
                mine = [p for p in projects if self.directory.is_member(actor, p)]
            else:
                mine = [p for p in projects if self.directory.is_checker(actor, p)
                        and not self.directory.is_member(actor, p)]
            if not mine:
                return []
            q = select(Request).where(Request.project.in_(mine)).order_by(Request.id)
            if wanted is not None:
                q = q.where(Request.state.in_(sorted(wanted)))
            out = []
            for req in s.scalars(q):
                roles = self._roles(actor, req)
                if role == "checker":
                    if (Role.CHECKER not in roles
                            or not wf.checker_may_see(req.state, req.submitted_at is not None)):
                        continue
                elif Role.MEMBER not in roles:
                    continue
                out.append(self._summary(req, actor, roles))
            return out

    def get_request(self, actor: str, request_id: int) -> dict:
        """Everything ``actor`` may see of a request (audited as a view)."""
        with self.db.transaction() as s:
            req, roles = self._load(s, actor, request_id)
            self._audit(s, actor, "view", req, state=req.state, round=req.round)
            return self._request_dict(req, actor, roles)

    def file_bytes(self, actor: str, request_id: int, output_name: str, file_name: str) -> bytes:
        """The exact bytes of one output file (as reviewed, as they would be released)."""
        with self.db.transaction() as s:
            req, roles = self._load(s, actor, request_id)
            out = self._output(req, output_name)
            f = next((f for f in out.files if f.name == file_name), None)
            if f is None:
                raise NotFound(f"output {output_name!r} has no file {file_name!r}")
            data = self.db.get_blob(s, f.sha256)
            self._audit(s, actor, "view_file", req, output=output_name, name=f.name,
                        sha256=f.sha256, size=f.size)
            return data

    def audit_entries(self, request_id: int | None = None) -> list[dict]:
        """Audit entries, oldest first (all, or one request's). Gate this in the web layer."""
        with self.db.transaction(readonly=True) as s:
            return self.db.audit_entries(s, request_id)

    def verify_audit(self) -> dict:
        """Verify the whole chain; ``{"ok", "count", "head", "first_broken_index",
        "first_broken_seq", "reason"}``."""
        with self.db.transaction(readonly=True) as s:
            entries = self.db.audit_entries(s)
            _, head = self.db.audit_head(s)
        return auditlog.verify(entries, expected_head=head).to_dict()

    # ------------------------------------------------------------------ views
    def _allowed_actions(self, req: Request, actor: str, roles, submitted: set[str]) -> list[str]:
        """What the actor can do now: state and role, and the review conditions that are known
        (so a page shows only buttons that work)."""
        outputs = [o.name for o in req.outputs]
        guards = {
            wf.Action.SUBMIT: lambda: wf.check_submit(len(outputs)),
            wf.Action.RESUBMIT: lambda: wf.check_submit(len(outputs)),
            wf.Action.VOTE: lambda: wf.check_vote("approve", "",
                                                  already_submitted=actor in submitted),
            wf.Action.SUBMIT_REVIEW: lambda: wf.check_submit_review(
                actor, outputs, self._votes(req), already_submitted=actor in submitted),
            wf.Action.APPROVE: lambda: wf.check_approve(outputs, self._votes(req), submitted,
                                                        req.checkers_required),
            wf.Action.REJECT: lambda: wf.check_reject(submitted, req.checkers_required, "-"),
        }
        out = []
        for a in wf.Action:
            if not wf.allowed(req.state, a, roles):
                continue
            try:
                guards.get(a, lambda: None)()
            except WorkflowError:
                continue
            out.append(a.value)
        return sorted(out)

    def _summary(self, req: Request, actor: str, roles) -> dict:
        submitted = self._submitted(req)
        d = {
            "id": req.id, "project": req.project, "title": req.title, "author": req.author,
            "state": req.state, "round": req.round, "created_at": req.created_at,
            "updated_at": req.updated_at, "submitted_at": req.submitted_at,
            "decided_at": req.decided_at, "released_at": req.released_at,
            "n_outputs": len(req.outputs), "checkers_required": req.checkers_required,
            "reviews_submitted": len(submitted), "roles": sorted(r.value for r in roles),
            "actions": self._allowed_actions(req, actor, roles, submitted),
        }
        if Role.CHECKER in roles:
            d["my_review_submitted"] = actor in submitted
        return d

    def _request_dict(self, req: Request, actor: str, roles) -> dict:
        submitted = self._submitted(req)
        required = req.checkers_required
        votes = self._votes(req)
        seen_votes = wf.visible_votes(actor, roles, req.state, votes, submitted, required,
                                      req.round)
        pairs = [(wf.Comment(c.author, c.text, c.public, c.round, c.output_name, c.by_checker), c)
                 for c in req.comments]
        seen_ids = {id(c) for c in wf.visible_comments(actor, roles, req.state,
                                                        [p[0] for p in pairs], submitted,
                                                        required, req.round)}
        seen_comments = [{"id": row.id, "author": row.author, "text": row.text,
                          "public": row.public, "round": row.round, "kind": row.kind,
                          "output": row.output_name, "output_version": row.output_version,
                          "by_checker": row.by_checker, "created_at": row.created_at}
                         for c, row in pairs if id(c) in seen_ids]
        status = wf.visible_status(roles, req.state, [o.name for o in req.outputs], votes,
                                   submitted, required)
        d = self._summary(req, actor, roles)
        d["outputs"] = [self._output_dict(req, o, actor, roles, seen_votes, seen_comments,
                                          status) for o in req.outputs]
        d["comments"] = [c for c in seen_comments if c["output"] is None]
        return d

    def _output_dict(self, req: Request, o: Output, actor: str, roles, seen_votes,
                     seen_comments, status=None) -> dict:
        return {
            "name": o.name, "kind": o.kind, "description": o.description,
            "justification": o.justification, "verified": o.verified, "version": o.version,
            "created_at": o.created_at,
            "spec": _load_json(o.spec_json), "evidence": _load_json(o.evidence_json),
            "preview": _load_json(o.preview_json), "diff": _load_json(o.diff_json),
            "files": [{"name": f.name, "original_name": f.original_name, "sha256": f.sha256,
                       "size": f.size, "transformations": json.loads(f.transforms_json)}
                      for f in o.files],
            "status": status[o.name].value if status else None,
            "votes": [{"checker": v.checker, "decision": v.decision.value, "round": v.round,
                       "mine": v.checker == actor}
                      for v in seen_votes if v.output == o.name],
            "comments": [c for c in seen_comments if c["output"] == o.name],
        }
