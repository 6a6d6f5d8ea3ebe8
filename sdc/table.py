"""Checked tables: ``sdc.table(...)`` -> evidence, primary rules, protection, audit, outputs.

>>> t = sdc.table("people.parquet", rows="municipality", cols="sex", value="income",
...               stat="mean", unit="person_id", hierarchy={"municipality": "region"},
...               policy="acro")
>>> t                    # in a notebook: the table, unsafe cells coloured, the rule on hover
>>> t.to_polars()        # the released form: suppressed cells null
>>> t.to_json()          # the stable JSON (docs/sdc-json.md); t.to_json(reveal=True) for checkers

Protection: counts, sums and means are protected by secondary suppression
(:func:`sdc.suppress.secondary_suppression`; a mean table's pattern is computed on the sums behind
it) and the pattern is proved by the LP audit (:func:`sdc.audit.audit`).  Medians, percentiles,
minima and maxima are not additive, so margins do not constrain them; their pattern protects the
published unit counts.  A policy with ``[rounding]`` (OpenSAFELY style) instead redacts unsafe
inner cells, rounds the others and publishes every margin as the sum of the published inner cells.
"""

from __future__ import annotations

import html
import io
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import duckdb
import numpy as np
import polars as pl

from sdc.errors import SourceError, TableSpecError
from sdc.evidence import TOTAL, DimSpec, Evidence, compute_evidence, resolve_source, _NUMERIC
from sdc.policy import STATS, Policy, load_policy, percentile_q, stat_kind
from sdc.rules import PrimaryResult, primary as primary_rules, union_unsafe

__all__ = ["table", "table_from_spec", "CheckedTable", "Cell", "JSON_FORMAT"]

#: the ``format`` field of the JSON; bump on an incompatible change
JSON_FORMAT = "sdc-table/1"
_STATUS_ORDER = ("safe", "primary", "secondary")


# ---------------------------------------------------------------------------- arguments
def _as_list(x: Any, what: str) -> list[str]:
    if x is None:
        return []
    if isinstance(x, str):
        items = [s.strip() for s in x.split(",")] if "," in x else [x]
    else:
        items = list(x)
    for s in items:
        if not isinstance(s, str) or not s:
            raise TableSpecError(f"{what} must be column names, got {s!r}")
    return items


def _parse_hierarchy(hierarchy: Any) -> dict[str, str]:
    """``{"municipality": "region"}``, ``["municipality:region"]`` or ``[("municipality", "region")]``."""
    if hierarchy is None:
        return {}
    if isinstance(hierarchy, Mapping):
        pairs = list(hierarchy.items())
    else:
        if isinstance(hierarchy, str):
            hierarchy = [hierarchy]
        pairs = []
        for h in hierarchy:
            if isinstance(h, str):
                if h.count(":") != 1:
                    raise TableSpecError(f"hierarchy {h!r} must be CHILD:PARENT")
                c, p = (s.strip() for s in h.split(":"))
                pairs.append((c, p))
            elif isinstance(h, (tuple, list)) and len(h) == 2:
                pairs.append((h[0], h[1]))
            else:
                raise TableSpecError(f"hierarchy entry {h!r} must be 'CHILD:PARENT' or (child, parent)")
    out: dict[str, str] = {}
    for c, p in pairs:
        if not isinstance(c, str) or not isinstance(p, str) or not c or not p:
            raise TableSpecError(f"hierarchy {c!r}:{p!r} must name two columns")
        if c == p:
            raise TableSpecError(f"hierarchy {c}:{p}: a column cannot be its own parent")
        if c in out and out[c] != p:
            raise TableSpecError(f"hierarchy: {c!r} has two parents, {out[c]!r} and {p!r}")
        out[c] = p
    for start in out:
        seen = {start}
        x = start
        while x in out:
            x = out[x]
            if x in seen:
                raise TableSpecError(f"hierarchy has a cycle through {x!r}")
            seen.add(x)
    parents = list(out.values())
    twice = sorted({p for p in parents if parents.count(p) > 1})
    if twice:
        kids = [c for c, p in out.items() if p == twice[0]]
        raise TableSpecError(
            f"hierarchy: {twice[0]!r} is the parent of both {kids[0]!r} and {kids[1]!r}; "
            "make them one chain or two tables"
        )
    return out


def _dimensions(rows: list[str], cols: list[str], hier: dict[str, str]) -> tuple[list[DimSpec], list[DimSpec]]:
    """Merge hierarchy chains into dimensions; parents listed as rows/cols are absorbed."""
    listed = rows + cols
    dup = sorted({c for c in listed if listed.count(c) > 1})
    if dup:
        raise TableSpecError(f"column {dup[0]!r} is given twice as a dimension")
    children = {p: c for c, p in hier.items()}

    def chain(c: str) -> tuple[str, ...]:
        out = [c]
        seen = {c}
        while out[0] in hier:
            p = hier[out[0]]
            if p in seen:
                raise TableSpecError(f"hierarchy has a cycle through {p!r}")
            seen.add(p)
            out.insert(0, p)
        return tuple(out)

    # a listed column whose child is also listed (directly or further down) is absorbed
    def absorbed(c: str) -> bool:
        x = c
        while x in children:
            x = children[x]
            if x in listed:
                return True
        return False

    used: set[str] = set()
    out_r: list[DimSpec] = []
    out_c: list[DimSpec] = []
    for group, out in ((rows, out_r), (cols, out_c)):
        for c in group:
            if absorbed(c):
                continue
            lv = chain(c)
            used.update(lv)
            out.append(DimSpec(c, lv))
    stray = [c for c in hier if c not in used]
    if stray:
        raise TableSpecError(f"hierarchy child {stray[0]!r} is not a row or column of the table")
    if not out_r and not out_c:
        raise TableSpecError("a table needs at least one row dimension")
    return out_r, out_c


# ---------------------------------------------------------------------------- result
@dataclass(frozen=True)
class Cell:
    """One cell: its key (``Total`` for margins), true value, released value, units, status."""

    key: dict
    value: float | None  # the true statistic (None when undefined, e.g. the mean of no units)
    released: float | None  # what is published (None when suppressed)
    n_units: int
    status: str  # "safe" | "primary" | "secondary"
    rules: tuple[str, ...]
    review: tuple[str, ...]


class CheckedTable:
    """A table checked against a policy.  Build with :func:`table`."""

    def __init__(self, *, evidence: Evidence, policy: Policy, stat: str, value: str | None,
                 unit: str | None, row_dims: list[DimSpec], col_dims: list[DimSpec],
                 prim: PrimaryResult, secondary: np.ndarray, released: np.ndarray,
                 protection: str, audit: Any, audit_json: dict, spec: dict):
        self.evidence = evidence
        self.policy = policy
        self.stat = stat
        self.value_column = value
        self.unit = unit
        self.row_dims = row_dims
        self.col_dims = col_dims
        self.primary_result = prim
        self.primary = prim.primary
        self.secondary = secondary
        self.suppressed = prim.primary | secondary
        self.released_values = released
        self.protection = protection
        self.audit = audit
        self._audit_json = audit_json
        self.spec = spec
        self._keys: list[dict] | None = None
        self._rules = prim.rules_lists()
        self._review = prim.review_lists()

    # ------------------------------------------------------------------ basics
    @property
    def structure(self):
        return self.evidence.structure

    @property
    def dimensions(self) -> list[str]:
        """Key columns, in table order (a hierarchy contributes each of its levels)."""
        return [lv for d in self.row_dims + self.col_dims for lv in d.levels]

    @property
    def keys(self) -> list[dict]:
        if self._keys is None:
            self._keys = self.evidence.key_dicts()
        return self._keys

    @property
    def status(self) -> np.ndarray:
        s = np.full(self.structure.n_cells, "safe", dtype=object)
        s[self.secondary] = "secondary"
        s[self.primary] = "primary"
        return s

    @property
    def cells(self) -> list[Cell]:
        st = self.status
        ev = self.evidence
        out = []
        for i, key in enumerate(self.keys):
            out.append(Cell(
                key=key, value=_num(ev.value[i]), released=_num(self.released_values[i]),
                n_units=int(ev.n_units[i]), status=st[i], rules=tuple(self._rules[i]),
                review=tuple(self._review[i]),
            ))
        return out

    def cell(self, **key: str) -> Cell:
        """The cell with this key; dimensions not named are ``Total``."""
        want = {d: str(key.get(d, TOTAL)) for d in self.dimensions}
        unknown = set(key) - set(self.dimensions)
        if unknown:
            raise KeyError(f"unknown dimension {sorted(unknown)[0]!r}")
        for c, k in zip(self.cells, self.keys):
            if k == want:
                return c
        raise KeyError(f"no cell {want}")

    @property
    def summary(self) -> dict:
        return {
            "cells": int(self.structure.n_cells),
            "primary": int(self.primary.sum()),
            "secondary": int(self.secondary.sum()),
            "review": int(self.primary_result.review.sum()),
        }

    @property
    def protected(self) -> bool:
        if self.audit is not None:
            return bool(self.audit.protected)
        return bool(self._audit_json.get("protected", False))

    def __repr__(self) -> str:
        s = self.summary
        dims = " x ".join(d.name for d in self.row_dims + self.col_dims)
        what = self.stat if self.value_column is None else f"{self.stat}({self.value_column})"
        return (f"<CheckedTable {what} by {dims}: {s['cells']} cells, {s['primary']} primary, "
                f"{s['secondary']} secondary, {s['review']} review; policy {self.policy.name}; "
                f"audit {'protected' if self.protected else 'NOT protected'}>")

    # ------------------------------------------------------------------ frames
    def frame(self) -> pl.DataFrame:
        """Everything, for the researcher: key columns, value, released, n_units, status, rules."""
        ev = self.evidence
        data: dict[str, Any] = {d: [k[d] for k in self.keys] for d in self.dimensions}
        data["value"] = [_num(x) for x in ev.value]
        data["released"] = [_num(x) for x in self.released_values]
        data["n_units"] = ev.n_units.tolist()
        data["status"] = self.status.tolist()
        data["rules"] = [list(r) for r in self._rules]
        data["review"] = [list(r) for r in self._review]
        return pl.DataFrame(data, schema_overrides={"value": pl.Float64, "released": pl.Float64,
                                                     "rules": pl.List(pl.Utf8), "review": pl.List(pl.Utf8)})

    def _value_name(self) -> str:
        return "count" if self.stat == "count" else f"{self.stat}_{self.value_column}"

    def to_polars(self, layout: str = "auto") -> pl.DataFrame:
        """The released form: suppressed cells null.

        ``layout="long"``: one row per cell (key columns + value); ``"wide"``: row dimensions
        down, one column per combination of the column dimensions' labels; ``"auto"`` is wide
        when the table has column dimensions.
        """
        if layout not in ("auto", "long", "wide"):
            raise TableSpecError(f"layout must be 'auto', 'long' or 'wide', not {layout!r}")
        name = self._value_name()
        vals = self.released_values
        if self.stat == "count" or (self.protection == "rounding"):
            col = pl.Series(name, [None if not math.isfinite(x) else int(round(x)) for x in vals], dtype=pl.Int64)
        else:
            col = pl.Series(name, [_num(x) for x in vals], dtype=pl.Float64)
        long = pl.DataFrame({d: [k[d] for k in self.keys] for d in self.dimensions}).with_columns(col)
        wide = layout == "wide" or (layout == "auto" and self.col_dims)
        if not wide or not self.col_dims:
            return long
        row_cols = [lv for d in self.row_dims for lv in d.levels]
        label = pl.concat_str([_dim_label(d) for d in self.col_dims], separator=" | ").alias("__col")
        out = long.with_columns(label).pivot(on="__col", index=row_cols, values=name,
                                            aggregate_function=None, maintain_order=True)
        return out

    def to_csv(self, path: str | Path | None = None, layout: str = "auto") -> str | None:
        """CSV of the released form (suppressed cells empty); returns the text when no path."""
        df = self.to_polars(layout)
        if path is None:
            return df.write_csv()
        df.write_csv(str(path))
        return None

    def to_xlsx(self, path: str | Path | io.BytesIO, layout: str = "auto") -> None:
        """XLSX of the released form (xlsxwriter): one sheet, suppressed cells blank."""
        import xlsxwriter

        df = self.to_polars(layout)
        wb = xlsxwriter.Workbook(path if not isinstance(path, Path) else str(path), {"in_memory": True})
        ws = wb.add_worksheet("table")
        bold = wb.add_format({"bold": True})
        for j, c in enumerate(df.columns):
            ws.write(0, j, c, bold)
        for j, c in enumerate(df.columns):
            col = df[c].to_list()
            for i, x in enumerate(col, start=1):
                if x is None:
                    continue
                ws.write(i, j, x)
        ws.write(len(df) + 2, 0, f"Checked with sdc, policy {self.policy.name}; "
                                 "blank cells are suppressed for confidentiality.")
        wb.close()

    # ------------------------------------------------------------------ JSON
    def to_json(self, reveal: bool = False) -> dict:
        """The stable JSON (``docs/sdc-json.md``).  ``reveal=True`` adds true values (checker only)."""
        ev = self.evidence
        st = self.status
        rounding = self.protection == "rounding"
        integral = self.stat == "count" or rounding
        cells = []
        for i, key in enumerate(self.keys):
            sup = bool(self.suppressed[i])
            rel = self.released_values[i]
            c: dict[str, Any] = {
                "key": key,
                "value": None if sup else _json_num(rel, integral),
                "n_units": None if (sup or rounding) else int(ev.n_units[i]),
                "status": st[i],
                "rules": list(self._rules[i]),
                "review": list(self._review[i]),
            }
            if reveal:
                c["true_value"] = _json_num(ev.value[i], self.stat == "count")
                c["true_n_units"] = int(ev.n_units[i])
            cells.append(c)
        out = {
            "format": JSON_FORMAT,
            "policy": self.policy.to_json(),
            "dimensions": self.dimensions,
            "rows": [lv for d in self.row_dims for lv in d.levels],
            "cols": [lv for d in self.col_dims for lv in d.levels],
            "hierarchy": {lv: parent for d in self.row_dims + self.col_dims
                          for parent, lv in zip(d.levels, d.levels[1:])},
            "stat": self.stat,
            "value": self.value_column,
            "unit": self.unit,
            "protection": self.protection,
            "cells": cells,
            "summary": self.summary,
            "audit": self._audit_json_out(reveal),
        }
        return out

    def _audit_json_out(self, reveal: bool) -> dict:
        a = dict(self._audit_json)
        if self.audit is not None:
            a = self.audit.to_json(reveal=reveal)
            keys = self.keys
            for c in a.get("cells", []):
                c["key"] = keys[c["index"]]
            for f in a.get("union_failures", []):
                f["keys"] = [keys[i] for i in f["cells"]]
            a.update({k: v for k, v in self._audit_json.items() if k not in a})
        return a

    def to_json_str(self, reveal: bool = False, indent: int | None = 1) -> str:
        return json.dumps(self.to_json(reveal=reveal), indent=indent, ensure_ascii=False, allow_nan=False)

    # ------------------------------------------------------------------ HTML
    def _repr_html_(self) -> str:
        return self.to_html()

    def to_html(self, full_page: bool = False) -> str:
        """The researcher's view: true values, unsafe cells coloured, the failed rule on hover."""
        ev = self.evidence
        st = self.status
        integral = self.stat == "count"
        tips = self._tooltips()
        rounding = self.protection == "rounding"

        def td(i: int) -> str:
            s = st[i]
            rv = self.primary_result.review[i]
            cls = {"safe": "sdc-safe", "primary": "sdc-primary", "secondary": "sdc-secondary"}[s]
            if rv and s == "safe":
                cls = "sdc-review"
            shown = self.released_values[i] if (rounding and s == "safe") else ev.value[i]
            txt = _fmt(shown, integral or rounding)
            return f'<td class="{cls}" title="{html.escape(tips[i])}">{html.escape(txt)}</td>'

        s = self.summary
        what = "count" if self.stat == "count" else f"{self.stat} of {self.value_column}"
        head = (
            f'<div class="sdc-table"><style>{_CSS}</style>'
            f"<p><b>{html.escape(what)}</b> by {html.escape(', '.join(d.name for d in self.row_dims + self.col_dims))}"
            f" &middot; policy <b>{html.escape(self.policy.name)}</b> &middot; {s['cells']} cells, "
            f"{s['primary']} primary, {s['secondary']} secondary, {s['review']} to review &middot; audit: "
            f"<b>{'protected' if self.protected else 'NOT protected'}</b></p>"
        )
        row_lv = [lv for d in self.row_dims for lv in d.levels]
        parts = [head, "<table>"]
        if self.col_dims:
            shape = self.structure.shape
            nr = len(self.row_dims)
            r_shape = shape[:nr]
            c_shape = shape[nr:]
            n_r = int(np.prod(r_shape)) if r_shape else 1
            n_c = int(np.prod(c_shape))
            labels = self.to_polars("long").with_columns(
                pl.concat_str([_dim_label(d) for d in self.col_dims], separator=" | ").alias("__c")
            )["__c"].to_list()[:n_c]
            parts.append("<thead><tr>" + "".join(f"<th>{html.escape(c)}</th>" for c in row_lv))
            parts += [f"<th>{html.escape(c)}</th>" for c in labels]
            parts.append("</tr></thead><tbody>")
            for r in range(n_r):
                key = self.keys[r * n_c]
                parts.append("<tr>" + "".join(f"<th>{html.escape(str(key[c]))}</th>" for c in row_lv))
                parts += [td(r * n_c + c) for c in range(n_c)]
                parts.append("</tr>")
        else:
            parts.append("<thead><tr>" + "".join(f"<th>{html.escape(c)}</th>" for c in row_lv)
                         + f"<th>{html.escape(what)}</th></tr></thead><tbody>")
            for i, key in enumerate(self.keys):
                parts.append("<tr>" + "".join(f"<th>{html.escape(str(key[c]))}</th>" for c in row_lv)
                             + td(i) + "</tr>")
        parts.append("</tbody></table>")
        parts.append('<p class="sdc-legend"><span class="sdc-primary">primary</span> '
                     '<span class="sdc-secondary">secondary</span> <span class="sdc-review">review</span> '
                     "&middot; hover a cell for its rules; suppressed cells are blank in the released form</p></div>")
        body = "".join(parts)
        if full_page:
            return ("<!doctype html><html><head><meta charset=\"utf-8\"><title>sdc table</title></head><body>"
                    + body + "</body></html>")
        return body

    def explanations(self) -> list[str]:
        """Per cell, in cell order, one line saying why it has its status (the HTML hover text)."""
        return self._tooltips()

    def _tooltips(self) -> list[str]:
        ev = self.evidence
        pol = self.policy
        st = self.status
        out = []
        for i in range(self.structure.n_cells):
            bits = [f"{ev.n_units[i]} units"]
            for r in self._rules[i]:
                bits.append(_rule_text(r, i, ev, pol, self.stat))
            for r in self._review[i]:
                bits.append(f"review: {_rule_text(r, i, ev, pol, self.stat)}")
            if st[i] == "secondary":
                bits.append("secondary: suppressed to protect another cell")
            if self.protection == "rounding" and st[i] == "safe":
                bits.append(f"true value {_fmt(ev.value[i], True)}, released {_fmt(self.released_values[i], True)}")
            out.append("; ".join(bits))
        return out

    def write(self, path: str | Path, fmt: str | None = None, reveal: bool = False) -> None:
        """Write as json/csv/html/xlsx (from ``fmt`` or the file's suffix)."""
        fmt = fmt or Path(path).suffix.lstrip(".").lower()
        if fmt == "json":
            Path(path).write_text(self.to_json_str(reveal=reveal) + "\n", encoding="utf-8")
        elif fmt == "csv":
            self.to_csv(path)
        elif fmt == "html":
            Path(path).write_text(self.to_html(full_page=True), encoding="utf-8")
        elif fmt == "xlsx":
            self.to_xlsx(path)
        else:
            raise TableSpecError(f"unknown format {fmt!r}; use json, csv, html or xlsx")


_CSS = (".sdc-table table{border-collapse:collapse;font-size:90%}"
        ".sdc-table td,.sdc-table th{border:1px solid #ccc;padding:2px 6px;text-align:right}"
        ".sdc-table th{background:#f3f3f3}"
        ".sdc-primary{background:#f4a3a3}.sdc-secondary{background:#f7d08a}.sdc-review{background:#fff3a0}"
        ".sdc-legend span{padding:0 6px}")


def _dim_label(d: DimSpec) -> pl.Expr:
    """A column dimension's label: the deepest non-Total level path (``R1/m1``) or ``Total``."""
    if not d.hierarchical:
        return pl.col(d.levels[0])
    parts = [pl.when(pl.col(lv) != TOTAL).then(pl.col(lv)) for lv in d.levels]
    return pl.concat_str(parts, separator="/", ignore_nulls=True).replace("", TOTAL)


def _num(x: float) -> float | None:
    x = float(x)
    return None if not math.isfinite(x) else x


def _json_num(x: float, integral: bool) -> float | int | None:
    x = float(x)
    if not math.isfinite(x):
        return None
    return int(round(x)) if integral else x


def _fmt(x: float, integral: bool) -> str:
    if not math.isfinite(float(x)):
        return "–"
    if integral or float(x).is_integer():
        return f"{float(x):,.0f}"
    return f"{float(x):,.2f}"


def _rule_text(rule: str, i: int, ev: Evidence, pol: Policy, stat: str) -> str:
    n = int(ev.n_units[i])
    if rule == "threshold":
        return f"threshold: {n} units < {pol.min_units}"
    if rule == "zeros":
        return "zeros: empty cell (zeros are disclosive)"
    if rule == "dominance":
        t = ev.total[i]
        parts = []
        for d in pol.dominance:
            share = ev.top[i, : d.n].sum() / t if t > 0 else float("nan")
            parts.append(f"largest {d.n} units hold {share:.0%} >= {d.k:.0%}")
        return "dominance: " + ", ".join(parts)
    if rule == "p_percent":
        x1 = ev.top[i, 0]
        rest = ev.total[i] - x1 - ev.top[i, 1]
        return f"p%: the rest ({rest:,.4g}) is less than {pol.p:.0%} of the largest unit ({x1:,.4g})"
    if rule == "percentile":
        return f"percentile: fewer than {pol.percentile_min_units_each_side} units on one side"
    if rule == "negatives":
        return f"negatives: {int(ev.n_negative[i])} units with a negative value (dominance and p% undefined)"
    if rule == "missing":
        return f"missing: {int(ev.n_missing[i])} units with a missing value"
    return rule


# ---------------------------------------------------------------------------- main entry
def table(
    source: Any,
    rows: str | Sequence[str],
    cols: str | Sequence[str] = (),
    value: str | None = None,
    stat: str = "count",
    unit: str | None = None,
    hierarchy: Mapping[str, str] | Sequence[str] | None = None,
    policy: str | Path | Mapping | Policy = "acro",
    con: duckdb.DuckDBPyConnection | None = None,
) -> CheckedTable:
    """Compute a table with all margins and check it against a policy.

    ``source``: a SQL query (run on ``con``), a Parquet path/glob (or CSV), a pyarrow Table, a
    polars DataFrame or a DuckDB relation.  ``rows``/``cols``: dimension columns.  ``stat``:
    ``count`` (of units), ``sum``, ``mean``, and where the policy allows, ``median``, ``pNN``
    (p1..p99), ``min``, ``max``.  ``unit``: the unit id column; rows are summed per unit within a
    cell first (no unit: each row is a unit).  ``hierarchy``: ``{child: parent}`` (or
    ``["child:parent"]``); subtotals become cells.  Raises :class:`sdc.errors.SdcError` with one
    clear line for bad input.
    """
    pol = load_policy(policy)
    row_l = _as_list(rows, "rows")
    col_l = _as_list(cols, "cols")
    hier = _parse_hierarchy(hierarchy)
    if not isinstance(stat, str):
        raise TableSpecError(f"stat must be a string, not {type(stat).__name__}")
    stat = stat.strip().lower()
    kind = stat_kind(stat)
    if kind not in STATS:
        raise TableSpecError(f"unknown statistic {stat!r}; use count, sum, mean, median, pNN, min or max")
    try:
        q = percentile_q(stat)
    except ValueError as e:
        raise TableSpecError(str(e)) from None
    if not pol.allows(stat):
        extra = " (a minimum or maximum is a single unit's value)" if kind in ("min", "max") else ""
        raise TableSpecError(
            f"policy {pol.name!r} does not allow stat {stat!r}{extra}; allowed: {', '.join(pol.allowed_stats)}"
        )
    if kind == "count" and value is not None:
        raise TableSpecError("stat 'count' counts units and takes no value column; use stat 'sum' to add a value")
    if kind != "count" and not value:
        raise TableSpecError(f"stat {stat!r} needs a value column")
    row_dims, col_dims = _dimensions(row_l, col_l, hier)
    dims = row_dims + col_dims

    src = resolve_source(source, con)
    columns = src.columns
    needed = [lv for d in dims for lv in d.levels] + ([value] if value else []) + ([unit] if unit else [])
    for c in needed:
        if c not in columns:
            shown = ", ".join(columns[:30]) + (", ..." if len(columns) > 30 else "")
            raise SourceError(f"unknown column {c!r}; the source has: {shown}")
    if value:
        typ = src.column_type(value)
        if not typ.upper().startswith(_NUMERIC):
            raise SourceError(f"value column {value!r} must be numeric, it is {typ}")
        if value in [lv for d in dims for lv in d.levels]:
            raise TableSpecError(f"column {value!r} cannot be both a dimension and the value")
    if unit and unit in [lv for d in dims for lv in d.levels]:
        raise TableSpecError(f"column {unit!r} cannot be both a dimension and the unit")

    ev = compute_evidence(src, dims, value=value, stat=stat, unit=unit, top_k=pol.top_k, quantile=q)

    protect_values = ev.total if kind in ("sum", "mean") else ev.n_units.astype(float)
    prim = primary_rules(pol, stat, n_units=ev.n_units, total=ev.total, top=ev.top if kind != "count" else None,
                         n_negative=ev.n_negative, n_missing=ev.n_missing, value=protect_values)
    secondary = np.zeros(ev.n_cells, bool)
    released = ev.value.astype(float).copy()
    audit_res = None
    if pol.rounds and kind in pol.rounding_stats:
        protection = "rounding"
        released, audit_json = _round(ev, prim, pol)
    else:
        protection = "suppression"
        secondary, audit_res, audit_json = _protect(ev, prim, pol, stat, protect_values)
        released[prim.primary | secondary] = np.nan

    spec = {
        "version": 1,
        "source": ({"sql": src.sql} if src.kind == "sql" else
                   {"path": src.path} if src.kind in ("parquet", "csv") else {"kind": src.kind}),
        "rows": row_l, "cols": col_l, "value": value, "stat": stat, "unit": unit,
        "hierarchy": dict(hier), "policy": pol.name,
    }
    return CheckedTable(evidence=ev, policy=pol, stat=stat, value=value, unit=unit, row_dims=row_dims,
                        col_dims=col_dims, prim=prim, secondary=secondary, released=released,
                        protection=protection, audit=audit_res, audit_json=audit_json, spec=spec)


def _round(ev: Evidence, prim: PrimaryResult, pol: Policy) -> tuple[np.ndarray, dict]:
    """OpenSAFELY style: redact unsafe inner cells, round the rest, margins = sums of the published."""
    s = ev.structure
    base = float(pol.rounding_base)
    inner = s.inner_index
    v = np.nan_to_num(ev.value[inner].astype(float))
    rounded = np.floor(v / base + 0.5) * base
    rounded[prim.primary[inner]] = 0.0
    released = s.aggregate(rounded)
    released[prim.primary] = np.nan
    note = ("unsafe inner cells are redacted and count as 0; every other inner cell is rounded to the "
            f"nearest {pol.rounding_base}; every margin is the sum of the published inner cells, so no "
            "published relation involves a redacted cell")
    return released, {"protected": True, "method": "rounding", "base": pol.rounding_base, "note": note}


def _protect(ev: Evidence, prim: PrimaryResult, pol: Policy, stat: str, values: np.ndarray):
    """Secondary suppression + audit on the additive table behind the statistic."""
    kind = stat_kind(stat)
    s = ev.structure
    basis = "sum" if kind in ("sum", "mean") else "count"
    info: dict[str, Any] = {"basis": basis}
    if kind in ("mean",):
        info["note"] = "the pattern is computed and audited on the sums behind the means"
    elif kind not in ("count", "sum"):
        info["note"] = (f"{stat} is not additive; the pattern protects the published unit counts "
                        "and is audited on them")
    if not prim.primary.any():
        return np.zeros(s.n_cells, bool), None, {"protected": True, "method": "none needed", **info,
                                                 "n_suppressed": 0, "cells": []}
    if (values < 0).any():
        return np.zeros(s.n_cells, bool), None, {
            "protected": False, "method": "not available", **info,
            "note": "the table has negative cells; secondary suppression and the audit assume "
                    "non-negative cells; a checker must review it", "cells": []}
    top = ev.top if kind in ("sum", "mean") else None

    def union_is_unsafe(idx: np.ndarray) -> bool:
        return union_unsafe(pol, basis, idx, n_units=ev.n_units, total=values, top=top,
                            n_negative=ev.n_negative)

    if pol.secondary_method == "none":
        from sdc.audit import audit

        secondary = np.zeros(s.n_cells, bool)
        res = audit(s, values, prim.primary, prim.primary, n_units=ev.n_units,
                    lower=prim.lower, upper=prim.upper, union_is_unsafe=union_is_unsafe)
        info["secondary"] = {"method": "none"}
        return secondary, res, info
    from sdc.suppress import suppress

    try:
        r = suppress(s, values, prim.primary, n_units=ev.n_units, lower=prim.lower, upper=prim.upper,
                     union_is_unsafe=union_is_unsafe, method=pol.secondary_method)
    except ValueError as e:  # e.g. an unknown method named in a policy file
        raise TableSpecError(f"secondary suppression: {e}") from None
    secondary = np.asarray(r.secondary, dtype=bool) & ~prim.primary
    info["secondary"] = {"method": r.method, "seconds": round(float(r.seconds), 3),
                         "rounds": int(r.rounds), "repairs": int(r.repairs)}
    res = r.audit
    if res is None:  # pragma: no cover - suppress() audits by default
        from sdc.audit import audit

        res = audit(s, values, prim.primary | secondary, prim.primary, n_units=ev.n_units,
                    lower=prim.lower, upper=prim.upper, union_is_unsafe=union_is_unsafe)
    return secondary, res, info


def table_from_spec(spec: Mapping[str, Any], con: duckdb.DuckDBPyConnection | None = None,
                    policy: str | Path | Mapping | Policy | None = None) -> CheckedTable:
    """Recompute a table from its :attr:`CheckedTable.spec` (what the airlock does).

    Only a SQL or file source can be recomputed; ``policy`` overrides the spec's policy name
    (the airlock uses the project's policy, not the researcher's claim).
    """
    if not isinstance(spec, Mapping):
        raise TableSpecError("a table spec must be a dict")
    known = {"version", "source", "rows", "cols", "value", "stat", "unit", "hierarchy", "policy"}
    unknown = sorted(set(spec) - known)
    if unknown:
        raise TableSpecError(f"unknown key {unknown[0]!r} in table spec")
    if spec.get("version", 1) != 1:
        raise TableSpecError(f"unsupported table spec version {spec.get('version')!r}")
    src = spec.get("source") or {}
    if not isinstance(src, Mapping):
        raise TableSpecError("spec 'source' must be a dict with 'sql' or 'path'")
    if "sql" in src:
        source: Any = src["sql"]
    elif "path" in src:
        source = src["path"]
    else:
        raise TableSpecError("spec source has no 'sql' or 'path': this table cannot be recomputed")
    if "rows" not in spec:
        raise TableSpecError("spec has no 'rows'")
    return table(source, rows=spec["rows"], cols=spec.get("cols") or (), value=spec.get("value"),
                 stat=spec.get("stat", "count"), unit=spec.get("unit"), hierarchy=spec.get("hierarchy") or None,
                 policy=policy if policy is not None else spec.get("policy", "acro"), con=con)
