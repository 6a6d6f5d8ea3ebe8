"""The objection register: people who objected to research use of their data.

An objection list is a text or CSV file with one identifier per line (a header line is allowed).
The store keeps only the identifiers' store pseudonyms, per identifier kind, in
``<store>/objections/<kind>.parquet``; ``ingest add`` removes matching records before anything
is written and ``ingest publish`` removes them again (for people who objected later, and for
records linked to them probabilistically).
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import polars as pl

from .errors import IngestError
from .rules import id_valid_expr, kind_key, normalise_id_expr, pseudonym_expr
from .sources import detect_format
from .store import Store


def read_objection_file(path: str | Path, kind: str, master_hex: str) -> pl.DataFrame:
    """The store pseudonyms (column ``pseudonym``) and validity of the identifiers in a list."""
    path = Path(path)
    if detect_format(path, "csv") != "csv":  # pragma: no cover - detect_format raises instead
        raise IngestError("not a text file", file=str(path))
    lines = pl.read_csv(path, has_header=False, infer_schema=False, new_columns=["id"],
                        separator="\x1f", quote_char=None)
    ids = lines.with_columns(pl.col("id").str.split(",").list.first().str.strip_chars())
    if ids.height and not ids["id"][0].replace(" ", "").replace(".", "").isdigit():
        ids = ids.slice(1)  # a header line
    norm = ids.select(normalise_id_expr(pl.col("id"), kind).alias("n")).drop_nulls()
    if norm.height == 0:
        raise IngestError("the objection list holds no identifiers", file=str(path))
    return norm.select(
        pseudonym_expr(pl.col("n"), kind_key(master_hex, kind)).alias("pseudonym"),
        id_valid_expr(pl.col("n"), kind).alias("valid"),
    ).unique("pseudonym", maintain_order=True)


def register_path(store: Store, kind: str) -> Path:
    return store.objections_dir / f"{kind}.parquet"


def registered(store: Store, kind: str) -> pl.Series:
    p = register_path(store, kind)
    if not p.exists():
        return pl.Series("pseudonym", [], dtype=pl.String)
    return pl.read_parquet(p, columns=["pseudonym"])["pseudonym"]


def register(store: Store, kind: str, new: pl.DataFrame) -> int:
    """Add pseudonyms to the register (atomically); returns how many were new."""
    store.objections_dir.mkdir(parents=True, exist_ok=True)
    old = registered(store, kind)
    merged = pl.concat([old, new["pseudonym"]]).unique().sort()
    added = merged.len() - old.len()
    if added:
        p = register_path(store, kind)
        tmp = p.with_name(f".{p.name}.{os.getpid()}.tmp")
        pl.DataFrame({"pseudonym": merged}).write_parquet(tmp)
        os.replace(tmp, p)
    return added


def digest(pseudonyms: pl.Series) -> str:
    """A hash of a set of objector pseudonyms (part of the idempotence key)."""
    h = hashlib.sha256()
    for chunk in pseudonyms.unique().sort().to_list():
        h.update(chunk.encode() + b"\n")
    return h.hexdigest()
