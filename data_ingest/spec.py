"""The ingest spec: what a source is, and what to do with each of its columns.

A spec is a TOML file (see docs/ingest.md and data_ingest/demo_specs/). It is parsed into plain
frozen dataclasses and checked completely before any data is read, so a mistake in the spec is
reported as one line naming the spec file and the column.
"""

from __future__ import annotations

import hashlib
import json
import re
import tomllib
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .errors import IngestError
from .rules import ID_KINDS

ACTIONS = ("keep", "drop", "pseudonymise", "generalise", "empty")
TYPES = ("str", "int", "float", "date")
GENERALISATIONS = ("year", "year-month", "pc4", "bands", "topcode")
LINK_ROLES = ("birth_date", "sex", "postcode")
FORMATS = ("csv", "parquet", "spss", "stata")
NAME = re.compile(r"^[a-z][a-z0-9_]*$")


@dataclass(frozen=True)
class Column:
    source: str  # the column's name in the source file
    action: str
    name: str  # its name in the dataset
    type: str | None = None
    format: str | None = None  # date format for text dates
    label: str | None = None
    description: str | None = None
    unit: str | None = None
    codes: tuple[str, ...] | None = None
    value_labels: dict[str, str] | None = None
    min: float | None = None
    max: float | None = None
    required: bool = False
    on_invalid: str = "error"  # or "null": invalid values become null and are counted
    kind: str | None = None  # identifier kind, for pseudonymise
    to: str | None = None  # generalisation
    bands: tuple[float, ...] | None = None
    top: float | None = None
    bottom: float | None = None
    link: str | None = None  # keep the original value as a linkage key under this role

    @property
    def status_column(self) -> str:
        return f"{self.name}_status"


@dataclass(frozen=True)
class Spec:
    path: str
    dataset: str
    title: str
    description: str
    publisher: str
    unit: str
    unit_id: str | None
    unit_id_kind: str | None
    columns: tuple[Column, ...]
    format: str | None = None
    delimiter: str = ","
    encoding: str = "utf-8"
    decimal_comma: bool = False
    keywords: tuple[str, ...] = ()
    health_category: str | None = None
    spatial: str | None = None
    temporal: str | None = None  # source column giving the temporal coverage
    spine: bool = False
    raw: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    @property
    def kept(self) -> list[Column]:
        return [c for c in self.columns if c.action != "drop"]

    @property
    def link_columns(self) -> list[Column]:
        return [c for c in self.columns if c.link]

    @property
    def unit_id_created(self) -> bool:
        """True when the source has no unit identifier and the column is made empty (status
        ``missing``) for ``ingest link`` to fill in probabilistically."""
        return self.unit_id is not None and not any(
            c.name == self.unit_id and c.action == "pseudonymise" for c in self.columns
        )

    def digest(self) -> str:
        """A hash of the spec's meaning (not its formatting): part of the idempotence key."""
        canon = json.dumps(self.raw, sort_keys=True, separators=(",", ":"), default=str)
        return hashlib.sha256(canon.encode()).hexdigest()

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d.pop("raw", None)
        return d


def load_spec(path: str | Path) -> Spec:
    path = Path(path)
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise IngestError("spec file not found", file=str(path)) from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise IngestError(f"not a valid TOML spec: {e}", file=str(path)) from None
    return parse_spec(raw, str(path))


def parse_spec(raw: dict[str, Any], path: str = "<spec>") -> Spec:
    def fail(msg: str, column: str | None = None):
        raise IngestError(msg, file=path, column=column)

    ds = raw.get("dataset")
    if not isinstance(ds, dict):
        fail("the spec needs a [dataset] table")
    name = ds.get("name")
    if not isinstance(name, str) or not NAME.match(name):
        fail("[dataset] name must be lowercase letters, digits and _ (starting with a letter)")
    src = raw.get("source", {}) or {}
    fmt = src.get("format")
    if fmt is not None and fmt not in FORMATS:
        fail(f"[source] format must be one of {', '.join(FORMATS)}")
    cols_raw = raw.get("columns")
    if not isinstance(cols_raw, dict) or not cols_raw:
        fail("the spec needs a [columns.<name>] table for each column to keep or drop")

    columns: list[Column] = []
    out_names: set[str] = set()
    for source, c in cols_raw.items():
        if not isinstance(c, dict):
            fail("must be a table with at least 'action'", source)
        unknown = set(c) - {f for f in Column.__dataclass_fields__ if f not in ("source", "name")} - {"as"}
        if unknown:
            fail(f"unknown setting(s): {', '.join(sorted(unknown))}", source)
        action = c.get("action")
        if action not in ACTIONS:
            fail(f"action must be one of {', '.join(ACTIONS)}", source)
        out = c.get("as", source)
        if action != "drop":
            if not NAME.match(out):
                fail(f"output name '{out}' must be lowercase letters, digits and _", source)
            if out in out_names:
                fail(f"two columns would be called '{out}'", source)
            out_names.add(out)
        typ = c.get("type")
        if typ is not None and typ not in TYPES:
            fail(f"type must be one of {', '.join(TYPES)}", source)
        codes = c.get("codes")
        value_labels = None
        if isinstance(codes, dict):
            value_labels = {str(k): str(v) for k, v in codes.items()}
            codes = tuple(value_labels)
        elif isinstance(codes, list):
            codes = tuple(str(x) for x in codes)
        elif codes is not None:
            fail("codes must be a list of allowed values or a table value = label", source)
        on_invalid = c.get("on_invalid", "error")
        if on_invalid not in ("error", "null"):
            fail("on_invalid must be 'error' or 'null'", source)
        kind = c.get("kind")
        if action == "pseudonymise":
            if kind not in ID_KINDS:
                fail(f"pseudonymise needs kind = one of {', '.join(ID_KINDS)}", source)
        elif kind is not None:
            fail("kind is only for action = 'pseudonymise'", source)
        to = c.get("to")
        bands = c.get("bands")
        if action == "generalise":
            if to not in GENERALISATIONS:
                fail(f"generalise needs to = one of {', '.join(GENERALISATIONS)}", source)
            if to in ("year", "year-month"):
                if typ not in (None, "date"):
                    fail(f"to = '{to}' needs a date column", source)
                typ = "date"
            if to == "bands":
                if not (isinstance(bands, list) and bands and all(isinstance(b, (int, float)) for b in bands)
                        and bands == sorted(bands) and len(set(bands)) == len(bands)):
                    fail("to = 'bands' needs bands = [increasing lower bounds]", source)
                typ = typ or "int"
            if to == "topcode":
                if c.get("top") is None and c.get("bottom") is None:
                    fail("to = 'topcode' needs top (and/or bottom)", source)
                typ = typ or "float"
            if to == "pc4":
                typ = "str"
        elif to is not None:
            fail("to is only for action = 'generalise'", source)
        if (c.get("min") is not None or c.get("max") is not None) and typ not in ("int", "float", "date"):
            fail("min/max need type = 'int', 'float' or 'date'", source)
        link = c.get("link")
        if link is not None and link not in LINK_ROLES:
            fail(f"link must be one of {', '.join(LINK_ROLES)}", source)
        if link == "birth_date" and typ not in ("date",):
            fail("link = 'birth_date' needs a date column", source)
        columns.append(Column(
            source=source, action=action, name=out, type=typ,
            format=c.get("format"), label=c.get("label"), description=c.get("description"),
            unit=c.get("unit"), codes=codes, value_labels=value_labels,
            min=c.get("min"), max=c.get("max"), required=bool(c.get("required", False)),
            on_invalid=on_invalid, kind=kind, to=to,
            bands=tuple(float(b) for b in bands) if bands else None,
            top=c.get("top"), bottom=c.get("bottom"), link=link,
        ))

    unit_id = ds.get("unit_id")
    unit_id_kind = ds.get("unit_id_kind")
    pseud = {c.name: c for c in columns if c.action == "pseudonymise"}
    if unit_id is not None:
        if unit_id in pseud:
            unit_id_kind = unit_id_kind or pseud[unit_id].kind
            if unit_id_kind != pseud[unit_id].kind:
                fail(f"unit_id_kind '{unit_id_kind}' differs from the column's kind")
        else:
            if unit_id in out_names:
                fail(f"unit_id '{unit_id}' must be a pseudonymised column (or a new column name)")
            if unit_id_kind not in ID_KINDS:
                fail("unit_id names no pseudonymised column: give unit_id_kind so it can be linked")
            if not NAME.match(unit_id):
                fail("unit_id must be lowercase letters, digits and _")
    temporal = ds.get("temporal")
    if temporal is not None and not any(c.source == temporal and c.type == "date" for c in columns):
        fail(f"temporal = '{temporal}' must name a date column of the spec")
    if ds.get("spine") and not unit_id:
        fail("a spine dataset needs a unit_id")
    delimiter = src.get("delimiter", ",")
    if not isinstance(delimiter, str) or len(delimiter) != 1:
        fail("[source] delimiter must be one character")
    return Spec(
        path=path, dataset=name, title=str(ds.get("title", name)),
        description=str(ds.get("description", "")), publisher=str(ds.get("publisher", "")),
        unit=str(ds.get("unit", "record")), unit_id=unit_id, unit_id_kind=unit_id_kind,
        columns=tuple(columns), format=fmt, delimiter=delimiter,
        encoding=str(src.get("encoding", "utf-8")), decimal_comma=bool(src.get("decimal_comma", False)),
        keywords=tuple(ds.get("keywords", ())), health_category=ds.get("health_category"),
        spatial=ds.get("spatial"), temporal=temporal, spine=bool(ds.get("spine", False)), raw=raw,
    )
