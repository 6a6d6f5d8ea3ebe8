"""``ingest add``: one source file to a new, immutable, pseudonymised dataset version.

Order of work (no Python loop over rows: every step is a polars expression):

1. open the source (format checked by its content) and the spec; compare the columns (missing
   ones stop the run, unnamed ones are dropped and reported);
2. idempotence: a fingerprint of the source bytes, the spec, the key id and the objection
   registers; an existing version with the same fingerprint is returned and nothing is written
   (the source is hashed in a thread while the plan is made and the first slices are computed;
   nothing is written before the fingerprint is checked);
3. claim the next version name, then, slice by slice (about 1 M rows, two slices at a time in
   two threads): parse the spec's types, flag every failing check, normalise and check
   identifiers (BSN 11-test), compute pseudonyms of the valid ones (HMAC-SHA256:
   data_ingest.native, or polars-hash's Rust plugin) and the output columns, all in one streaming
   query; stop at the first bad value of the file (file, row, column), remove objectors, and
   write the slice's part file into the staging folder with the description in its footer;
4. ``metadata.json`` with the counts, then one rename makes the version visible.
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import polars as pl

from . import FORMAT_VERSION, __version__
from . import objections as obj
from .errors import IngestError
from .keys import default_key_file, load_key
from .metadata import PSEUDONYM_METHOD, dataset_record, variables, write_parquet
from .rules import (
    STATUS_MISSING,
    bands_expr,
    bsn_check_expr,
    bsn_number_expr,
    date_year_expr,
    date_year_month_expr,
    id_valid_expr,
    key_id,
    kind_key,
    link_status_expr,
    normalise_id_expr,
    POSTCODE6,
    normalise_postcode_expr,
    postcode4_expr,
    postcode_bad_expr,
    pseudonym_expr,
    topcode_expr,
)
from .sources import Source, delimiter_hint, file_sha256, locate_bad_utf8, locate_ragged, open_source
from .spec import Column, Spec, load_spec
from .store import Store, write_json

LINKAGE_KEYS = "_linkage/keys-*.parquet"


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


def _parse(c: Column, dtype: pl.DataType, decimal_comma: bool,
           text: pl.Expr | None = None) -> tuple[pl.Expr, pl.Expr | None]:
    """The typed value of a source column, and an expression that is true where parsing failed.

    ``text``: the column already as text without surrounding white space and blanks as null
    (:func:`_text`; computed once in an earlier step), for a text column."""
    s = pl.col(c.source)
    t = c.type
    if t is None:
        return s, None
    is_text = dtype == pl.String or dtype == pl.Categorical
    if is_text:
        s = _text(s) if text is None else text
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
            # cache=False: polars' cache of converted values costs more than it saves on dates
            # with many distinct values (birth dates: 2x slower), and gives the same result.
            v = s.str.strptime(pl.Date, c.format or "%Y-%m-%d", strict=False, cache=False)
            return v, s.is_not_null() & v.is_null()
        if dtype == pl.Date:
            return s, None
        if isinstance(dtype, pl.Datetime):
            return s.cast(pl.Date), None
    raise IngestError(f"cannot read a {dtype} column as type '{t}'", column=c.source)


def _text(s: pl.Expr) -> pl.Expr:
    """A text column stripped of surrounding white space; blank becomes null."""
    s = s.cast(pl.String).str.strip_chars()
    return pl.when(s.str.len_bytes() > 0).then(s)


def _type_message(c: Column) -> str:
    if c.type == "date":
        return f"'{{value}}' is not a date in the format {c.format or '%Y-%m-%d'}"
    return f"'{{value}}' is not {'an' if c.type == 'int' else 'a'} {c.type}" + (
        " number" if c.type in ("int", "float") else "")


def column_checks(c: Column, value: pl.Expr, parse_bad: pl.Expr | None,
                  postcode_ok: pl.Expr | None = None) -> list[Check]:
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
        bad = postcode_bad_expr(value) if postcode_ok is None else value.is_not_null() & ~postcode_ok
        checks.append(Check(c.source, bad, raw,
                            "'{value}' is not a 6-character postcode like 1234AB", c.on_invalid))
    return checks


def _bound(b, typ):
    if typ == "date":
        return pl.lit(b if not isinstance(b, str) else datetime.strptime(b, "%Y-%m-%d").date())
    return pl.lit(b)


def generalise(c: Column, value: pl.Expr, postcode_ok: pl.Expr | None = None) -> pl.Expr:
    if c.to == "year":
        return date_year_expr(value)
    if c.to == "year-month":
        return date_year_month_expr(value)
    if c.to == "pc4":
        return postcode4_expr(value) if postcode_ok is None else pl.when(postcode_ok).then(value.str.slice(0, 4))
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


QI_KIND = "qi"
QI_ROLES = {"birth_date", "sex", "postcode"}
SLICE_ROWS = 1_000_000  # rows computed and written per part file (bounds memory, drives progress)
WORKERS = 2  # slices computed and written at the same time (each slice uses all cores too)
EXACT_UNITS_UP_TO = 5_000_000  # above this many records the unit count is a HyperLogLog estimate


def add(source: str | Path, spec: str | Path | Spec, store: str | Path | Store,
        key_file: str | Path | None = None, objections: str | Path | None = None,
        reporter: Reporter | None = None, compression: str = "lz4",
        slice_rows: int = SLICE_ROWS, workers: int = WORKERS) -> AddResult:
    """Ingest ``source`` as a new version of the spec's dataset (or find the identical one).

    ``workers`` slices are computed and written at the same time (1: one after the other; the
    result is the same, byte for byte)."""
    t0 = time.perf_counter()
    rep = reporter or Reporter()
    spec = spec if isinstance(spec, Spec) else load_spec(spec)
    store = store if isinstance(store, Store) else Store(store)
    key_file = Path(key_file) if key_file else default_key_file(store.root)
    master = load_key(key_file, store.root)
    kid = key_id(master)
    source = Path(source)
    store.ensure()

    with ExitStack() as stack:
        work = stack.enter_context(store.staging(spec.dataset + "-work"))
        stage = stack.enter_context(store.staging(spec.dataset))
        # The source's hash (for idempotence) is computed while the source is opened, the plan
        # is made and the first slices are computed; it is needed before anything is written.
        hasher = stack.enter_context(ThreadPoolExecutor(max_workers=1))
        stop_hashing = threading.Event()
        stack.callback(stop_hashing.set)  # an error before the hash is needed does not wait for it
        source_sha = hasher.submit(file_sha256, source, stop_hashing) if source.is_file() else None
        src = open_source(source, spec, work)
        _check_columns(src, spec)
        unnamed = [c for c in src.columns if c not in {col.source for col in spec.columns}]
        if src.format == "csv":  # a CSV cannot be sliced cheaply: read the needed columns once
            with rep.stage("reading the CSV"):
                df = _read_csv(src, spec)
            src.lf, src.n_rows = df.lazy(), df.height
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

        # Records without a usable identifier cannot be matched to an objection by id: they are
        # matched by the objectors' quasi-identifiers (birth date | sex | 6-character postcode).
        # The spine (the population register) registers those of its objectors; the other
        # sources are filtered by them (so the spine's own result never depends on the register).
        has_qi = spec.unit_id is not None and QI_ROLES <= {c.link for c in spec.link_columns}
        qi_register = (obj.registered(store, QI_KIND) if has_qi and not spec.spine
                       else pl.Series("pseudonym", [], pl.String))

        plan = _plan(spec, schema, master)
        out_schema = dict(src.lf.head(0).pipe(plan.compute).select(plan.out).collect_schema())
        vars_ = variables(spec, out_schema, src.labels, src.value_labels)
        slices = _Slices(src, spec, plan, objectors, qi_register, stage, compression, slice_rows, workers, rep)
        stack.callback(slices.close)  # on any way out: no slice left running
        # The slices are computed while the source is hashed, unless this may be a re-run of an
        # input that is in the store already (then the hash decides first, and it is quick).
        source_bytes = source.stat().st_size
        if not _maybe_reused(store, spec, kid, source_bytes):
            slices.start()

        with rep.stage("fingerprinting the source"):
            source_sha = source_sha.result()
        fp = fingerprint(spec, source_sha, kid, obj.digest(objectors) + obj.digest(qi_register))
        existing = store.find_fingerprint(spec.dataset, fp)
        if existing:
            if new_obj is not None:
                obj.register(store, kind, new_obj)
            md = store.metadata(spec.dataset, existing)
            return AddResult(spec.dataset, existing, reused=True, rows_in=md.get("provenance", {}).get("rows_in", 0),
                             rows_out=md.get("number_of_records", 0), units=md.get("number_of_units"),
                             status=md.get("link_status", {}), seconds=time.perf_counter() - t0,
                             dropped_unnamed=unnamed, path=store.version_dir(spec.dataset, existing))

        provenance = {
            "source_file": source.name, "source_format": src.format, "source_sha256": source_sha,
            "source_bytes": source_bytes,
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
            acc = slices.run(static)
            rows_out = acc.records
            stats: dict[str, Any] = {"number_of_records": rows_out, "link_status": acc.status(spec)}
            if spec.unit_id:
                units, approx = acc.units()
                stats["number_of_units"] = units
                stats["number_of_units_note"] = ("distinct valid pseudonyms of the unit id (records without one "
                                                 "are not counted)" + ("; a HyperLogLog estimate" if approx else ""))
            provenance.update(rows_in=acc.rows, objector_records_removed=acc.rows - rows_out,
                              objector_records_removed_by_quasi_identifiers=acc.removed_qi,
                              values_set_to_null=acc.nulled(),
                              created=datetime.now(UTC).isoformat(timespec="seconds"))
            if acc.tmin is not None:
                stats["temporal_coverage"] = {"start": str(acc.tmin), "end": str(acc.tmax)}
            md = dataset_record(spec, version, vars_, provenance, stats=stats, deidentification=deid)
            write_json(stage / "metadata.json", md)
            store.commit_version(stage, target)
        if new_obj is not None:
            obj.register(store, kind, new_obj)
        if acc.objector_qi:
            obj.register(store, QI_KIND, pl.DataFrame({"pseudonym": pl.concat(acc.objector_qi)}))

    return AddResult(spec.dataset, version, reused=False, rows_in=acc.rows, rows_out=rows_out,
                     units=stats.get("number_of_units"), objectors_removed=acc.rows - rows_out,
                     status=stats["link_status"], dropped_unnamed=unnamed,
                     dropped=[c.source for c in spec.columns if c.action == "drop"], nulled=acc.nulled(),
                     seconds=time.perf_counter() - t0, path=store.version_dir(spec.dataset, version))


@dataclass
class Plan:
    """What to compute from a slice of the source: typed values, identifier columns (normalised,
    valid, pseudonym), one boolean column per check, and the output and linkage-key columns.

    Everything, the output columns included, is computed by the engine in one query per slice
    (both cores); the slice keeps only the columns used afterwards (checks, counts, objection
    matching, output), so what is left in Python is counting, filtering and selecting."""

    spec: Spec
    steps: list[list[pl.Expr]]  # successive with_columns
    checks: list[Check]
    out: list[pl.Expr]  # selects the output columns from a computed slice
    link_keys: list[pl.Expr]  # selects the linkage keys from a computed slice
    unit_h: str | None
    unit_ok: str | None
    unit_key: str | None  # column: the unit id's distinct-able value where valid, else null
    qi: str | None  # pseudonym of the quasi-identifiers (objection matching without an id)
    pseudonymised: list[Column]
    temporal: str | None
    needed: list[str]
    keep: list[str]  # columns of a computed slice

    def compute(self, lf: pl.LazyFrame, offset: int = 0) -> pl.LazyFrame:
        lf = lf.select(self.needed)
        if self.link_keys:  # a stable record id (row in the source) for linkage
            lf = lf.with_columns(pl.int_range(offset, offset + pl.len(), dtype=pl.Int64).alias("_rid"))
        for step in self.steps:
            lf = lf.with_columns(step)
        return lf.select(self.keep)


def _plan(spec: Spec, schema, master: str) -> Plan:
    """Steps: typed values -> postcode flags -> one 'bad' flag per check -> invalid values to null
    (where asked) -> normalised identifiers -> validity and pseudonyms. Each step reads the
    previous steps' columns, so nothing is computed twice."""
    first: list[pl.Expr] = []  # postcodes already in their normal form (most are)
    texts: list[pl.Expr] = []  # text columns stripped once, read by the parsing and the checks
    values: list[pl.Expr] = []
    pc_flags: list[pl.Expr] = []
    checks: list[Check] = []
    tmp: dict[str, str] = {}
    pc_ok: dict[str, pl.Expr] = {}
    for c in spec.columns:
        if c.action == "drop" and not c.link:
            continue
        name = tmp[c.source] = f"__v_{len(tmp)}"
        dtype = schema[c.source]
        is_text = dtype == pl.String or dtype == pl.Categorical
        postcode = c.to == "pc4" or c.link == "postcode"
        if postcode and is_text and c.type in (None, "str"):
            # A value that already is a 6-character postcode is its own stripped, upper-cased,
            # space-free form: only the other values are normalised (and checked again).
            raw = pl.col(c.source).cast(pl.String)
            first.append(raw.str.contains(POSTCODE6).fill_null(False).alias(f"__pcf_{name}"))
            fast = pl.col(f"__pcf_{name}")
            rest = pl.when(~fast).then(raw)
            v = pl.when(fast).then(raw).otherwise(
                normalise_postcode_expr(_text(rest) if c.type == "str" else rest, sparse=True))
            pc_flags.append((fast | pl.when(~fast).then(pl.col(name)).str.contains(POSTCODE6)).fill_null(False)
                            .alias(f"__pc_{name}"))
            pc_ok[c.source] = pl.col(f"__pc_{name}")
            parse_bad = None
        else:
            text = None
            if c.type is not None and is_text:
                texts.append(_text(pl.col(c.source)).alias(f"__s_{name}"))
                text = pl.col(f"__s_{name}")
            v, parse_bad = _parse(c, dtype, spec.decimal_comma, text)
            if postcode:
                v = normalise_postcode_expr(v)
                pc_flags.append(pl.col(name).str.contains(POSTCODE6).fill_null(False).alias(f"__pc_{name}"))
                pc_ok[c.source] = pl.col(f"__pc_{name}")
        values.append(v.alias(name))
        if c.action in ("keep", "generalise") or c.link:
            checks += column_checks(c, pl.col(name), parse_bad, pc_ok.get(c.source))
    steps = [step for step in (first, texts, values) if step]
    if pc_flags:
        steps.append(pc_flags)
    if checks:
        steps.append([ch.bad.fill_null(False).alias(f"__bad_{i}") for i, ch in enumerate(checks)])
    nulling = {}
    for i, ch in enumerate(checks):
        if ch.on_invalid == "null":
            name = tmp[ch.column]
            cond = nulling.get(name)
            nulling[name] = pl.col(f"__bad_{i}") if cond is None else cond | pl.col(f"__bad_{i}")
    if nulling:
        steps.append([pl.when(cond).then(None).otherwise(pl.col(name)).alias(name) for name, cond in nulling.items()])
    text, norm, nums, ids, hashes = [], [], [], [], []
    out: list[pl.Expr] = []
    unit_h = unit_ok = unit_key = None
    pseud = []
    counted: list[str] = []
    for c in spec.columns:
        if c.action == "drop":
            continue
        v = pl.col(tmp[c.source])
        if c.action == "pseudonymise":
            pseud.append(c)
            # Strip once, normalise, then (BSN) the number once: the 11-test, the unit count
            # and nothing else read it. Only valid identifiers are hashed.
            text.append(v.cast(pl.String).str.strip_chars().alias(f"__t_{c.name}"))
            norm.append(normalise_id_expr(pl.col(f"__t_{c.name}"), c.kind, stripped=True).alias(f"__n_{c.name}"))
            n = pl.col(f"__n_{c.name}")
            if c.kind == "bsn":
                nums.append(bsn_number_expr(n).alias(f"__x_{c.name}"))
                ok_expr = bsn_check_expr(pl.col(f"__x_{c.name}"))
            else:
                ok_expr = id_valid_expr(n, c.kind)
            ids.append(ok_expr.alias(f"__ok_{c.name}"))
            ok = pl.col(f"__ok_{c.name}")
            hashes += [pseudonym_expr(pl.when(ok).then(n), kind_key(master, c.kind)).alias(f"__h_{c.name}"),
                       n.is_null().alias(f"__miss_{c.name}")]
            counted += [f"__ok_{c.name}", f"__miss_{c.name}"]
            if c.name == spec.unit_id:
                unit_h, unit_ok = f"__h_{c.name}", f"__ok_{c.name}"
                # Distinct valid ids = distinct pseudonyms; counted on the (cheaper) number.
                unit_key = f"__u_{c.name}"
                hashes.append(pl.when(ok).then(pl.col(f"__x_{c.name}") if c.kind == "bsn" else n).alias(unit_key))
            out += [pl.col(f"__h_{c.name}").alias(c.name), link_status_expr(n, ok).alias(c.status_column)]
        elif c.action == "generalise":
            out.append(generalise(c, v, pc_ok.get(c.source)).alias(c.name))
        elif c.action == "empty":
            out.append(pl.lit(None, dtype=pl.String).alias(c.name))
        else:
            out.append(v.alias(c.name))
    if norm:
        steps += [text, norm] + ([nums] if nums else []) + [ids, hashes]
    if spec.unit_id_created:
        out = [pl.lit(None, dtype=pl.String).alias(spec.unit_id),
               pl.lit(STATUS_MISSING).alias(f"{spec.unit_id}_status")] + out
    link_keys: list[pl.Expr] = []
    qi = None
    if spec.link_columns and spec.unit_id:
        out.append(pl.col("_rid"))
        link_keys = _link_keys_exprs(spec, tmp)
        roles = _role_exprs(spec, tmp)
        if QI_ROLES <= set(roles):
            qi = "__qi"
            text_qi = pl.concat_str([roles["birth_date"].cast(pl.String), roles["sex"], roles["postcode"]],
                                    separator="|")
            steps.append([pseudonym_expr(text_qi, kind_key(master, QI_KIND)).alias(qi)])
    # The output and linkage columns are computed in the engine too, under internal names (an
    # output column may have a source column's name), and renamed when selected.
    steps.append([e.alias(f"__o_{i}") for i, e in enumerate(out)] +
                 [e.alias(f"__k_{i}") for i, e in enumerate(link_keys)])
    temporal = tmp.get(spec.temporal) if spec.temporal else None
    keep = ([f"__bad_{i}" for i in range(len(checks))] + counted
            + [x for x in (unit_h, unit_key, qi, temporal) if x is not None and x not in counted]
            + [f"__o_{i}" for i in range(len(out))] + [f"__k_{i}" for i in range(len(link_keys))])
    keep = list(dict.fromkeys(keep))
    out_sel = [pl.col(f"__o_{i}").alias(e.meta.output_name()) for i, e in enumerate(out)]
    key_sel = [pl.col(f"__k_{i}").alias(e.meta.output_name()) for i, e in enumerate(link_keys)]
    needed = [c.source for c in spec.columns if c.source in tmp]
    return Plan(spec, steps, checks, out_sel, key_sel, unit_h, unit_ok, unit_key, qi, pseud, temporal,
                needed, keep)


class _FirstFailure:
    """The lowest slice number that failed, shared by the workers."""

    def __init__(self):
        self._lock = threading.Lock()
        self._k: int | None = None

    def at(self, k: int) -> None:
        with self._lock:
            self._k = k if self._k is None else min(self._k, k)

    def before(self, k: int) -> bool:
        """Whether a slice before ``k`` failed."""
        return self._k is not None and self._k < k

    def any(self) -> bool:
        return self._k is not None


@dataclass
class _Part:
    """What one slice gave: its counts, or its first failing value (then nothing was written)."""

    k: int
    offset: int
    rows: int = 0
    records: int = 0
    bad: list[int] = field(default_factory=list)  # failing values per check
    error: tuple[int, int, int] | None = None  # (row in the slice, check, failing rows) of an 'error' check
    valid: dict[str, int] = field(default_factory=dict)
    missing: dict[str, int] = field(default_factory=dict)
    unit_keys: pl.Series | None = None
    tmin: Any = None
    tmax: Any = None
    removed_qi: int = 0
    objector_qi: pl.Series | None = None
    written: bool = False


@dataclass
class _Acc:
    """Running totals over the slices (added in the order of the slices)."""

    checks: list[Check]
    rows: int = 0
    records: int = 0
    bad: dict[int, int] = field(default_factory=dict)
    valid: dict[str, int] = field(default_factory=dict)
    missing: dict[str, int] = field(default_factory=dict)
    unit_keys: list[pl.Series] = field(default_factory=list)
    tmin: Any = None
    tmax: Any = None
    removed_qi: int = 0
    objector_qi: list[pl.Series] = field(default_factory=list)

    def add(self, part: _Part) -> None:
        self.rows += part.rows
        self.records += part.records
        for i, n in enumerate(part.bad):
            self.bad[i] = self.bad.get(i, 0) + n
        for name, n in part.valid.items():
            self.valid[name] = self.valid.get(name, 0) + n
        for name, n in part.missing.items():
            self.missing[name] = self.missing.get(name, 0) + n
        if part.unit_keys is not None:
            self.unit_keys.append(part.unit_keys)
        if part.tmin is not None:
            self.tmin = part.tmin if self.tmin is None else min(self.tmin, part.tmin)
            self.tmax = part.tmax if self.tmax is None else max(self.tmax, part.tmax)
        self.removed_qi += part.removed_qi
        if part.objector_qi is not None:
            self.objector_qi.append(part.objector_qi)

    def status(self, spec: Spec) -> dict[str, dict[str, int]]:
        out = {}
        for name, valid in self.valid.items():
            missing = self.missing[name]
            out[name] = {"valid": valid, "invalid": self.records - valid - missing, "missing": missing}
        if spec.unit_id_created:
            out[spec.unit_id] = {"valid": 0, "invalid": 0, "missing": self.records}
        return out

    def units(self) -> tuple[int, bool]:
        if not self.unit_keys:
            return 0, False
        keys = pl.concat(self.unit_keys)
        if keys.len() > EXACT_UNITS_UP_TO:
            return int(keys.approx_n_unique()), True
        return keys.n_unique(), False

    def nulled(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for i, n in self.bad.items():
            ch = self.checks[i]
            if ch.on_invalid == "null" and n:
                out[ch.column] = out.get(ch.column, 0) + n
        return out


def slice_bounds(total: int, slice_rows: int, row_groups: list[int] | None = None) -> list[tuple[int, int]]:
    """(offset, rows) of the slices: about ``slice_rows`` each; with a Parquet file's row groups,
    whole row groups (a slice that ends inside a row group makes two slices decode it), and a
    row group larger than ``slice_rows`` is cut into equal slices."""
    if not row_groups or sum(row_groups) != total:
        return [(off, min(slice_rows, total - off)) for off in range(0, total, slice_rows)]
    out: list[tuple[int, int]] = []
    start = end = 0
    for rows in row_groups:
        if end > start and end - start + rows > slice_rows:
            out.append((start, end - start))
            start = end
        if rows > slice_rows:
            out += [(end + o, min(slice_rows, rows - o)) for o in range(0, rows, slice_rows)]
            start = end + rows
        end += rows
    if end > start:
        out.append((start, end - start))
    return out


def _maybe_reused(store: Store, spec: Spec, kid: str, source_bytes: int) -> bool:
    """Whether a version of this dataset could have the same fingerprint: same spec and key and a
    source of the same size (versions that did not record the size may)."""
    for v in store.versions(spec.dataset):
        prov = store.metadata(spec.dataset, v).get("provenance", {})
        if (prov.get("spec_sha256") == spec.digest() and prov.get("key_id") == kid
                and prov.get("source_bytes", source_bytes) == source_bytes):
            return True
    return False


class _Slices:
    """Compute, check and write the dataset slice by slice; stop at the first slice with a bad value.

    Each slice is computed by polars' streaming engine (on all cores), checked, filtered and
    written to its own part file by one of ``workers`` threads, so that one slice is written
    while the next is computed (polars and pyarrow release the GIL). The slices may be computed
    (:meth:`start`) before the version is known; they are written once :meth:`run` gives the
    description that goes into each file's footer. Results are taken in the order of the slices:
    the first bad value reported is the first in the file, and once a slice has failed no later
    slice is started and nothing more is written (the staging folder is removed by the caller).
    """

    def __init__(self, src: Source, spec: Spec, plan: Plan, objectors: pl.Series, qi_register: pl.Series,
                 stage: Path, compression: str, slice_rows: int, workers: int, rep: Reporter):
        self.src, self.spec, self.plan, self.stage = src, spec, plan, stage
        self.compression, self.slice_rows, self.rep = compression, slice_rows, rep
        lf, total = src.lf, src.n_rows
        if not total:
            raise IngestError("the file has no data rows", file=str(src.path))
        self.lf, self.total = lf, total
        self.obj_list = objectors.implode() if objectors.len() else None
        self.qi_list = qi_register.implode() if plan.qi and qi_register.len() else None
        self.bounds = slice_bounds(total, slice_rows, src.row_groups)
        self.workers = max(1, min(workers, len(self.bounds)))
        # The first slice that failed (a bad value or an exception): later slices are not started
        # and nothing more is written; earlier ones are still checked, as their bad values come first.
        self.failed = _FirstFailure()
        self.md: dict[str, Any] | None = None  # the footer; None: do not write (yet)
        self.gate = threading.Event()  # set when writing may start (or the run is abandoned)
        self.pool: ThreadPoolExecutor | None = None
        self.futures: list = []

    def start(self) -> None:
        if self.pool is None:
            self.pool = ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix="ingest-slice")
            self.futures = [self.pool.submit(self._part, k, off, n) for k, (off, n) in enumerate(self.bounds)]

    def run(self, md: dict[str, Any]) -> _Acc:
        """Write with ``md`` in every footer; the totals, or raise for the first bad value."""
        if self.plan.link_keys:
            (self.stage / "_linkage").mkdir()
        self.md = md
        self.gate.set()
        self.start()
        acc = _Acc(self.plan.checks)
        with self.rep.stage(f"checking, pseudonymising, writing {self.total:,} rows", total=self.total) as advance:
            for fut in self.futures:  # in the order of the slices
                p = fut.result()  # an exception in the slice is raised here
                if p is not None and p.error is not None:
                    raise _slice_error(p, self.plan, self.src, self.lf)
                if p is None or not p.written:
                    if self.failed.any():  # a later slice failed: its error is raised when reached
                        continue
                    raise RuntimeError(f"slice {p.k if p else '?'} was not written")  # pragma: no cover
                acc.add(p)
                advance(p.rows)
        return acc

    def close(self) -> None:
        """Stop: start no further slice, write nothing more, wait for the running ones."""
        self.failed.at(-1)
        self.gate.set()
        if self.pool is not None:
            for fut in self.futures:
                fut.cancel()
            self.pool.shutdown(wait=True)

    def _part(self, k: int, off: int, n: int) -> _Part | None:
        if self.failed.before(k):
            return None
        try:
            return self._compute_check_write(k, off, n)
        except BaseException:
            self.failed.at(k)
            raise

    def _compute_check_write(self, k: int, off: int, n: int) -> _Part:
        plan, spec = self.plan, self.spec
        df = _collect(plan.compute(self.lf.slice(off, n), off), self.src)
        p = _Part(k, off, rows=df.height)
        _check_part(df, plan, p)
        if p.error is not None:
            self.failed.at(k)
            return p
        if self.obj_list is not None and plan.unit_h:
            objector = pl.col(plan.unit_h).is_in(self.obj_list).fill_null(False)  # no id: not an objector
            if plan.qi and spec.spine:  # remember their quasi-identifiers, for sources without an id
                p.objector_qi = df.filter(objector)[plan.qi].drop_nulls()
            df = df.filter(~objector)
        if self.qi_list is not None:
            no_id = ~pl.col(plan.unit_ok) if plan.unit_ok else pl.lit(True)
            n_before = df.height
            df = df.filter(~(no_id & pl.col(plan.qi).is_in(self.qi_list).fill_null(False)))
            p.removed_qi = n_before - df.height
        p.records = df.height
        _count_part(df, plan, p)
        out = df.select(plan.out)
        keys = df.select(plan.link_keys) if plan.link_keys else None
        del df
        self.gate.wait()
        if self.md is None or self.failed.any():  # abandoned, or this run fails: nothing to write
            return p
        _write_part(out, keys, self.stage, k, self.compression, self.md)
        p.written = True
        return p


def _write_part(out: pl.DataFrame, keys: pl.DataFrame | None, stage: Path, k: int, compression: str,
                md: dict[str, Any]) -> None:
    write_parquet(out, stage / f"part-{k}.parquet", md, compression, string_views=True,
                  compress_dictionary_columns=compression not in ("lz4", "snappy"))
    if keys is not None:
        keys.write_parquet(stage / "_linkage" / f"keys-{k}.parquet", compression="zstd")


def _check_part(df: pl.DataFrame, plan: Plan, p: _Part) -> None:
    """Count this slice's failing values per check and find its first failing 'error' value."""
    checks = plan.checks
    if checks:
        p.bad = list(df.select([pl.col(f"__bad_{i}").sum() for i in range(len(checks))]).row(0))
        for i, n in enumerate(p.bad):
            if n and checks[i].on_invalid == "error":
                r = int(df[f"__bad_{i}"].arg_max())
                if p.error is None or r < p.error[0]:
                    p.error = (r, i, n)
    if plan.temporal and p.error is None:
        p.tmin, p.tmax = df.select(pl.col(plan.temporal).min().alias("lo"),
                                   pl.col(plan.temporal).max().alias("hi")).row(0)


def _slice_error(p: _Part, plan: Plan, src: Source, lf: pl.LazyFrame) -> IngestError:
    """The error for a slice's first failing value (read back from the source, ``lf``, which the
    slice was computed from)."""
    r, i, n = p.error
    ch = plan.checks[i]
    row = p.offset + r
    value = lf.slice(row, 1).select(pl.col(ch.column).cast(pl.String)).collect().item()
    more = f" ({n:,} rows in this part of the file have this problem)" if n > 1 else ""
    return IngestError(ch.message.replace("{value}", str(value)) + more, file=str(src.path),
                       row=row + 1, line=row + 2 if src.format == "csv" else None, column=ch.column)


def _count_part(df: pl.DataFrame, plan: Plan, p: _Part) -> None:
    if not plan.pseudonymised:
        return
    aggs = []
    for c in plan.pseudonymised:
        aggs += [pl.col(f"__ok_{c.name}").sum().alias(f"v:{c.name}"),
                 pl.col(f"__miss_{c.name}").sum().alias(f"m:{c.name}")]
    res = df.select(aggs).row(0, named=True)
    for c in plan.pseudonymised:
        p.valid[c.name] = res[f"v:{c.name}"]
        p.missing[c.name] = res[f"m:{c.name}"]
    if plan.unit_key is not None:
        p.unit_keys = df[plan.unit_key].drop_nulls()


def _check_columns(src: Source, spec: Spec) -> None:
    missing = [c.source for c in spec.columns if c.source not in src.columns]
    if missing:
        have = ", ".join(src.columns[:20]) + (", ..." if len(src.columns) > 20 else "")
        hint = delimiter_hint(src.columns, src.delimiter) if src.format == "csv" else ""
        raise IngestError(f"missing column(s) named in the spec: {', '.join(missing)}; the file has: {have}{hint}",
                          file=str(src.path), column=missing[0])


def _read_csv(src: Source, spec: Spec) -> pl.DataFrame:
    """The spec's columns of a CSV. Integer and decimal-point number columns are parsed while
    reading (faster); if that fails anywhere the file is read as text, and the checks then say
    which row and column hold what. polars' CSV number parser accepts a subset of what the
    text path accepts, with the same values (tests/unit/data_ingest/test_ingest_parallel.py)."""
    needed = [c.source for c in spec.columns if not (c.action == "drop" and not c.link)]
    typed = {c.source: pl.Int64 if c.type == "int" else pl.Float64 for c in spec.columns
             if c.source in needed and (c.type == "int" or (c.type == "float" and not spec.decimal_comma))}
    if typed:
        try:
            return src.scan_csv(typed).select(needed).collect(engine="streaming")
        except pl.exceptions.PolarsError:
            pass  # a value that is not a number (or another problem): the text path reports it
    return _collect(src.lf.select(needed), src)


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


def _role_exprs(spec: Spec, tmp: dict[str, str]) -> dict[str, pl.Expr]:
    """The linkage variables in a common form: a date; sex as its lowercase label; the postcode
    upper case without spaces."""
    out = {}
    for c in spec.link_columns:
        v = pl.col(tmp[c.source])  # a postcode is normalised already (see _plan)
        if c.link == "sex":
            v = v.cast(pl.String)
            if c.value_labels:
                v = v.replace_strict(c.value_labels, default=None)
            v = v.str.to_lowercase()
        out[c.link] = v
    return out


def _link_keys_exprs(spec: Spec, tmp: dict[str, str]) -> list[pl.Expr]:
    """The original (ungeneralised) linkage variables, for ``ingest link`` only: never published."""
    cols = [pl.col("_rid")]
    if spec.unit_id_created:
        cols += [pl.lit(None, dtype=pl.String).alias("pid"), pl.lit(STATUS_MISSING).alias("status")]
    else:
        cols += [pl.when(pl.col(f"__ok_{spec.unit_id}")).then(pl.col(f"__h_{spec.unit_id}")).alias("pid"),
                 link_status_expr(pl.col(f"__n_{spec.unit_id}"), pl.col(f"__ok_{spec.unit_id}")).alias("status")]
    cols += [v.alias(role) for role, v in _role_exprs(spec, tmp).items()]
    return cols
