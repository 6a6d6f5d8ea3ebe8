"""``ingest add``: one source file to a new, immutable, pseudonymised dataset version.

Order of work, all inside polars' engine:

1. open the source (format checked by content) and the spec; compare columns;
2. idempotence: a fingerprint of the source bytes, the spec, the key id and the objection
   register; an existing version with the same fingerprint is returned, nothing is written;
3. a validation pass computes, for every check of every column, the number of bad values and the
   first bad row -- a bad value stops the run (unless the column says ``on_invalid = "null"``);
4. the main pass parses, normalises and checks identifiers (BSN 11-test), removes objectors,
   pseudonymises (HMAC-SHA256 in polars-hash's Rust plugin), generalises, and streams the result
   into a staging folder as Parquet with the description in its footer;
5. counts on the written file, ``metadata.json``, then one rename makes the version visible.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import polars as pl

from . import FORMAT_VERSION, __version__
from . import objections as obj
from .errors import IngestError
from .keys import default_key_file, load_key
from .metadata import PSEUDONYM_METHOD, dataset_record, footer, variables
from .rules import (
    STATUS_MISSING,
    bands_expr,
    date_year_expr,
    date_year_month_expr,
    id_valid_expr,
    key_id,
    kind_key,
    link_status_expr,
    normalise_id_expr,
    normalise_postcode_expr,
    postcode4_expr,
    postcode_bad_expr,
    pseudonym_expr,
    topcode_expr,
)
from .sources import Source, delimiter_hint, file_sha256, locate_bad_utf8, locate_ragged, open_source
from .spec import Column, Spec, load_spec
from .store import Store, write_json

LINKAGE_KEYS = "_linkage/keys.parquet"


class Reporter:
    """Progress hooks; the command line shows them as progress bars. Default: silent."""

    def stage(self, text: str, total: int | None = None):  # noqa: ARG002
        return _null_stage()

    def info(self, text: str) -> None:  # noqa: ARG002
        pass


@contextmanager
def _null_stage():
    yield lambda n=1: None


@dataclass
class AddResult:
    dataset: str
    version: str
    reused: bool
    rows_in: int = 0
    rows_out: int = 0
    units: int | None = None
    objectors_removed: int = 0
    status: dict[str, dict[str, int]] = field(default_factory=dict)
    dropped_unnamed: list[str] = field(default_factory=list)
    dropped: list[str] = field(default_factory=list)
    nulled: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0
    path: Path | None = None

    @property
    def rows_per_second(self) -> float:
        return self.rows_in / self.seconds if self.seconds else 0.0


# --- column expressions ------------------------------------------------------------------------


@dataclass
class Check:
    column: str
    bad: pl.Expr
    value: pl.Expr
    message: str  # "{value}" is filled in
    on_invalid: str = "error"


def _parse(c: Column, dtype: pl.DataType, decimal_comma: bool) -> tuple[pl.Expr, pl.Expr | None]:
    """The typed value of a source column, and an expression that is true where parsing failed."""
    s = pl.col(c.source)
    t = c.type
    if t is None:
        return s, None
    is_text = dtype == pl.String or dtype == pl.Categorical
    if is_text:
        s = s.cast(pl.String).str.strip_chars()
        s = pl.when(s.str.len_bytes() > 0).then(s)
    if t == "str":
        if is_text:
            return s, None
        if dtype.is_float():  # SPSS stores codes as doubles: 1.0 -> "1"
            return pl.when(s == s.round(0)).then(s.cast(pl.Int64, strict=False).cast(pl.String)).otherwise(s.cast(pl.String)), None
        return s.cast(pl.String), None
    if t == "int":
        if is_text:
            v = s.cast(pl.Int64, strict=False)
            return v, s.is_not_null() & v.is_null()
        if dtype.is_integer():
            return s.cast(pl.Int64), None
        if dtype.is_float():
            v = s.cast(pl.Int64, strict=False)
            return v, s.is_not_null() & (v.is_null() | (s != s.round(0)))
    if t == "float":
        if is_text:
            txt = s.str.replace(",", ".", literal=True) if decimal_comma else s
            v = txt.cast(pl.Float64, strict=False)
            return v, s.is_not_null() & v.is_null()
        if dtype.is_numeric():
            return s.cast(pl.Float64), None
    if t == "date":
        if is_text:
            v = s.str.strptime(pl.Date, c.format or "%Y-%m-%d", strict=False)
            return v, s.is_not_null() & v.is_null()
        if dtype == pl.Date:
            return s, None
        if isinstance(dtype, pl.Datetime):
            return s.cast(pl.Date), None
    raise IngestError(f"cannot read a {dtype} column as type '{t}'", column=c.source)


def _type_message(c: Column) -> str:
    if c.type == "date":
        return f"'{{value}}' is not a date in the format {c.format or '%Y-%m-%d'}"
    return f"'{{value}}' is not {'an' if c.type == 'int' else 'a'} {c.type}" + (
        " number" if c.type in ("int", "float") else "")


def column_checks(c: Column, value: pl.Expr, parse_bad: pl.Expr | None) -> list[Check]:
    """Validation rules of one column, as vectorised 'bad value' masks."""
    raw = pl.col(c.source).cast(pl.String)
    checks: list[Check] = []
    if parse_bad is not None:
        checks.append(Check(c.source, parse_bad, raw, _type_message(c), c.on_invalid))
    if c.required:
        checks.append(Check(c.source, value.is_null(), raw, "is empty, but the spec says required = true"))
    if c.codes:
        text = value.cast(pl.String)
        shown = ", ".join(c.codes[:12]) + (", ..." if len(c.codes) > 12 else "")
        checks.append(Check(c.source, text.is_not_null() & ~text.is_in(list(c.codes)), raw,
                            f"'{{value}}' is not one of the allowed codes ({shown})", c.on_invalid))
    if c.min is not None:
        lo = _bound(c.min, c.type)
        checks.append(Check(c.source, (value < lo).fill_null(False), raw,
                            f"{{value}} is below the minimum {c.min}", c.on_invalid))
    if c.max is not None:
        hi = _bound(c.max, c.type)
        checks.append(Check(c.source, (value > hi).fill_null(False), raw,
                            f"{{value}} is above the maximum {c.max}", c.on_invalid))
    if c.to == "pc4" or c.link == "postcode":
        checks.append(Check(c.source, postcode_bad_expr(value), raw,
                            "'{value}' is not a 6-character postcode like 1234AB", c.on_invalid))
    return checks


def _bound(b, typ):
    if typ == "date":
        return pl.lit(b if not isinstance(b, str) else datetime.strptime(b, "%Y-%m-%d").date())
    return pl.lit(b)


def generalise(c: Column, value: pl.Expr) -> pl.Expr:
    if c.to == "year":
        return date_year_expr(value)
    if c.to == "year-month":
        return date_year_month_expr(value)
    if c.to == "pc4":
        return postcode4_expr(value)
    if c.to == "bands":
        return bands_expr(value, c.bands or ())
    if c.to == "topcode":
        return topcode_expr(value, c.top, c.bottom)
    raise AssertionError(c.to)


# --- the pipeline --------------------------------------------------------------------------------


def fingerprint(spec: Spec, source_sha: str, kid: str, objections_digest: str) -> str:
    import hashlib

    parts = [FORMAT_VERSION, spec.digest(), source_sha, kid, objections_digest]
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()


def add(source: str | Path, spec: str | Path | Spec, store: str | Path | Store,
        key_file: str | Path | None = None, objections: str | Path | None = None,
        reporter: Reporter | None = None, compression: str = "lz4") -> AddResult:
    """Ingest ``source`` as a new version of the spec's dataset (or find the identical one)."""
    t0 = time.perf_counter()
    rep = reporter or Reporter()
    spec = spec if isinstance(spec, Spec) else load_spec(spec)
    store = store if isinstance(store, Store) else Store(store)
    key_file = Path(key_file) if key_file else default_key_file(store.root)
    master = load_key(key_file, store.root)
    kid = key_id(master)
    source = Path(source)
    store.ensure()

    with store.staging(spec.dataset + "-work") as work, store.staging(spec.dataset) as stage:
        src = open_source(source, spec, work)
        _check_columns(src, spec)
        unnamed = [c for c in src.columns if c not in {col.source for col in spec.columns}]
        schema = src.lf.collect_schema()

        # Objections: the register, plus a new list given now (registered once the run succeeds).
        kind = spec.unit_id_kind
        new_obj = None
        objectors = obj.registered(store, kind) if kind else pl.Series("pseudonym", [], pl.String)
        if objections is not None:
            if not kind:
                raise IngestError("an objection list needs a dataset with a unit_id", file=str(objections))
            new_obj = obj.read_objection_file(objections, kind, master)
            objectors = pl.concat([objectors, new_obj["pseudonym"]]).unique()

        with rep.stage("fingerprinting the source"):
            source_sha = file_sha256(source)
        fp = fingerprint(spec, source_sha, kid, obj.digest(objectors))
        existing = store.find_fingerprint(spec.dataset, fp)
        if existing:
            if new_obj is not None:
                obj.register(store, kind, new_obj)
            md = store.metadata(spec.dataset, existing)
            return AddResult(spec.dataset, existing, reused=True, rows_in=md.get("provenance", {}).get("rows_in", 0),
                             rows_out=md.get("number_of_records", 0), units=md.get("number_of_units"),
                             seconds=time.perf_counter() - t0, dropped_unnamed=unnamed,
                             path=store.version_dir(spec.dataset, existing))

        # Typed values and checks.
        values: dict[str, pl.Expr] = {}
        checks: list[Check] = []
        for c in spec.columns:
            if c.action == "drop" and not c.link:
                continue
            v, bad = _parse(c, schema[c.source], spec.decimal_comma)
            if c.action in ("keep", "generalise") or c.link:
                cs = column_checks(c, v, bad)
            else:  # pseudonymised identifiers are checked by their kind; emptied ones not at all
                cs = []
            checks += cs
            for ch in cs:
                if ch.on_invalid == "null":
                    v = pl.when(ch.bad).then(None).otherwise(v)
            values[c.source] = v

        with rep.stage(f"validating {src.n_rows or ''} rows".replace("  ", " ")):
            n_rows, nulled, temporal = _validate(src, spec, checks, values)

        # The main pass.
        lf = src.lf
        need_rid = bool(spec.link_columns and spec.unit_id)
        if need_rid:
            lf = lf.with_row_index("_rid")
        tmp = {}
        for c in spec.columns:
            if c.source in values:
                tmp[c.source] = f"__v_{len(tmp)}"
        lf = lf.with_columns([values[s].alias(n) for s, n in tmp.items()])
        out: list[pl.Expr] = []
        unit_h = None
        for c in spec.columns:
            if c.action == "drop":
                continue
            v = pl.col(tmp[c.source])
            if c.action == "pseudonymise":
                n = normalise_id_expr(v, c.kind)
                lf = lf.with_columns(n.alias(f"__n_{c.name}"))
                n = pl.col(f"__n_{c.name}")
                lf = lf.with_columns(id_valid_expr(n, c.kind).alias(f"__ok_{c.name}"),
                                     pseudonym_expr(n, kind_key(master, c.kind)).alias(f"__h_{c.name}"))
                ok, h = pl.col(f"__ok_{c.name}"), pl.col(f"__h_{c.name}")
                if c.name == spec.unit_id:
                    unit_h = h
                out += [pl.when(ok).then(h).alias(c.name), link_status_expr(n, ok).alias(c.status_column)]
            elif c.action == "generalise":
                out.append(generalise(c, v).alias(c.name))
            elif c.action == "empty":
                out.append(pl.lit(None, dtype=pl.String).alias(c.name))
            else:
                out.append(v.alias(c.name))
        if spec.unit_id_created:
            out = [pl.lit(None, dtype=pl.String).alias(spec.unit_id),
                   pl.lit(STATUS_MISSING).alias(f"{spec.unit_id}_status")] + out
        if unit_h is not None and objectors.len():
            lf = lf.filter(~unit_h.is_in(objectors.implode()).fill_null(False))  # no id: not an objector
        if need_rid:
            out.append(pl.col("_rid").cast(pl.Int64))
        data = lf.select(out)
        out_schema = dict(data.collect_schema())

        vars_ = variables(spec, out_schema, src.labels, src.value_labels)
        provenance = {
            "source_file": source.name, "source_format": src.format, "source_sha256": source_sha,
            "spec_file": Path(spec.path).name, "spec_sha256": spec.digest(), "spec": spec.raw,
            "key_id": kid, "pseudonymisation": PSEUDONYM_METHOD,
            "objection_register_sha256": obj.digest(objectors), "fingerprint": fp,
            "software": f"data_ingest {__version__} (format {FORMAT_VERSION}), polars {pl.__version__}",
        }
        deid = {
            "profile": "keep / drop / empty / pseudonymise / generalise per column; columns not named "
                       "in the spec are removed",
            "columns": {c.source: c.action for c in spec.columns},
            "removed_unnamed_columns": unnamed,
        }
        with store.claim_version(spec.dataset) as (version, target):
            static = dataset_record(spec, version, vars_, provenance, deidentification=deid)
            with rep.stage(f"checking ids, pseudonymising, generalising, writing {n_rows:,} rows"):
                _sink(data, stage / "part-0.parquet", compression, footer(static), src)
            if need_rid:
                with rep.stage("writing linkage keys"):
                    _write_link_keys(lf, spec, tmp, stage)
            with rep.stage("counting"):
                stats = _stats(stage / "part-0.parquet", spec)
            rows_out = stats["number_of_records"]
            provenance.update(rows_in=n_rows, objector_records_removed=n_rows - rows_out,
                              values_set_to_null=nulled,
                              created=datetime.now(UTC).isoformat(timespec="seconds"))
            if temporal:
                stats["temporal_coverage"] = temporal
            md = dataset_record(spec, version, vars_, provenance, stats=stats, deidentification=deid)
            write_json(stage / "metadata.json", md)
            store.commit_version(stage, target)
        if new_obj is not None:
            obj.register(store, kind, new_obj)

    return AddResult(spec.dataset, version, reused=False, rows_in=n_rows, rows_out=rows_out,
                     units=stats.get("number_of_units"), objectors_removed=n_rows - rows_out,
                     status=stats.get("link_status", {}), dropped_unnamed=unnamed,
                     dropped=[c.source for c in spec.columns if c.action == "drop"], nulled=nulled,
                     seconds=time.perf_counter() - t0, path=store.version_dir(spec.dataset, version))


def _check_columns(src: Source, spec: Spec) -> None:
    missing = [c.source for c in spec.columns if c.source not in src.columns]
    if missing:
        have = ", ".join(src.columns[:20]) + (", ..." if len(src.columns) > 20 else "")
        hint = delimiter_hint(src.columns, src.delimiter) if src.format == "csv" else ""
        raise IngestError(f"missing column(s) named in the spec: {', '.join(missing)}; the file has: {have}{hint}",
                          file=str(src.path), column=missing[0])


def _collect(lf: pl.LazyFrame, src: Source) -> pl.DataFrame:
    try:
        return lf.collect(engine="streaming")
    except pl.exceptions.ComputeError as e:
        raise _read_error(e, src) from None


def _read_error(e: Exception, src: Source) -> IngestError:
    text = str(e)
    if src.format == "csv":
        if "utf-8" in text.lower() or "utf8" in text.lower():
            return locate_bad_utf8(src.tmp_files[0] if src.tmp_files else src.path, src.delimiter)
        if "more fields" in text:
            err = locate_ragged(src.path, src.delimiter)
            if err:
                return err
    first = text.strip().splitlines()[0] if text.strip() else type(e).__name__
    return IngestError(f"cannot read the file: {first}", file=str(src.path))


def _validate(src: Source, spec: Spec, checks: list[Check], values: dict[str, pl.Expr]):
    """Run every check in one pass; raise on the first failing check (in file order)."""
    aggs = [pl.len().alias("__n")]
    for i, ch in enumerate(checks):
        bad = ch.bad.fill_null(False)
        aggs += [bad.sum().alias(f"n{i}"), bad.arg_max().alias(f"r{i}"),
                 ch.value.filter(bad).first().cast(pl.String).alias(f"v{i}")]
    temporal_col = spec.temporal
    if temporal_col:
        aggs += [values[temporal_col].min().alias("__tmin"), values[temporal_col].max().alias("__tmax")]
    res = _collect(src.lf.select(aggs), src).row(0, named=True)
    n = res["__n"]
    if n == 0:
        raise IngestError("the file has no data rows", file=str(src.path))
    errors = [(res[f"r{i}"], i) for i, ch in enumerate(checks) if ch.on_invalid == "error" and res[f"n{i}"]]
    if errors:
        row, i = min(errors)
        ch = checks[i]
        count = res[f"n{i}"]
        more = f" ({count:,} rows have this problem)" if count > 1 else ""
        raise IngestError(ch.message.replace("{value}", str(res[f"v{i}"])) + more, file=str(src.path),
                          row=row + 1, line=row + 2 if src.format == "csv" else None, column=ch.column)
    nulled: dict[str, int] = {}
    for i, ch in enumerate(checks):
        if ch.on_invalid == "null" and res[f"n{i}"]:
            nulled[ch.column] = nulled.get(ch.column, 0) + res[f"n{i}"]
    temporal = None
    if temporal_col and res["__tmin"] is not None:
        temporal = {"start": str(res["__tmin"]), "end": str(res["__tmax"])}
    return n, nulled, temporal


def _sink(data: pl.LazyFrame, path: Path, compression: str, kv: dict[str, str], src: Source) -> None:
    try:
        data.sink_parquet(path, compression=compression, metadata=kv, statistics=False)
    except pl.exceptions.ComputeError as e:
        raise _read_error(e, src) from None


def _write_link_keys(lf: pl.LazyFrame, spec: Spec, tmp, stage: Path) -> None:
    """The original (ungeneralised) linkage variables, for ``ingest link`` only: never published."""
    cols = [pl.col("_rid").cast(pl.Int64)]
    if spec.unit_id_created:
        cols += [pl.lit(None, dtype=pl.String).alias("pid"), pl.lit(STATUS_MISSING).alias("status")]
    else:
        cols += [pl.when(pl.col(f"__ok_{spec.unit_id}")).then(pl.col(f"__h_{spec.unit_id}")).alias("pid"),
                 link_status_expr(pl.col(f"__n_{spec.unit_id}"), pl.col(f"__ok_{spec.unit_id}")).alias("status")]
    for c in spec.link_columns:
        v = pl.col(tmp[c.source])
        if c.link == "postcode":
            v = normalise_postcode_expr(v)
        elif c.link == "sex":
            v = v.cast(pl.String)
            if c.value_labels:
                v = v.replace_strict(c.value_labels, default=None).str.to_lowercase()
            v = v.str.to_lowercase()
        cols.append(v.alias(c.link))
    (stage / "_linkage").mkdir()
    lf.select(cols).sink_parquet(stage / LINKAGE_KEYS, compression="zstd")


def _stats(path: Path, spec: Spec) -> dict[str, Any]:
    lf = pl.scan_parquet(path)
    aggs = [pl.len().alias("n")]
    status_cols = [n for n in lf.collect_schema().names() if n.endswith("_status")]
    if spec.unit_id:
        aggs.append(pl.col(spec.unit_id).drop_nulls().n_unique().alias("units"))
    res = lf.select(aggs).collect(engine="streaming").row(0, named=True)
    status = {}
    for s in status_cols:
        vc = lf.group_by(s).agg(pl.len()).collect(engine="streaming")
        status[s[: -len("_status")]] = {k: int(v) for k, v in vc.iter_rows()}
    out = {"number_of_records": res["n"], "link_status": status}
    if spec.unit_id:
        out["number_of_units"] = res["units"]
        out["number_of_units_note"] = "distinct valid pseudonyms of the unit id (records without one not counted)"
    return out
