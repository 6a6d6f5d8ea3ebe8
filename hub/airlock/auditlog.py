"""The airlock's audit log: append-only, hash-chained entries. Pure (a list in, a list out).

An entry is a plain dict::

    {"seq": 7, "time": "2026-07-22T10:11:12.123456Z", "actor": "alice", "action": "submit",
     "request_id": 3, "details": {...}, "prev_hash": "<64 hex>", "hash": "<64 hex>"}

``hash`` is the SHA-256 of the canonical JSON (sorted keys, no spaces, UTF-8) of every other field,
``prev_hash`` included, so each entry seals the whole history before it; the first entry's
``prev_hash`` is 64 zeros. :func:`verify` walks the chain and reports the first broken link: an
edited entry (its hash no longer matches), a removed, inserted or reordered entry (a ``seq`` gap or
a ``prev_hash`` that is not the previous entry's hash).

What a hash chain cannot see on its own: removing entries *at the end*, or rewriting the whole
tail with fresh hashes by someone who can write the database. Pass ``expected_head`` (the last
hash, kept somewhere else: :mod:`hub.airlock.db` keeps it in its own row, an operator may copy it
to a log or a ticket) to detect that too.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import datetime, timezone

GENESIS = "0" * 64

#: The audit vocabulary (after OpenSAFELY airlock's ``AuditEventType``).
ACTIONS = frozenset({
    "create", "add_output", "remove_output", "submit", "resubmit", "withdraw",
    "view", "view_file", "vote", "comment", "submit_review", "return", "approve", "reject",
    "release", "download",
})

HASHED_FIELDS = ("seq", "time", "actor", "action", "request_id", "details", "prev_hash")


def _check_json(obj, where="details"):
    if isinstance(obj, float) and not math.isfinite(obj):
        raise ValueError(f"{where}: non-finite number")
    if isinstance(obj, Mapping):
        for k, v in obj.items():
            if not isinstance(k, str):
                raise ValueError(f"{where}: keys must be strings")
            _check_json(v, f"{where}.{k}")
    elif isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            _check_json(v, f"{where}[{i}]")
    elif not (obj is None or isinstance(obj, (str, int, float, bool))):
        raise ValueError(f"{where}: {type(obj).__name__} is not JSON")


def canonical_json(obj) -> bytes:
    """One byte string per value: sorted keys, no whitespace, UTF-8, NaN refused."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                      allow_nan=False).encode("utf-8")


def entry_hash(entry: Mapping) -> str:
    """The hash an entry must carry: over all its fields but ``hash``."""
    return hashlib.sha256(canonical_json({k: entry.get(k) for k in HASHED_FIELDS})).hexdigest()


def utc_now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def new_entry(prev: Mapping | None, *, actor: str, action: str, request_id: int | None = None,
              details: Mapping | None = None, time: str | None = None) -> dict:
    """The entry that follows ``prev`` (``None`` for the first one), with its hash."""
    if action not in ACTIONS:
        raise ValueError(f"unknown audit action {action!r}")
    if not isinstance(actor, str) or not actor:
        raise ValueError("an audit entry needs an actor")
    details = dict(details or {})
    _check_json(details)
    # Round-trip so the stored form and the hashed form are the same (tuples → lists etc.).
    details = json.loads(canonical_json(details))
    entry = {
        "seq": (prev["seq"] + 1) if prev else 1,
        "time": time or utc_now(),
        "actor": actor,
        "action": action,
        "request_id": request_id,
        "details": details,
        "prev_hash": prev["hash"] if prev else GENESIS,
    }
    entry["hash"] = entry_hash(entry)
    return entry


@dataclass(frozen=True)
class VerifyResult:
    ok: bool
    count: int
    head: str                        # the last good hash (GENESIS for an empty log)
    first_broken_index: int | None = None  # position in the list given to verify()
    first_broken_seq: int | None = None    # that entry's seq (as stored)
    reason: str = ""

    def to_dict(self) -> dict:
        return asdict(self)


def verify(entries: Sequence[Mapping], expected_head: str | None = None) -> VerifyResult:
    """Walk the chain in the given order (stored order: by ``seq``); report the first broken link."""
    prev_hash, prev_seq = GENESIS, 0
    for i, e in enumerate(entries):
        seq = e.get("seq")

        def broken(reason: str) -> VerifyResult:
            return VerifyResult(False, len(entries), prev_hash, i, seq, reason)

        if seq != prev_seq + 1:
            if isinstance(seq, int) and seq > prev_seq + 1:
                return broken(f"entry {i}: seq {seq} follows {prev_seq}: "
                              f"{seq - prev_seq - 1} entr{'y' if seq - prev_seq == 2 else 'ies'} "
                              "removed")
            return broken(f"entry {i}: seq {seq} follows {prev_seq}: entries inserted or reordered")
        if e.get("prev_hash") != prev_hash:
            return broken(f"entry {i} (seq {seq}): prev_hash does not match the hash of the entry "
                          "before it (an entry was removed, inserted or reordered)")
        try:
            h = entry_hash(e)
        except (TypeError, ValueError) as exc:
            return broken(f"entry {i} (seq {seq}): cannot be hashed: {exc}")
        if e.get("hash") != h:
            return broken(f"entry {i} (seq {seq}): content does not match its hash (edited)")
        prev_hash, prev_seq = h, seq
    if expected_head is not None and expected_head != prev_hash:
        return VerifyResult(False, len(entries), prev_hash, len(entries), None,
                            "the last entry is not the recorded head of the log "
                            "(entries removed or rewritten at the end)")
    return VerifyResult(True, len(entries), prev_hash)
