"""The airlock's storage: SQLAlchemy 2 models on any SQLAlchemy URL.

SQLite is the default (a file; WAL journal, foreign keys on, ``synchronous=FULL``, a busy timeout);
PostgreSQL works by URL. Thin on purpose: the rules live in :mod:`hub.airlock.workflow` and
:mod:`hub.airlock.core`.

Transactions: :meth:`Database.transaction` gives one session per operation, committed at the end
or rolled back on any error. Every write transaction takes the audit log's lock first (on SQLite
``BEGIN IMMEDIATE``, the database write lock; on PostgreSQL ``SELECT … FOR UPDATE`` on the single
``audit_head`` row), so audit entries are appended one after another and the hash chain never
forks; the entry is written in the same transaction as the change it records.

Bytes of output files are kept in the database (table ``blobs``, keyed by SHA-256), so an
acknowledged output is exactly as durable as its row; the release store on disk receives them on
release.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import (Boolean, ForeignKey, Integer, LargeBinary, String, Text, UniqueConstraint,
                        create_engine, event, select)
from sqlalchemy.engine import Engine
from sqlalchemy.orm import (DeclarativeBase, Mapped, Session, mapped_column, relationship,
                            sessionmaker)

from . import auditlog


class Base(DeclarativeBase):
    pass


class Request(Base):
    __tablename__ = "requests"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    project: Mapped[str] = mapped_column(String(64), index=True)
    title: Mapped[str] = mapped_column(String(300))
    author: Mapped[str] = mapped_column(String(64), index=True)
    state: Mapped[str] = mapped_column(String(16), index=True)
    round: Mapped[int] = mapped_column(Integer, default=1)
    created_at: Mapped[str] = mapped_column(String(32))
    updated_at: Mapped[str] = mapped_column(String(32))
    submitted_at: Mapped[str | None] = mapped_column(String(32), nullable=True)  # first submission
    decided_at: Mapped[str | None] = mapped_column(String(32), nullable=True)
    decided_by: Mapped[str | None] = mapped_column(String(64), nullable=True)
    release_requested_at: Mapped[str | None] = mapped_column(String(32), nullable=True)
    release_requested_by: Mapped[str | None] = mapped_column(String(64), nullable=True)
    released_at: Mapped[str | None] = mapped_column(String(32), nullable=True)
    released_by: Mapped[str | None] = mapped_column(String(64), nullable=True)
    checkers_required: Mapped[int] = mapped_column(Integer, default=1)

    outputs: Mapped[list[Output]] = relationship(
        back_populates="request", cascade="all, delete-orphan", order_by="Output.name")
    reviews: Mapped[list[Review]] = relationship(
        back_populates="request", cascade="all, delete-orphan", order_by="Review.id")
    comments: Mapped[list[CommentRow]] = relationship(
        back_populates="request", cascade="all, delete-orphan", order_by="CommentRow.id")


class Output(Base):
    __tablename__ = "outputs"
    __table_args__ = (UniqueConstraint("request_id", "name"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    request_id: Mapped[int] = mapped_column(ForeignKey("requests.id", ondelete="CASCADE"),
                                            index=True)
    name: Mapped[str] = mapped_column(String(100))
    kind: Mapped[str] = mapped_column(String(16))
    description: Mapped[str] = mapped_column(Text)
    justification: Mapped[str] = mapped_column(Text, default="")
    verified: Mapped[bool] = mapped_column(Boolean)
    version: Mapped[int] = mapped_column(Integer, default=1)
    spec_json: Mapped[str | None] = mapped_column(Text, nullable=True)
    evidence_json: Mapped[str | None] = mapped_column(Text, nullable=True)
    preview_json: Mapped[str | None] = mapped_column(Text, nullable=True)
    diff_json: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[str] = mapped_column(String(32))

    request: Mapped[Request] = relationship(back_populates="outputs")
    files: Mapped[list[OutputFile]] = relationship(
        back_populates="output", cascade="all, delete-orphan", order_by="OutputFile.name")
    votes: Mapped[list[VoteRow]] = relationship(
        back_populates="output", cascade="all, delete-orphan", order_by="VoteRow.id")


class Blob(Base):
    __tablename__ = "blobs"
    sha256: Mapped[str] = mapped_column(String(64), primary_key=True)
    size: Mapped[int] = mapped_column(Integer)
    data: Mapped[bytes] = mapped_column(LargeBinary)


class OutputFile(Base):
    __tablename__ = "output_files"
    __table_args__ = (UniqueConstraint("output_id", "name"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    output_id: Mapped[int] = mapped_column(ForeignKey("outputs.id", ondelete="CASCADE"),
                                           index=True)
    name: Mapped[str] = mapped_column(String(128))
    original_name: Mapped[str] = mapped_column(String(300))
    sha256: Mapped[str] = mapped_column(ForeignKey("blobs.sha256"))
    size: Mapped[int] = mapped_column(Integer)
    transforms_json: Mapped[str] = mapped_column(Text, default="[]")

    output: Mapped[Output] = relationship(back_populates="files")


class VoteRow(Base):
    __tablename__ = "votes"
    __table_args__ = (UniqueConstraint("output_id", "checker"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    output_id: Mapped[int] = mapped_column(ForeignKey("outputs.id", ondelete="CASCADE"),
                                           index=True)
    checker: Mapped[str] = mapped_column(String(64))
    decision: Mapped[str] = mapped_column(String(16))
    round: Mapped[int] = mapped_column(Integer)
    updated_at: Mapped[str] = mapped_column(String(32))

    output: Mapped[Output] = relationship(back_populates="votes")


class Review(Base):
    """A checker's submitted review of one round."""
    __tablename__ = "reviews"
    __table_args__ = (UniqueConstraint("request_id", "checker", "round"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    request_id: Mapped[int] = mapped_column(ForeignKey("requests.id", ondelete="CASCADE"),
                                            index=True)
    checker: Mapped[str] = mapped_column(String(64))
    round: Mapped[int] = mapped_column(Integer)
    submitted_at: Mapped[str] = mapped_column(String(32))

    request: Mapped[Request] = relationship(back_populates="reviews")


class CommentRow(Base):
    __tablename__ = "comments"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    request_id: Mapped[int] = mapped_column(ForeignKey("requests.id", ondelete="CASCADE"),
                                            index=True)
    output_name: Mapped[str | None] = mapped_column(String(100), nullable=True)
    output_version: Mapped[int | None] = mapped_column(Integer, nullable=True)
    author: Mapped[str] = mapped_column(String(64))
    by_checker: Mapped[bool] = mapped_column(Boolean)
    text: Mapped[str] = mapped_column(Text)
    public: Mapped[bool] = mapped_column(Boolean)
    round: Mapped[int] = mapped_column(Integer)
    kind: Mapped[str] = mapped_column(String(16))  # comment | vote | return | reject
    created_at: Mapped[str] = mapped_column(String(32))

    request: Mapped[Request] = relationship(back_populates="comments")


class AuditEntry(Base):
    __tablename__ = "audit_log"
    seq: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    time: Mapped[str] = mapped_column(String(32))
    actor: Mapped[str] = mapped_column(String(64))
    action: Mapped[str] = mapped_column(String(32))
    request_id: Mapped[int | None] = mapped_column(Integer, nullable=True, index=True)
    details_json: Mapped[str] = mapped_column(Text)
    prev_hash: Mapped[str] = mapped_column(String(64))
    hash: Mapped[str] = mapped_column(String(64))

    def to_dict(self) -> dict:
        return {"seq": self.seq, "time": self.time, "actor": self.actor, "action": self.action,
                "request_id": self.request_id, "details": json.loads(self.details_json),
                "prev_hash": self.prev_hash, "hash": self.hash}


class AuditHead(Base):
    """One row: the last sequence number and hash of the log (the chain's anchor and lock)."""
    __tablename__ = "audit_head"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    seq: Mapped[int] = mapped_column(Integer)
    hash: Mapped[str] = mapped_column(String(64))


# ---------------------------------------------------------------------------- engine

def make_engine(url: str) -> Engine:
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"timeout": 30, "check_same_thread": False})

        @event.listens_for(engine, "connect")
        def _on_connect(dbapi_conn, _record):
            dbapi_conn.isolation_level = None   # let SQLAlchemy's "begin" event emit BEGIN
            cur = dbapi_conn.cursor()
            if ":memory:" not in url and url.rstrip("/") not in ("sqlite:", "sqlite://"):
                cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA synchronous=FULL")
            cur.execute("PRAGMA busy_timeout=30000")
            cur.close()

        @event.listens_for(engine, "begin")
        def _on_begin(conn):
            # Every writing transaction takes the write lock at once: no deadlock on upgrade,
            # and audit appends are serialised. Read-only ones read a WAL snapshot.
            if conn.get_execution_options().get("airlock_readonly"):
                conn.exec_driver_sql("BEGIN")
            else:
                conn.exec_driver_sql("BEGIN IMMEDIATE")
    else:
        engine = create_engine(url, pool_pre_ping=True)
    return engine


class Database:
    def __init__(self, url: str):
        self.url = url
        self.engine = make_engine(url)
        Base.metadata.create_all(self.engine)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)
        self._read_sessions = sessionmaker(
            self.engine.execution_options(airlock_readonly=True), expire_on_commit=False)
        with self.transaction() as s:
            if s.get(AuditHead, 1) is None:
                s.add(AuditHead(id=1, seq=0, hash=auditlog.GENESIS))

    @contextmanager
    def transaction(self, readonly: bool = False) -> Iterator[Session]:
        """One session, one transaction: commit at the end, roll back on any exception.

        ``readonly=True`` is for operations that write nothing (no audit entry either): on SQLite
        they do not take the write lock.
        """
        with (self._read_sessions if readonly else self._sessions)() as s:
            with s.begin():
                yield s

    def dispose(self) -> None:
        self.engine.dispose()

    # ------------------------------------------------------------------ audit
    def append_audit(self, s: Session, *, actor: str, action: str, request_id: int | None,
                     details: dict | None = None) -> dict:
        """Append one entry in the session's transaction (the head row is locked first)."""
        head = s.execute(select(AuditHead).where(AuditHead.id == 1).with_for_update()).scalar_one()
        prev = {"seq": head.seq, "hash": head.hash} if head.seq else None
        e = auditlog.new_entry(prev, actor=actor, action=action, request_id=request_id,
                               details=details)
        s.add(AuditEntry(seq=e["seq"], time=e["time"], actor=e["actor"], action=e["action"],
                         request_id=e["request_id"],
                         details_json=auditlog.canonical_json(e["details"]).decode("utf-8"),
                         prev_hash=e["prev_hash"], hash=e["hash"]))
        head.seq, head.hash = e["seq"], e["hash"]
        return e

    def audit_entries(self, s: Session, request_id: int | None = None) -> list[dict]:
        q = select(AuditEntry).order_by(AuditEntry.seq)
        if request_id is not None:
            q = q.where(AuditEntry.request_id == request_id)
        return [row.to_dict() for row in s.scalars(q)]

    def audit_head(self, s: Session) -> tuple[int, str]:
        head = s.get(AuditHead, 1)
        return head.seq, head.hash

    # ------------------------------------------------------------------ blobs
    def put_blob(self, s: Session, sha: str, data: bytes) -> None:
        if s.get(Blob, sha) is None:
            s.add(Blob(sha256=sha, size=len(data), data=data))

    def get_blob(self, s: Session, sha: str) -> bytes:
        b = s.get(Blob, sha)
        if b is None:
            raise KeyError(sha)
        return b.data
