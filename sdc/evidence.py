"""Per-cell disclosure evidence, computed by DuckDB straight from the source.

For every cell of a table -- inner cells, every margin, hierarchy subtotals and the grand total --
this module computes, in SQL, with no Python loop over rows:

* ``n_units``: the number of units behind the cell (units with a value, for a magnitude table);
* ``total``: the sum of the units' values (for a count table: ``n_units``);
* ``top``: the largest unit contributions, as many as the rules need (sorted, 0-padded);
* ``n_negative``: units with a negative value; ``n_missing``: units with a missing value
  (NULL or NaN in any of their rows);
* ``vmin``/``vmax`` and, for medians/percentiles, the quantile of the unit values.

Rows are first summed per unit within a cell (``unit=...``); with no unit column every row is a
unit.  The fast path makes one pass over the source: it aggregates to the inner cells (grouped
by every dimension column), then derives every margin from that small result with GROUPING SETS
(sums add, top-k lists merge).  That is exact only when each unit lies in one inner cell, which
the pass checks; otherwise (a unit in several cells) and for medians/percentiles, the margins are
computed from the source with GROUPING SETS over (cell, unit) -- slower, but exact.

Sources: a SQL query (on a given connection), a Parquet (or CSV) path or glob, a pyarrow Table,
a polars DataFrame/LazyFrame, or a DuckDB relation.  Parquet is read out of core.
"""

from __future__ import annotations

import glob as _glob
import itertools
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import duckdb
import numpy as np
import polars as pl

from sdc.errors import SourceError, TableSpecError
from sdc.structure import Dimension, TableStructure

__all__ = ["DimSpec", "Evidence", "Source", "resolve_source", "compute_evidence", "TOTAL"]

TOTAL = "Total"
#: refuse tables with more cells than this (a continuous column used as a dimension, typically)
MAX_CELLS = 2_000_000

_SQL_START = re.compile(r"^\s*(\(|select\b|with\b|from\b|values\b|table\b|pivot\b|unpivot\b|summarize\b|describe\b)", re.I)
_NUMERIC = ("TINYINT", "SMALLINT", "INTEGER", "BIGINT", "HUGEINT", "UTINYINT", "USMALLINT",
            "UINTEGER", "UBIGINT", "UHUGEINT", "FLOAT", "DOUBLE", "REAL", "DECIMAL")


# ---------------------------------------------------------------------------- sources
@dataclass
class Source:
    """A source resolved to a DuckDB relation, plus how to describe it in a spec."""

    relation: duckdb.DuckDBPyRelation
    kind: str  # "sql" | "parquet" | "csv" | "arrow" | "polars" | "relation"
    sql: str | None = None
    path: str | None = None
    connection: Any = field(default=None, repr=False)  # keeps a private connection alive

    @property
    def columns(self) -> list[str]:
        return list(self.relation.columns)

    def column_type(self, name: str) -> str:
        return str(dict(zip(self.relation.columns, self.relation.types))[name])


def _first_line(e: BaseException) -> str:
    msg = str(e).strip().splitlines()
    return msg[0] if msg else type(e).__name__


def resolve_source(source: Any, con: duckdb.DuckDBPyConnection | None = None) -> Source:
    """Turn any supported source into a DuckDB relation (nothing is read yet)."""
    if isinstance(source, duckdb.DuckDBPyRelation):
        return Source(source, "relation")
    own = con is None
    con = con if con is not None else duckdb.connect()
    if isinstance(source, (str, Path)) and not (isinstance(source, str) and _SQL_START.match(source)):
        return _file_source(str(source), con)
    try:
        if isinstance(source, str):
            return Source(con.sql(source), "sql", sql=source, connection=con if own else None)
        mod = type(source).__module__.split(".")[0]
        if mod == "polars":
            if isinstance(source, pl.LazyFrame):
                source = source.collect()
            if not isinstance(source, pl.DataFrame):
                raise SourceError(f"unsupported polars source {type(source).__name__}")
            return Source(con.from_arrow(source.to_arrow()), "polars", connection=con)
        if mod == "pyarrow":
            return Source(con.from_arrow(source), "arrow", connection=con)
    except SourceError:
        raise
    except duckdb.Error as e:
        raise SourceError(f"cannot read the source: {_first_line(e)}") from None
    raise SourceError(
        f"unsupported source type {type(source).__name__}: give a SQL query, a Parquet path or glob, "
        "a pyarrow Table, a polars DataFrame or a DuckDB relation"
    )


def _file_source(path: str, con: duckdb.DuckDBPyConnection) -> Source:
    has_glob = any(ch in path for ch in "*?[")
    p = Path(path)
    if has_glob:
        if not _glob.glob(path, recursive=True):
            raise SourceError(f"no files match {path}")
        files: str | list[str] = path
        suffix = Path(path.rstrip("*")).suffix.lower() or ".parquet"
    elif p.is_dir():
        found = sorted(_glob.glob(str(p / "**" / "*.parquet"), recursive=True))
        if not found:
            raise SourceError(f"no Parquet files in folder {path}")
        files, suffix = found, ".parquet"
    elif p.is_file():
        files, suffix = path, p.suffix.lower()
    else:
        raise SourceError(f"file not found: {path}")
    try:
        if suffix in (".csv", ".tsv", ".txt"):
            return Source(con.read_csv(files), "csv", path=path, connection=con)
        return Source(con.read_parquet(files), "parquet", path=path, connection=con)
    except duckdb.Error as e:
        raise SourceError(f"cannot read {path}: {_first_line(e)}") from None


# ---------------------------------------------------------------------------- evidence
@dataclass(frozen=True)
class DimSpec:
    """One table dimension: its name and its columns, coarsest level first.

    A flat dimension has one level (``["sex"]``); a hierarchy has several
    (``["region", "municipality"]``), each level nested in the one before it.
    """

    name: str
    levels: tuple[str, ...]

    @property
    def hierarchical(self) -> bool:
        return len(self.levels) > 1


@dataclass
class Evidence:
    """Per-cell evidence arrays, in the cell order of ``structure``."""

    structure: TableStructure
    dims: list[DimSpec]
    stat: str
    n_units: np.ndarray
    total: np.ndarray
    value: np.ndarray
    top: np.ndarray  # (n_cells, k), descending, 0-padded
    n_negative: np.ndarray
    n_missing: np.ndarray
    additive: bool  # every unit lies in one inner cell (fast path)
    path: str  # "inner-cells" or "grouping-sets"

    @property
    def n_cells(self) -> int:
        return self.structure.n_cells

    def key_dicts(self) -> list[dict]:
        """Cell keys as ``{column: label}`` with ``"Total"`` for margins, in cell order."""
        out = []
        for key in self.structure.keys():
            d: dict = {}
            for spec, code in zip(self.dims, key):
                if spec.hierarchical:
                    d.update(zip(spec.levels, code))
                else:
                    d[spec.levels[0]] = code
            out.append(d)
        return out


def _q(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _grouping_sets(dims: Sequence[DimSpec]) -> list[tuple[str, ...]]:
    """Every combination of one prefix per dimension: () | (region) | (region, municipality)."""
    per_dim = [[spec.levels[:i] for i in range(len(spec.levels) + 1)] for spec in dims]
    return [tuple(itertools.chain.from_iterable(combo)) for combo in itertools.product(*per_dim)]


def _gs_sql(sets: list[tuple[str, ...]], extra: str | None = None) -> str:
    parts = []
    for s in sets:
        cols = [_q(c) for c in s] + ([extra] if extra else [])
        parts.append("(" + ", ".join(cols) + ")")
    return "GROUPING SETS (" + ", ".join(parts) + ")"


def compute_evidence(
    src: Source,
    dims: Sequence[DimSpec],
    *,
    value: str | None,
    stat: str,
    unit: str | None,
    top_k: int = 2,
    quantile: float | None = None,
) -> Evidence:
    """Run the evidence queries and return per-cell arrays for the whole table.

    ``stat`` is ``count``, ``sum``, ``mean``, ``min``, ``max`` or a quantile statistic
    (``quantile`` set).  Raises :class:`SourceError`/:class:`TableSpecError` for a missing
    dimension value (NULL), a data value ``"Total"`` or a hierarchy that does not nest.
    """
    dims = list(dims)
    levels = [lv for d in dims for lv in d.levels]
    magnitude = stat != "count"
    k = max(1, int(top_k))
    lv_sql = ", ".join(_q(c) for c in levels)
    if magnitude:
        v_expr = f"CASE WHEN isnan(CAST({_q(value)} AS DOUBLE)) THEN NULL ELSE CAST({_q(value)} AS DOUBLE) END"
    else:
        v_expr = "1.0::DOUBLE"
    u_expr = _q(unit) if unit else "NULL"
    base = f"SELECT {lv_sql}, {u_expr} AS __u, {v_expr} AS __v FROM __sdc_src"
    sets = _grouping_sets(dims)
    n_lv = len(levels)
    gid_sql = f"GROUPING({lv_sql}) AS __gid"
    cast_sql = ", ".join(f"CAST({_q(c)} AS VARCHAR) AS {_q(c)}" for c in levels)

    def run(rel: duckdb.DuckDBPyRelation, name: str, sql: str) -> pl.DataFrame:
        try:
            return rel.query(name, sql).pl()
        except duckdb.Error as e:
            raise SourceError(f"the evidence query failed: {_first_line(e)}") from None

    if unit:
        nulls = run(src.relation, "__sdc_src",
                    f"SELECT count(*) FILTER (WHERE {_q(unit)} IS NULL) AS n FROM __sdc_src")["n"][0]
        if nulls:
            raise SourceError(
                f"the unit column {unit!r} is missing (NULL) in {nulls:,} rows: rules count units, and a row "
                f"without one cannot be counted; leave them out (WHERE {unit} IS NOT NULL) or give them ids")

    # aggregates over a unit-level relation with columns __v (unit value) and __nm (missing rows)
    n_expr = "count(__v)" if magnitude else "count(*)"
    unit_aggs = (
        f"{n_expr} AS n, sum(__v) AS total, max(__v, {k}) AS top, "
        "count(*) FILTER (WHERE __v < 0) AS n_neg, count(*) FILTER (WHERE __nm > 0) AS n_miss, "
        "min(__v) AS vmin, max(__v) AS vmax"
        + (f", quantile_cont(__v, {float(quantile)!r}) AS q" if quantile is not None else "")
    )
    additive = True
    pc = duckdb.connect()  # private, for the small intermediate results
    if quantile is None:
        # ---- fast path: one pass to inner cells, margins from the inner cells
        if unit:
            sql = (
                f"WITH base AS ({base}), "
                f"u AS MATERIALIZED (SELECT {lv_sql}, __u, sum(__v) AS __v, count(*) - count(__v) AS __nm "
                f"FROM base GROUP BY {lv_sql}, __u), "
                f"cells AS (SELECT {lv_sql}, {unit_aggs} FROM u GROUP BY {lv_sql}), "
                "chk AS (SELECT count(*) - count(DISTINCT __u) AS __dup FROM u) "
                "SELECT cells.*, chk.__dup FROM cells CROSS JOIN chk"
            )
        else:
            sql = (
                f"WITH u AS (SELECT {lv_sql}, __v, (__v IS NULL)::INTEGER AS __nm FROM ({base})) "
                f"SELECT {lv_sql}, {unit_aggs}, 0 AS __dup FROM u GROUP BY {lv_sql}"
            )
        inner = run(src.relation, "__sdc_src", sql)
        dup = 0 if inner.height == 0 else int(inner["__dup"][0])
        additive = dup == 0
        if not additive and stat == "count":
            raise TableSpecError(
                f"{dup} (unit, cell) pairs repeat a unit of {unit!r} in another cell: a count of units is "
                "then not additive and cannot be protected; use dimensions that are constant per unit"
            )
        if additive:
            _check_inner(inner.select(levels), dims)
            order = inner.select(levels)
            res = inner.drop("__dup").with_columns(pl.lit(0).alias("__gid"))
            path = "inner-cells"
    if quantile is not None or not additive:
        # ---- general path: margins straight from the source, per unit
        if unit:
            sql = (
                f"WITH base AS ({base}), "
                f"uu AS (SELECT {lv_sql}, {gid_sql}, __u, sum(__v) AS __v, count(*) - count(__v) AS __nm "
                f"FROM base GROUP BY {_gs_sql(sets, '__u')}) "
                f"SELECT {lv_sql}, __gid, {unit_aggs} FROM uu GROUP BY {lv_sql}, __gid"
            )
        else:
            sql = (
                f"WITH u AS (SELECT {lv_sql}, __v, (__v IS NULL)::INTEGER AS __nm FROM ({base})) "
                f"SELECT {lv_sql}, {gid_sql}, {unit_aggs} FROM u GROUP BY {_gs_sql(sets)}"
            )
        raw = run(src.relation, "__sdc_src", sql)
        order = raw.filter(pl.col("__gid") == 0).select(levels)
        _check_inner(order, dims)
        res = _cast_labels(raw, levels, pc) if raw.height else raw
        path = "grouping-sets"

    structure, code_frames = _build_structure(order, dims, pc)
    n_cells = structure.n_cells
    idx = _cell_index(res, dims, code_frames, structure, n_lv, levels)
    inner_only = path == "inner-cells"

    n = np.zeros(n_cells, dtype=np.int64)
    total = np.zeros(n_cells, dtype=np.float64)
    n_neg = np.zeros(n_cells, dtype=np.int64)
    n_miss = np.zeros(n_cells, dtype=np.int64)
    vmin = np.full(n_cells, np.nan)
    vmax = np.full(n_cells, np.nan)
    qv = np.full(n_cells, np.nan)
    top = np.zeros((n_cells, k), dtype=np.float64)
    if res.height:
        n[idx] = res["n"].fill_null(0).to_numpy()
        total[idx] = res["total"].cast(pl.Float64).fill_null(0.0).to_numpy()
        n_neg[idx] = res["n_neg"].fill_null(0).to_numpy()
        n_miss[idx] = res["n_miss"].fill_null(0).to_numpy()
        vmin[idx] = res["vmin"].cast(pl.Float64).fill_null(np.nan).to_numpy()
        vmax[idx] = res["vmax"].cast(pl.Float64).fill_null(np.nan).to_numpy()
        if quantile is not None:
            qv[idx] = res["q"].cast(pl.Float64).fill_null(np.nan).to_numpy()
        topcol = res["top"].cast(pl.List(pl.Float64))
        tops = res.select(
            [topcol.list.get(i, null_on_oob=True).fill_null(-np.inf if inner_only else 0.0).alias(f"t{i}")
             for i in range(k)]
        ).to_numpy()
        top[idx] = tops
    if inner_only and res.height:
        # margins and subtotals from the inner cells, along each dimension's tree; top-k lists
        # shorter than k were padded with -inf so that a margin keeps its children's real values
        top[np.setdiff1d(np.arange(n_cells), idx)] = -np.inf
        add = lambda b: b.sum(0)  # noqa: E731
        _roll_up(structure, [(n, add), (total, add), (n_neg, add), (n_miss, add),
                             (vmin, lambda b: np.fmin.reduce(b, axis=0)),
                             (vmax, lambda b: np.fmax.reduce(b, axis=0)), (top, _top_k(k))])
        top[~np.isfinite(top)] = 0.0
    if not magnitude:
        total = n.astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        if stat == "count":
            val = n.astype(np.float64)
        elif stat == "sum":
            val = total.copy()
        elif stat == "mean":
            val = np.where(n > 0, total / np.maximum(n, 1), np.nan)
        elif stat == "min":
            val = vmin
        elif stat == "max":
            val = vmax
        elif quantile is not None:
            val = qv
        else:  # pragma: no cover - checked by the caller
            raise TableSpecError(f"unknown statistic {stat!r}")
    return Evidence(
        structure=structure, dims=dims, stat=stat, n_units=n, total=total, value=val, top=top,
        n_negative=n_neg, n_missing=n_miss, additive=additive, path=path,
    )


def _roll_up(structure, arrays: list[tuple[np.ndarray, Callable]]) -> None:
    """Fill every non-inner cell of each flat array (one row per cell, any trailing axes) from the
    inner cells, in place: dimension by dimension, each parent code = ``reduce(children)`` (the
    children's block stacked on axis 0), deepest parents first.  Cells that are not inner must
    hold the reduction's identity beforehand (0 for sums, NaN for fmin/fmax)."""
    for d, dim in enumerate(structure.dimensions):
        parents = sorted(dim.children, key=dim.depth, reverse=True)
        kids = [(dim.position(p), np.array([dim.position(c) for c in dim.children[p]], dtype=np.int64))
                for p in parents]
        for arr, reduce in arrays:
            td = np.moveaxis(arr.reshape(*structure.shape, *arr.shape[1:]), d, 0)
            for p, ch in kids:
                td[p] = reduce(td[ch])


def _top_k(k: int) -> Callable:
    """Reduction for :func:`_roll_up`: the k largest of the children's top-k lists (descending)."""
    def merge(block: np.ndarray) -> np.ndarray:
        cand = np.moveaxis(block, 0, -2).reshape(*block.shape[1:-1], block.shape[0] * k)
        if cand.shape[-1] > k:
            cand = np.partition(cand, cand.shape[-1] - k, axis=-1)[..., -k:]
        return -np.sort(-cand, axis=-1)
    return merge


def _cast_labels(raw: pl.DataFrame, levels: list[str], con: duckdb.DuckDBPyConnection) -> pl.DataFrame:
    """Cast the level columns to text through DuckDB (the same text the fast path produces)."""
    rel = con.from_arrow(raw.to_arrow())
    repl = ", ".join(f"CAST({_q(c)} AS VARCHAR) AS {_q(c)}" for c in levels)
    return rel.query("__r", f"SELECT * REPLACE ({repl}) FROM __r").pl()


def _check_inner(order: pl.DataFrame, dims: Sequence[DimSpec]) -> None:
    """Missing dimension values, the reserved label, hierarchies that do not nest."""
    if order.height == 0:
        return
    for c in order.columns:
        nulls = order[c].null_count()
        if nulls:
            raise SourceError(
                f"column {c!r} has missing values (NULL); give them a category first, "
                f"e.g. COALESCE({c}, 'unknown')"
            )
    labels = order.select([pl.col(c).cast(pl.Utf8) for c in order.columns])
    for c in labels.columns:
        if (labels[c] == TOTAL).any():
            raise SourceError(f"column {c!r} has a value {TOTAL!r}, which is reserved for margins; recode it")
    for spec in dims:
        for parent, child in zip(spec.levels, spec.levels[1:]):
            bad = (
                labels.group_by(child)
                .agg(pl.col(parent).unique().sort().alias("parents"))
                .filter(pl.col("parents").list.len() > 1)
                .sort(child)
            )
            if bad.height:
                shown = "; ".join(
                    f"{row[child]!r} under {', '.join(map(repr, row['parents']))}"
                    for row in bad.head(5).iter_rows(named=True)
                )
                more = f" (and {bad.height - 5} more)" if bad.height > 5 else ""
                raise TableSpecError(
                    f"{child!r} is not nested in {parent!r}: {shown}{more}"
                )


def _build_structure(order: pl.DataFrame, dims: Sequence[DimSpec], con: duckdb.DuckDBPyConnection):
    """Dimensions in display order (Total first, then each parent before its children)."""
    dimensions = []
    code_frames = []
    n_cells = 1
    for spec in dims:
        lv = list(spec.levels)
        combos = order.select(lv).unique().sort(lv, nulls_last=True)
        text = _text(combos, lv, con)
        if not spec.hierarchical:
            leaves = text[lv[0]].to_list()
            dim = Dimension(spec.name, [TOTAL, *leaves], {c: TOTAL for c in leaves})
            codes = [TOTAL, *leaves]
            frame = pl.DataFrame({lv[0]: codes, "__pos": list(range(len(codes)))},
                                 schema={lv[0]: pl.Utf8, "__pos": pl.Int64})
        else:
            codes: list[tuple] = [tuple([TOTAL] * len(lv))]
            parent: dict = {}
            seen = {codes[0]}
            for row in text.iter_rows():
                for depth in range(1, len(lv) + 1):
                    code = tuple(row[:depth]) + (TOTAL,) * (len(lv) - depth)
                    if code not in seen:
                        seen.add(code)
                        codes.append(code)
                        parent[code] = tuple(row[: depth - 1]) + (TOTAL,) * (len(lv) - depth + 1)
            dim = Dimension(spec.name, codes, parent)
            cols = {c: [code[i] for code in codes] for i, c in enumerate(lv)}
            cols["__pos"] = list(range(len(codes)))
            frame = pl.DataFrame(cols, schema={**{c: pl.Utf8 for c in lv}, "__pos": pl.Int64})
        dimensions.append(dim)
        code_frames.append(frame)
        n_cells *= len(dim.codes)
        if n_cells > MAX_CELLS:
            raise TableSpecError(
                f"the table would have more than {MAX_CELLS:,} cells; use fewer or coarser dimensions"
            )
    return TableStructure(dimensions), code_frames


def _text(frame: pl.DataFrame, cols: list[str], con: duckdb.DuckDBPyConnection) -> pl.DataFrame:
    """Native values -> DuckDB's text form (``CAST(x AS VARCHAR)``), row order kept."""
    if all(frame[c].dtype == pl.Utf8 or frame[c].dtype.is_integer() for c in cols):
        return frame.select([pl.col(c).cast(pl.Utf8) for c in cols])  # same text as DuckDB's cast
    rel = con.from_arrow(frame.with_row_index("__i").to_arrow())
    repl = ", ".join(f"CAST({_q(c)} AS VARCHAR) AS {_q(c)}" for c in cols)
    return rel.query("__t", f"SELECT {repl} FROM __t ORDER BY __i").pl()


def _cell_index(res: pl.DataFrame, dims, code_frames, structure, n_lv, levels) -> np.ndarray:
    if res.height == 0:
        return np.zeros(0, dtype=np.int64)
    gid = pl.col("__gid")
    filled = res.select(
        [
            pl.when((gid.cast(pl.Int64) // (1 << (n_lv - 1 - i))) % 2 == 1)
            .then(pl.lit(TOTAL))
            .otherwise(pl.col(c).cast(pl.Utf8))
            .alias(c)
            for i, c in enumerate(levels)
        ]
    ).with_row_index("__row")
    idx = np.zeros(res.height, dtype=np.int64)
    stride = 1
    strides = []
    for dim in reversed(structure.dimensions):
        strides.append(stride)
        stride *= len(dim.codes)
    strides.reverse()
    for spec, frame, st in zip(dims, code_frames, strides):
        lv = list(spec.levels)
        joined = filled.select(["__row", *lv]).join(frame, on=lv, how="left").sort("__row")
        pos = joined["__pos"]
        if pos.null_count():  # pragma: no cover - would be an internal inconsistency
            raise RuntimeError(f"evidence rows that match no code of dimension {spec.name!r}")
        idx += pos.to_numpy() * st
    return idx
