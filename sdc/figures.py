"""Checked figures: ``sdc.figure(...)`` -> aggregates by DuckDB, checked, drawn from the checked
aggregates only (matplotlib, Agg).

>>> f = sdc.figure("people.parquet", "histogram", x="income", unit="person_id", policy="acro")
>>> f.files()            # {"figure.png": ..., "figure.csv": ...}: the exact bytes to release
>>> f.to_json()          # docs/sdc-figures-models.md

Kinds (``kind=``) and what a cell is:

``histogram``       a bin of ``x`` (units per bin).  Edges are "nice" round numbers over a *safe
                    range* (from the k-th smallest to the k-th largest unit value, k = the
                    threshold), never the raw minimum/maximum; the two outer bins are open-ended
                    (everything below the second edge / from the last inner edge up), so the last
                    bin always counts the maximum.  Failing bins are merged with their smaller
                    neighbour (``on_fail="merge"``, default) or suppressed (``"suppress"``, with
                    the table engine's secondary suppression against the total).
``bar``             a category of ``x`` (and of ``by``: grouped bars): a table drawn
                    (:func:`sdc.table` with ``rows=x, cols=by``, ``stat=`` count/sum/mean of ``y``).
``line``            a point of ``x`` (time) per ``by`` series: a table drawn; suppressed points
                    break the line.
``box``             per ``by`` group the whisker-low, q1, median, q3, whisker-high percentiles
                    (``figures.whiskers``); no minimum, maximum or outlier is ever drawn.  Each
                    percentile needs the threshold and ``n*min(q,1-q) >= figures.box_min_units_each_side``.
``binned_scatter``  (``hexbin``) a rectangle of an ``x`` by ``y`` grid (safe ranges, open outer
                    bins); failing rectangles are not drawn.  A raw ``scatter`` is refused.
``km``              Kaplan-Meier of time ``x`` and event ``y`` (1 = event, 0 = censored), per
                    ``by`` group, on a time grid; steps are pooled until
                    ``figures.survival_min_left`` units have left the risk set (as ACRO), and the
                    survival at each pooled step is computed from the released counts only.
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

import duckdb
import numpy as np
import polars as pl

from sdc.errors import SdcError, SourceError
from sdc.evidence import TOTAL, _NUMERIC, _first_line, _q, resolve_source
from sdc.policy import Policy, load_policy
from sdc.rules import threshold_rule, zeros_rule

__all__ = ["figure", "figure_from_spec", "CheckedFigure", "FigureSpecError", "nice_edges", "merge_bins",
           "pool_survival", "JSON_FORMAT", "KINDS"]

JSON_FORMAT = "sdc-figure/1"
KINDS = ("histogram", "bar", "line", "box", "binned_scatter", "km")
_ALIASES = {"hist": "histogram", "grouped_bar": "bar", "barh": "bar", "hexbin": "binned_scatter",
            "binned": "binned_scatter", "kaplan_meier": "km", "survival": "km", "boxplot": "box"}
_OPTIONS = {
    "histogram": {"bins", "edges", "range", "on_fail", "title"},
    "bar": {"stat", "title"},
    "line": {"stat", "title"},
    "box": {"whiskers", "title"},
    "binned_scatter": {"bins", "x_range", "y_range", "title"},
    "km": {"bins", "step", "range", "title"},
}


class FigureSpecError(SdcError):
    """Figure arguments that do not fit together (kind, columns, options, policy)."""


# ---------------------------------------------------------------------------- pure helpers
def nice_step(raw: float) -> float:
    """The smallest 1, 2, 2.5 or 5 times a power of ten that is >= ``raw`` (> 0)."""
    if not raw > 0 or not math.isfinite(raw):
        return 1.0
    e = math.floor(math.log10(raw))
    for m in (1, 2, 2.5, 5, 10):
        s = m * 10.0 ** e
        if s >= raw * (1 - 1e-12):
            return float(f"{s:.12g}")
    return 10.0 ** (e + 1)  # pragma: no cover


def nice_edges(lo: float, hi: float, bins: int) -> np.ndarray:
    """Round edges covering ``[lo, hi]`` with about ``bins`` bins of a nice width."""
    bins = max(int(bins), 1)
    if not (math.isfinite(lo) and math.isfinite(hi)):
        raise FigureSpecError("the range of the data is not finite")
    if hi < lo:
        lo, hi = hi, lo
    step = nice_step((hi - lo) / bins) if hi > lo else nice_step(abs(lo) / 10 or 1.0)
    e0 = math.floor(lo / step + 1e-9) * step
    en = math.ceil(hi / step - 1e-9) * step
    if en <= e0:
        en = e0 + step
    nb = max(int(round((en - e0) / step)), 1)
    return np.array([float(f"{e0 + i * step:.12g}") for i in range(nb + 1)])


def merge_bins(n: np.ndarray, failing: Callable[[np.ndarray], np.ndarray]) -> list[tuple[int, int]]:
    """Merge failing bins with a neighbour until none fails (or one bin is left).

    ``n``: units per bin (assumed additive); ``failing(counts) -> mask``.  Repeatedly takes the
    failing bin with the fewest units (leftmost on a tie) and merges it with its smaller neighbour
    (left on a tie).  Returns the merged groups as ``(first, last)`` bin index ranges, in order.
    A loop over bins, never over rows.
    """
    groups = [(i, i) for i in range(len(n))]
    counts = [int(x) for x in n]
    while len(groups) > 1:
        fail = failing(np.array(counts))
        if not fail.any():
            break
        cand = np.flatnonzero(fail)
        i = int(cand[np.argmin(np.array(counts)[cand])])
        if i == 0:
            j = 1
        elif i == len(groups) - 1:
            j = i - 1
        else:
            j = i - 1 if counts[i - 1] <= counts[i + 1] else i + 1
        a, b = min(i, j), max(i, j)
        groups[a] = (groups[a][0], groups[b][1])
        counts[a] += counts[b]
        del groups[b], counts[b]
    return groups


def pool_survival(left: np.ndarray, events: np.ndarray, k: int) -> list[tuple[int, int]]:
    """Pool consecutive time bins until at least ``k`` units have left the risk set.

    ``left[i]``: units leaving (event or censored) in time bin ``i``.  Greedy from the start, as
    ACRO does; a last pool with fewer than ``k`` leaving is merged into the one before.  Bins in
    which nobody leaves are absorbed.  Returns ``(first, last)`` bin ranges.  One search per
    released step, not per unit.
    """
    del events
    cum = np.cumsum(np.asarray(left, dtype=np.int64))
    pools: list[tuple[int, int]] = []
    start, before = 0, 0
    total = int(cum[-1]) if len(cum) else 0
    while start < len(cum) and before < total:
        end = int(np.searchsorted(cum, before + k, side="left"))
        if end >= len(cum):
            end = len(cum) - 1
        pools.append((start, end))
        before = int(cum[end])
        start = end + 1
    if len(pools) > 1:
        a, b = pools[-1]
        prev_end = int(cum[pools[-2][1]])
        if int(cum[b]) - prev_end < k:
            pools[-2] = (pools[-2][0], b)
            pools.pop()
    return pools


def _fmt_edge(x: float) -> str:
    return f"{x:.6g}"


# ---------------------------------------------------------------------------- result
@dataclass
class _Built:
    columns: list[str]  # CSV columns: key columns then value columns
    cells: list[dict]  # key, value (true), n_units, status, rules, reason, secret (checker-only text)
    value_columns: list[str]
    options: dict
    notes: list[str] = field(default_factory=list)
    merged: int = 0


class CheckedFigure:
    """A figure whose aggregates were checked against a policy; drawn from the released cells."""

    def __init__(self, *, kind: str, built: _Built, policy: Policy, x, y, by, unit, spec: dict):
        self.kind = kind
        self.policy = policy
        self.x, self.y, self.by, self.unit = x, y, by, unit
        self.spec = spec
        self._b = built
        self._png: bytes | None = None

    # ------------------------------------------------------------------ state
    @property
    def cells(self) -> list[dict]:
        """Every cell with its true numbers (checker's view; never released as such)."""
        return self._b.cells

    @property
    def released(self) -> list[dict]:
        """The released aggregate: one row per cell, suppressed values ``None``.  The PNG is drawn
        from exactly these rows."""
        out = []
        for c in self._b.cells:
            row = dict(c["key"])
            sup = c["status"] != "safe"
            for col in self._b.value_columns:
                row[col] = None if sup else c["values"][col]
            row["status"] = c["status"]
            out.append(row)
        return out

    @property
    def failed(self) -> list[dict]:
        return [{"key": c["key"], "status": c["status"], "rules": c["rules"], "reason": c["reason"]}
                for c in self._b.cells if c["status"] != "safe"] + [
            {"key": m["key"], "status": "merged", "rules": m["rules"], "reason": m["reason"]}
            for m in self._b.options.get("_merged_failures", [])]

    @property
    def summary(self) -> dict:
        st = [c["status"] for c in self._b.cells]
        return {"cells": len(st), "safe": st.count("safe"), "primary": st.count("primary"),
                "secondary": st.count("secondary"), "merged": self._b.merged}

    @property
    def status(self) -> str:
        s = self.summary
        if s["safe"] == 0:
            return "refused"
        if s["primary"] or s["secondary"] or s["merged"]:
            return "protected"
        return "pass"

    @property
    def ok(self) -> bool:
        return self.status != "refused"

    def __repr__(self) -> str:
        s = self.summary
        return (f"<CheckedFigure {self.kind} of {self.x}: {s['cells']} cells, {s['primary']} primary, "
                f"{s['secondary']} secondary, {s['merged']} merged; {self.status}; policy {self.policy.name}>")

    # ------------------------------------------------------------------ outputs
    def to_json(self, reveal: bool = False) -> dict:
        cells = []
        for c in self._b.cells:
            sup = c["status"] != "safe"
            d = {"key": c["key"],
                 "value": None if sup else c["values"][self._b.value_columns[0]],
                 "values": {k: (None if sup else v) for k, v in c["values"].items()},
                 "n_units": None if sup else c["n_units"], "status": c["status"], "rules": c["rules"]}
            if reveal:
                d["true_values"] = c["values"]
                d["true_n_units"] = c["n_units"]
                d["why"] = c.get("secret") or c["reason"]
            cells.append(d)
        opts = {k: v for k, v in self._b.options.items() if not k.startswith("_")}
        return {"format": JSON_FORMAT, "kind": "figure", "figure": self.kind, "ok": self.ok,
                "status": self.status, "policy": self.policy.to_json(), "x": self.x, "y": self.y,
                "by": self.by, "unit": self.unit, "options": opts, "columns": self._b.columns,
                "cells": cells, "failed": self.failed, "summary": self.summary, "notes": self._b.notes}

    def to_csv(self) -> str:
        """The released aggregate behind the figure (suppressed values empty)."""
        rows = self.released
        cols = self._b.columns
        lines = [",".join(cols)]
        for r in rows:
            lines.append(",".join(_csv_field(_csv(r.get(c))) for c in cols))
        return "\n".join(lines) + "\n"

    def png(self) -> bytes:
        if self._png is None:
            self._png = _render(self)
        return self._png

    def files(self) -> dict[str, bytes]:
        """The exact bytes to release: ``figure.png`` and ``figure.csv``."""
        return {"figure.png": self.png(), "figure.csv": self.to_csv().encode("utf-8")}

    def to_html(self) -> str:
        """A checker's view: the PNG inline and every cell with its true numbers and why."""
        uri = "data:image/png;base64," + base64.b64encode(self.png()).decode("ascii")
        vc = self._b.value_columns
        keys = [c for c in self._b.columns if c not in vc]
        head = "".join(f"<th>{html.escape(c)}</th>" for c in keys + vc + ["n_units", "status", "why"])
        rows = []
        for c in self._b.cells:
            cls = {"safe": "", "primary": ' style="background:#f4a3a3"', "secondary": ' style="background:#f7d08a"'}[c["status"]]
            tds = "".join(f"<td>{html.escape(_csv(c['key'].get(k)))}</td>" for k in keys)
            tds += "".join(f"<td{cls}>{html.escape(_csv(c['values'][v]))}</td>" for v in vc)
            tds += (f"<td>{c['n_units']}</td><td>{c['status']}</td>"
                    f"<td>{html.escape(c.get('secret') or c['reason'] or '')}</td>")
            rows.append(f"<tr>{tds}</tr>")
        merged = "".join(f"<li>{html.escape(json.dumps(m['key']))}: {html.escape(m['secret'])}</li>"
                         for m in self._b.options.get("_merged_failures", []))
        s = self.summary
        return (f'<div class="sdc-figure"><p><b>{html.escape(self.kind)}</b> &middot; policy '
                f"<b>{html.escape(self.policy.name)}</b> &middot; {self.status} &middot; {s['cells']} cells, "
                f"{s['primary']} primary, {s['secondary']} secondary, {s['merged']} merged</p>"
                f'<img alt="{html.escape(self.kind)}" src="{uri}"/>'
                + (f"<p>merged before drawing:</p><ul>{merged}</ul>" if merged else "")
                + "".join(f"<p>{html.escape(n)}</p>" for n in self._b.notes)
                + f'<table border="1"><tr>{head}</tr>{"".join(rows)}</table></div>')

    def _repr_html_(self) -> str:
        return self.to_html()


def _csv(x: Any) -> str:
    if x is None:
        return ""
    if isinstance(x, bool):
        return str(x).lower()
    if isinstance(x, float):
        return "" if not math.isfinite(x) else repr(x)
    return str(x)


def _csv_field(s: str) -> str:
    return '"' + s.replace('"', '""') + '"' if any(ch in s for ch in ',"\n') else s


# ---------------------------------------------------------------------------- drawing
_RC = {"figure.figsize": (6.4, 4.0), "figure.dpi": 100, "savefig.dpi": 100, "font.family": "DejaVu Sans",
       "font.size": 9, "axes.grid": False, "path.simplify": True, "svg.hashsalt": "sdc"}


def _render(f: CheckedFigure) -> bytes:
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    import matplotlib.style

    with matplotlib.style.context("default"), matplotlib.rc_context(_RC):
        fig = Figure()
        FigureCanvasAgg(fig)
        ax = fig.add_subplot(1, 1, 1)
        rows = f.released  # the checked aggregate only
        _DRAW[f.kind](ax, rows, f)
        title = f._b.options.get("title")
        if title:
            ax.set_title(str(title))
        fig.text(0.99, 0.01, f"checked with sdc, policy {f.policy.name}", ha="right", va="bottom",
                 fontsize=6, color="#777777")
        fig.tight_layout()
        buf = io.BytesIO()
        fig.savefig(buf, format="png", metadata={"Software": None})
    return buf.getvalue()


def _draw_histogram(ax, rows, f):
    lo = [r["lower_edge"] for r in rows]
    hi = [r["upper_edge"] for r in rows]
    drawn = []
    for r, a, b in zip(rows, lo, hi):
        if r["count"] is None:
            ax.axvspan(a, b, color="#dddddd", alpha=0.5, lw=0)
            continue
        hatch = "//" if (r["lower"] is None or r["upper"] is None) else None
        ax.bar(a, r["count"], width=b - a, align="edge", color="#4c72b0", edgecolor="white", hatch=hatch)
        drawn.append((a, b, r["count"]))
    f._drawn = drawn
    ax.set_xlabel(f.x + ("  (hatched: open-ended outer bins)" if any(h for h in lo) else ""))
    ax.set_ylabel("units")


def _draw_bar(ax, rows, f):
    stat = f._b.options.get("stat", "count")
    xs = sorted({r[f.x] for r in rows}, key=lambda v: rows_order(rows, f.x).index(v))
    groups = rows_order(rows, f.by) if f.by else [None]
    width = 0.8 / len(groups)
    drawn = []
    for gi, g in enumerate(groups):
        vals = []
        for xv in xs:
            r = next((r for r in rows if r[f.x] == xv and (g is None or r[f.by] == g)), None)
            vals.append(np.nan if r is None or r["value"] is None else r["value"])
        pos = np.arange(len(xs)) + (gi - (len(groups) - 1) / 2) * width
        ax.bar(pos, np.nan_to_num(vals), width=width, label=None if g is None else str(g))
        drawn += [(xv, g, v) for xv, v in zip(xs, vals) if not np.isnan(v)]
        for p, v in zip(pos, vals):
            if np.isnan(v):
                ax.text(p, 0, "x", ha="center", va="bottom", fontsize=7, color="#aa0000")
    f._drawn = drawn
    ax.set_xticks(np.arange(len(xs)), [str(v) for v in xs], rotation=45 if len(xs) > 8 else 0)
    ax.set_xlabel(f.x)
    ax.set_ylabel(stat if f.y is None else f"{stat} of {f.y}")
    if f.by:
        ax.legend(title=f.by, fontsize=7)


def rows_order(rows, col):
    seen = []
    for r in rows:
        if r[col] not in seen:
            seen.append(r[col])
    return seen


def _draw_line(ax, rows, f):
    stat = f._b.options.get("stat", "count")
    xs = rows_order(rows, f.x)
    numeric = all(_is_number(v) for v in xs)
    xpos = [float(v) for v in xs] if numeric else list(range(len(xs)))
    groups = rows_order(rows, f.by) if f.by else [None]
    drawn = []
    for g in groups:
        ys = []
        for xv in xs:
            r = next((r for r in rows if r[f.x] == xv and (g is None or r[f.by] == g)), None)
            ys.append(np.nan if r is None or r["value"] is None else r["value"])
        ax.plot(xpos, ys, marker="o", ms=3, label=None if g is None else str(g))
        drawn += [(xv, g, v) for xv, v in zip(xs, ys) if not np.isnan(v)]
    f._drawn = drawn
    if not numeric:
        ax.set_xticks(xpos, [str(v) for v in xs], rotation=45 if len(xs) > 8 else 0)
    ax.set_xlabel(f.x)
    ax.set_ylabel(stat if f.y is None else f"{stat} of {f.y}")
    if f.by:
        ax.legend(title=f.by, fontsize=7)


def _is_number(v) -> bool:
    try:
        float(v)
        return True
    except (TypeError, ValueError):
        return False


def _draw_box(ax, rows, f):
    lo, hi = f._b.options["whiskers"]
    names = [f"p{lo}", "p25", "median", "p75", f"p{hi}"]
    groups = rows_order(rows, "group")
    stats = []
    labels = []
    for g in groups:
        vals = {r["stat"]: r["value"] for r in rows if r["group"] == g}
        if any(vals.get(s) is None for s in ("p25", "median", "p75")):
            continue
        stats.append({"med": vals["median"], "q1": vals["p25"], "q3": vals["p75"],
                      "whislo": vals[names[0]] if vals.get(names[0]) is not None else vals["p25"],
                      "whishi": vals[names[4]] if vals.get(names[4]) is not None else vals["p75"],
                      "fliers": [], "label": str(g)})
        labels.append(str(g))
    f._drawn = stats
    if stats:
        ax.bxp(stats, showfliers=False)
    ax.set_ylabel(f.y)
    ax.set_xlabel((f.by or "") + f"  (whiskers p{lo}-p{hi}; no extremes or outliers shown)")
    missing = [str(g) for g in groups if str(g) not in labels]
    if missing:
        ax.text(0.01, 0.99, "suppressed: " + ", ".join(missing), transform=ax.transAxes, va="top", fontsize=7)


def _draw_binned(ax, rows, f):
    xe = f._b.options["x_edges"]
    ye = f._b.options["y_edges"]
    grid = np.full((len(ye) - 1, len(xe) - 1), np.nan)
    for r in rows:
        if r["count"] is not None:
            grid[r["y_bin"], r["x_bin"]] = r["count"]
    f._drawn = grid
    m = np.ma.masked_invalid(grid)
    pc = ax.pcolormesh(np.array(xe), np.array(ye), m, cmap="viridis", shading="flat")
    ax.figure.colorbar(pc, ax=ax, label="units")
    ax.set_xlabel(f.x + " (outer bins open-ended)")
    ax.set_ylabel(f.y)


def _draw_km(ax, rows, f):
    groups = rows_order(rows, "group")
    drawn = []
    for g in groups:
        rs = [r for r in rows if r["group"] == g]
        if any(r["survival"] is None for r in rs):
            continue
        t = [rs[0]["t_start"]]
        s = [1.0]
        for r in rs:
            t.append(r["t_end"])
            s.append(r["survival"])
        ax.step(t, s, where="post", label=None if g == TOTAL else str(g))
        drawn.append((g, t, s))
    f._drawn = drawn
    ax.set_ylim(0, 1.02)
    ax.set_xlabel(f"{f.x} (steps pooled until {f.policy.survival_pool} units left the risk set)")
    ax.set_ylabel("survival")
    if len(groups) > 1:
        ax.legend(title=f.by, fontsize=7)


_DRAW = {"histogram": _draw_histogram, "bar": _draw_bar, "line": _draw_line, "box": _draw_box,
         "binned_scatter": _draw_binned, "km": _draw_km}


# ---------------------------------------------------------------------------- builders
def _reason(rules: list[str], n: int, pol: Policy, extra: str = "") -> tuple[str, str]:
    """(public reason without numbers, checker's reason with them)."""
    pub, sec = [], []
    for r in rules:
        if r == "threshold":
            pub.append(f"threshold: fewer than {pol.min_units} units")
            sec.append(f"threshold: {n} units < {pol.min_units}")
        elif r == "zeros":
            pub.append("zeros: empty (zeros are disclosive)")
            sec.append("zeros: no units")
        elif r == "percentile":
            pub.append("percentile: too few units on one side")
            sec.append(f"percentile: {n} units, too few on one side{extra}")
        else:
            pub.append(r)
            sec.append(r)
    return "; ".join(pub), "; ".join(sec)


def _count_fail(pol: Policy, n: np.ndarray) -> dict[str, np.ndarray]:
    masks = {}
    if pol.min_units is not None:
        masks["threshold"] = threshold_rule(n, pol.min_units, pol.zeros_disclosive)
    if pol.zeros_disclosive:
        masks["zeros"] = zeros_rule(n)
    return masks


def _rules_at(masks: dict[str, np.ndarray], i: int) -> list[str]:
    return [r for r, m in masks.items() if m[i]]


def _safe_range(rel, col: str, k: int, where: str = "") -> tuple[int, float, float]:
    """Units with a value, and the k-th smallest / k-th largest value (never the raw extremes)."""
    k = max(int(k), 1)
    c = f"CAST({_q(col)} AS DOUBLE)"
    sql = (f"SELECT count({c}), list_sort(min({c}, {k}))[-1], list_sort(max({c}, {k}))[1] "
           f"FROM __s WHERE {c} IS NOT NULL AND NOT isnan({c}) {where}")
    try:
        n, lo, hi = rel.query("__s", sql).fetchall()[0]
    except duckdb.Error as e:
        raise SourceError(f"the figure query failed: {_first_line(e)}") from None
    if not n:
        raise FigureSpecError(f"column {col!r} has no values")
    if lo is None or hi is None:
        lo = hi = 0.0
    if lo > hi:  # fewer than 2k values: the k-th from each end cross
        lo = hi = (lo + hi) / 2
    return int(n), float(lo), float(hi)


def _bin_case(col: str, edges: Sequence[float]) -> str:
    """Bin index 0..len(edges)-2; outer bins open-ended; no float arithmetic at the edges."""
    c = f"CAST({_q(col)} AS DOUBLE)"
    inner = list(edges[1:-1])
    if not inner:
        return "0"
    e = np.asarray(edges, dtype=float)
    step = float(e[1] - e[0])
    if len(inner) > 64 and np.allclose(np.diff(e), step, rtol=1e-9, atol=0):
        # an equal-width grid with many bins: arithmetic, then a correction so that a value equal
        # to an edge lands in the bin that starts there (no float drift at the edges)
        nb = len(e) - 1
        e0 = float(e[0])
        raw = f"least(greatest(floor(({c} - {e0!r}) / {step!r}), 0), {nb - 1})::BIGINT"
        b = f"({raw})"
        return (f"({b} + CASE WHEN {b} < {nb - 1} AND {c} >= {e0!r} + ({b} + 1) * {step!r} THEN 1 "
                f"WHEN {b} > 0 AND {c} < {e0!r} + {b} * {step!r} THEN -1 ELSE 0 END)")
    parts = " ".join(f"WHEN {c} < {float(x)!r} THEN {i}" for i, x in enumerate(inner))
    return f"(CASE {parts} ELSE {len(inner)} END)"


def _table_cells(rel_sql: str, src, rows: str, unit: str | None, pol: Policy):
    from sdc.table import table as _table

    rel = src.relation.query("__fig_src", rel_sql)
    return _table(rel, rows=rows, unit=unit, policy=pol, stat="count")


def _edges_from(options: Mapping, rel, col: str, pol: Policy, bins_default: int, prefix="") -> tuple[np.ndarray, int]:
    k = pol.min_units or 1
    n, lo, hi = _safe_range(rel, col, k)
    if options.get(prefix + "edges") is not None:
        e = np.asarray(options[prefix + "edges"], dtype=float)
        if e.ndim != 1 or len(e) < 2 or not np.all(np.diff(e) > 0) or not np.all(np.isfinite(e)):
            raise FigureSpecError("edges must be at least two increasing finite numbers")
        return e, n
    rng = options.get(prefix + "range")
    if rng is not None:
        if not isinstance(rng, (list, tuple)) or len(rng) != 2:
            raise FigureSpecError(f"{prefix}range must be [low, high]")
        lo, hi = float(rng[0]), float(rng[1])
    bins = options.get("bins", bins_default)
    if isinstance(bins, (list, tuple)):
        bins = bins[0 if prefix == "x_" else 1] if prefix else bins[0]
    if isinstance(bins, bool) or not isinstance(bins, int) or not 1 <= bins <= 500:
        raise FigureSpecError(f"bins must be an integer between 1 and 500, got {bins!r}")
    return nice_edges(lo, hi, bins), n


def _build_histogram(src, pol: Policy, x: str, unit: str | None, options: dict) -> _Built:
    on_fail = options.get("on_fail", "merge")
    if on_fail not in ("merge", "suppress"):
        raise FigureSpecError(f"on_fail must be 'merge' or 'suppress', not {on_fail!r}")
    edges, _ = _edges_from(options, src.relation, x, pol, 10)
    c = f"CAST({_q(x)} AS DOUBLE)"
    u = f", {_q(unit)} AS __u" if unit else ""
    where = f"WHERE {c} IS NOT NULL AND NOT isnan({c})"

    def run(e):
        t = _table_cells(f"SELECT {_bin_case(x, e)} AS __bin{u} FROM __fig_src {where}", src, "__bin",
                         "__u" if unit else None, pol)
        nb = len(e) - 1
        n = np.zeros(nb, dtype=np.int64)
        status = np.array(["safe"] * nb, dtype=object)
        rules: list[list[str]] = [[] for _ in range(nb)]
        rl = t.primary_result.rules_lists()
        st = t.status
        seen = np.zeros(nb, bool)
        for i, key in enumerate(t.keys):
            if key["__bin"] == TOTAL:
                continue
            b = int(key["__bin"])
            seen[b] = True
            n[b] = int(t.evidence.n_units[i])
            status[b] = st[i]
            rules[b] = list(rl[i])
        # bins with no units are not cells of the engine's table: the zero rule applies here
        empty = ~seen
        if empty.any():
            m = _count_fail(pol, np.where(empty, 0, 1))
            for b in np.flatnonzero(empty):
                rs = _rules_at(m, b)
                rules[b] = rs
                status[b] = "primary" if rs else "safe"
        return n, status, rules

    n, status, rules = run(edges)
    merged_fail = []
    n_merged = 0
    if on_fail == "merge" and (status != "safe").any():
        failing = lambda cnt: np.logical_or.reduce(list(_count_fail(pol, cnt).values()) or [np.zeros(len(cnt), bool)])
        groups = merge_bins(n, failing)
        for b in np.flatnonzero(status == "primary"):
            pub, sec = _reason(rules[b], int(n[b]), pol)
            merged_fail.append({"key": {"bin": _bin_label(edges, int(b))}, "rules": rules[b], "reason": pub,
                                "secret": sec})
        n_merged = len(edges) - 1 - len(groups)
        edges = np.array([edges[a] for a, _ in groups] + [edges[-1]])
        n, status, rules = run(edges)  # the final check is exact (a unit may lie in several bins)
    nb = len(edges) - 1
    cells = []
    for b in range(nb):
        lower = None if b == 0 else float(edges[b])
        upper = None if b == nb - 1 else float(edges[b + 1])
        pub, sec = _reason(rules[b], int(n[b]), pol)
        if status[b] == "secondary":
            pub = sec = "secondary: suppressed so that a suppressed bin cannot be recovered from the total"
        cells.append({"key": {"bin": _bin_label(edges, b), "lower": lower, "upper": upper,
                              "lower_edge": float(edges[b]), "upper_edge": float(edges[b + 1])},
                      "values": {"count": int(n[b])}, "n_units": int(n[b]), "status": str(status[b]),
                      "rules": rules[b], "reason": pub, "secret": sec})
    opts = {"bins": nb, "edges": [float(e) for e in edges], "on_fail": on_fail,
            "_merged_failures": merged_fail, "title": options.get("title")}
    notes = ["outer bins are open-ended: the first holds every value below its upper edge, the last every "
             "value from its lower edge up (it includes the maximum); edges are round numbers inside the "
             f"range from the {pol.min_units or 1}-th smallest to the {pol.min_units or 1}-th largest unit value"]
    return _Built(columns=["bin", "lower", "upper", "count"], cells=cells, value_columns=["count"],
                  options=opts, notes=notes, merged=n_merged)


def _bin_label(edges, b) -> str:
    nb = len(edges) - 1
    if nb == 1:
        return "all"
    if b == 0:
        return f"< {_fmt_edge(edges[1])}"
    if b == nb - 1:
        return f">= {_fmt_edge(edges[b])}"
    return f"[{_fmt_edge(edges[b])}, {_fmt_edge(edges[b + 1])})"


def _build_table_figure(src, pol, kind, x, y, by, unit, options) -> _Built:
    from sdc.table import table as _table

    stat = options.get("stat", "count" if y is None else "mean")
    if stat not in ("count", "sum", "mean"):
        raise FigureSpecError(f"a {kind} chart draws count, sum or mean, not {stat!r}")
    if stat == "count" and y is not None:
        raise FigureSpecError("stat 'count' takes no y column; use stat 'sum' or 'mean' for a value")
    if stat != "count" and y is None:
        raise FigureSpecError(f"stat {stat!r} needs a y column")
    t = _table(src.relation, rows=x, cols=by or (), value=y, stat=stat, unit=unit, policy=pol)
    rl = t.primary_result.rules_lists()
    st = t.status
    tips = t.explanations()
    cells = []
    for i, key in enumerate(t.keys):
        if key[x] == TOTAL or (by and key[by] == TOTAL):
            continue  # margins are protected but not drawn
        v = t.evidence.value[i]
        val = None if not math.isfinite(float(v)) else (int(v) if stat == "count" else float(v))
        pub = "; ".join(rl[i]) if rl[i] else ("secondary: suppressed to protect another cell" if st[i] == "secondary" else "")
        cells.append({"key": dict(key), "values": {"value": val}, "n_units": int(t.evidence.n_units[i]),
                      "status": str(st[i]), "rules": list(rl[i]), "reason": pub, "secret": tips[i]})
    notes = []
    if not t.protected:
        notes.append("the table behind the figure is NOT proved protected (see the table audit); review it")
    opts = {"stat": stat, "title": options.get("title"), "audit_protected": bool(t.protected)}
    return _Built(columns=[x] + ([by] if by else []) + ["value"], cells=cells, value_columns=["value"],
                  options=opts, notes=notes)


def _build_box(src, pol: Policy, y: str, by: str | None, unit, options) -> _Built:
    from sdc.summary import check_quantile, group_stats

    if not pol.allows("median"):
        raise FigureSpecError(f"policy {pol.name!r} does not allow medians or percentiles, so no box plot")
    wh = options.get("whiskers", list(pol.whiskers))
    if (not isinstance(wh, (list, tuple)) or len(wh) != 2 or not all(isinstance(v, int) for v in wh)
            or not 1 <= wh[0] < 25 or not 75 < wh[1] <= 99):
        raise FigureSpecError(f"whiskers must be two percentiles [lo, hi], 1 <= lo < 25 < 75 < hi <= 99, got {wh!r}")
    qs = [wh[0] / 100, 0.25, 0.5, 0.75, wh[1] / 100]
    names = [f"p{wh[0]}", "p25", "median", "p75", f"p{wh[1]}"]
    g = group_stats(src.relation, y, [by] if by else [], unit, qs, top_k=1)
    side = max(pol.box_min_units_each_side, pol.percentile_min_units_each_side)
    cells = []
    for j, (q, name) in enumerate(zip(qs, names)):
        masks = check_quantile(pol, g["n"], q, g["n_miss"], min_each_side=side)
        for i, key in enumerate(g["keys"]):
            if by and key[by] == TOTAL and len(g["keys"]) > 1:
                continue
            rules = _rules_at(masks, i)
            v = float(g["q"][i, j])
            pub, sec = _reason(rules, int(g["n"][i]), pol, f" of p{int(round(q * 100))} (needs {side})")
            cells.append({"key": {"group": key[by] if by else TOTAL, "stat": name},
                          "values": {"value": v if math.isfinite(v) else None}, "n_units": int(g["n"][i]),
                          "status": "primary" if rules else "safe", "rules": rules, "reason": pub, "secret": sec})
    cells.sort(key=lambda c: (c["key"]["group"], names.index(c["key"]["stat"])))
    opts = {"whiskers": list(wh), "min_units_each_side": side, "title": options.get("title")}
    return _Built(columns=["group", "stat", "value"], cells=cells, value_columns=["value"], options=opts,
                  notes=["no minimum, maximum or outlier is drawn; whiskers end at policy-allowed percentiles"])


def _build_binned(src, pol, x, y, unit, options) -> _Built:
    bins = options.get("bins", 20)
    bx, by_ = (bins if isinstance(bins, (list, tuple)) else (bins, bins))
    xe, _ = _edges_from({"bins": bx, "range": options.get("x_range")}, src.relation, x, pol, 20)
    ye, _ = _edges_from({"bins": by_, "range": options.get("y_range")}, src.relation, y, pol, 20)
    nx, ny = len(xe) - 1, len(ye) - 1
    cx, cy = f"CAST({_q(x)} AS DOUBLE)", f"CAST({_q(y)} AS DOUBLE)"
    u = f", {_q(unit)} AS __u" if unit else ""
    t = _table_cells(f"SELECT {_bin_case(y, ye)} * {nx} + {_bin_case(x, xe)} AS __cell{u} FROM __fig_src "
                     f"WHERE {cx} IS NOT NULL AND NOT isnan({cx}) AND {cy} IS NOT NULL AND NOT isnan({cy})",
                     src, "__cell", "__u" if unit else None, pol)
    rl = t.primary_result.rules_lists()
    st = t.status
    info = {}
    for i, key in enumerate(t.keys):
        if key["__cell"] != TOTAL:
            info[int(key["__cell"])] = (int(t.evidence.n_units[i]), str(st[i]), list(rl[i]))
    cells = []
    empty_m = _count_fail(pol, np.zeros(1, dtype=np.int64))
    empty_rules = _rules_at(empty_m, 0)
    for cidx in range(nx * ny):
        iy, ix = divmod(cidx, nx)
        n, s, rules = info.get(cidx, (0, "primary" if empty_rules else "safe", empty_rules))
        pub, sec = _reason(rules, n, pol)
        if s == "secondary":
            pub = sec = "secondary: suppressed to protect another cell"
        cells.append({"key": {"x_bin": ix, "y_bin": iy,
                              "x_lower": None if ix == 0 else float(xe[ix]), "x_upper": None if ix == nx - 1 else float(xe[ix + 1]),
                              "y_lower": None if iy == 0 else float(ye[iy]), "y_upper": None if iy == ny - 1 else float(ye[iy + 1])},
                      "values": {"count": n}, "n_units": n, "status": s, "rules": rules, "reason": pub, "secret": sec})
    opts = {"x_edges": [float(e) for e in xe], "y_edges": [float(e) for e in ye], "title": options.get("title")}
    return _Built(columns=["x_bin", "y_bin", "x_lower", "x_upper", "y_lower", "y_upper", "count"], cells=cells,
                  value_columns=["count"], options=opts,
                  notes=["rectangles failing a rule are not drawn; outer bins are open-ended"])


def _build_km(src, pol: Policy, x, y, by, unit, options) -> _Built:
    k = pol.survival_pool
    c = f"CAST({_q(x)} AS DOUBLE)"
    rel = src.relation
    if unit:
        dup = rel.query("__s", f"SELECT count(*) - count(DISTINCT {_q(unit)}) FROM __s").fetchall()[0][0]
        if dup:
            raise FigureSpecError(f"a Kaplan-Meier curve needs one row per unit; {dup} rows repeat a {unit!r}")
    ytype = src.column_type(y).upper()
    if not (ytype.startswith(_NUMERIC) or ytype == "BOOLEAN"):
        raise SourceError(f"event column {y!r} must be 0/1 or boolean, it is {ytype}")
    bad = rel.query("__s", f"SELECT count(*) FROM __s WHERE {_q(y)} IS NOT NULL AND "
                           f"CAST({_q(y)} AS DOUBLE) NOT IN (0, 1)").fetchall()[0][0]
    if bad:
        raise SourceError(f"event column {y!r} must be 1 (event) or 0 (censored); {bad} rows are neither")
    neg = rel.query("__s", f"SELECT count(*) FROM __s WHERE {c} < 0").fetchall()[0][0]
    if neg:
        raise SourceError(f"time column {x!r} has {neg} negative values")
    if options.get("step") is not None:
        step = float(options["step"])
        if not step > 0:
            raise FigureSpecError("step must be a positive number")
        _, _, hi = _safe_range(rel, x, pol.min_units or 1)
        edges = np.arange(0.0, math.ceil(hi / step) * step + step / 2, step)
        if len(edges) < 2:
            edges = np.array([0.0, step])
        if len(edges) > 10_001:
            raise FigureSpecError("step gives more than 10,000 time bins; use a larger step")
    else:
        opts = dict(options)
        opts.setdefault("bins", 50)
        edges, _ = _edges_from(opts, rel, x, pol, 50)
        if edges[0] > 0:  # curves start at time 0
            step = edges[1] - edges[0]
            edges = np.concatenate([np.arange(0.0, edges[0], step), edges]) if (edges[0] / step) <= 10_000 else edges
    nb = len(edges) - 1
    gcol = f"CAST({_q(by)} AS VARCHAR)" if by else f"'{TOTAL}'"
    sql = (f"SELECT {gcol} AS g, {_bin_case(x, edges)} AS b, "
           f"count(*) FILTER (WHERE CAST({_q(y)} AS DOUBLE) = 1) AS d, "
           f"count(*) FILTER (WHERE CAST({_q(y)} AS DOUBLE) = 0) AS cns "
           f"FROM __s WHERE {c} IS NOT NULL AND {_q(y)} IS NOT NULL GROUP BY ALL ORDER BY g, b")
    try:
        agg = rel.query("__s", sql).pl()
    except duckdb.Error as e:
        raise SourceError(f"the figure query failed: {_first_line(e)}") from None
    if agg["g"].null_count():
        raise SourceError(f"column {by!r} has missing values (NULL); give them a category first")
    cells = []
    for g in agg["g"].unique().sort().to_list():
        sub = agg.filter(pl.col("g") == g)
        d = np.zeros(nb, dtype=np.int64)
        cn = np.zeros(nb, dtype=np.int64)
        b = sub["b"].to_numpy().astype(np.int64)
        d[b] = sub["d"].to_numpy()
        cn[b] = sub["cns"].to_numpy()
        left = d + cn
        n_total = int(left.sum())
        group_fail = _count_fail(pol, np.array([n_total]))
        grules = _rules_at(group_fail, 0)
        if grules or n_total < k:
            grules = grules or ["survival_pool"]
            pub = f"the group has fewer than {max(k, pol.min_units or 0)} units; no curve"
            cells.append({"key": {"group": g, "t_start": None, "t_end": None},
                          "values": {"at_risk": n_total, "events": int(d.sum()), "censored": int(cn.sum()), "survival": None},
                          "n_units": n_total, "status": "primary", "rules": grules, "reason": pub,
                          "secret": f"{n_total} units"})
            continue
        pools = pool_survival(left, d, k)
        cum_left = np.concatenate([[0], np.cumsum(left)])
        s = 1.0
        for a, e in pools:
            at_risk = int(n_total - cum_left[a])
            ev = int(d[a:e + 1].sum())
            ce = int(cn[a:e + 1].sum())
            s = s * (1 - ev / at_risk) if at_risk else s  # from the released counts only
            cells.append({"key": {"group": g, "t_start": float(edges[a]), "t_end": float(edges[e + 1])},
                          "values": {"at_risk": at_risk, "events": ev, "censored": ce, "survival": float(s)},
                          "n_units": ev + ce, "status": "safe", "rules": [], "reason": "", "secret": ""})
    opts = {"time_edges": [float(edges[0]), float(edges[-1])], "time_step": float(edges[1] - edges[0]),
            "survival_min_left": k, "title": options.get("title")}
    notes = [f"steps pooled until at least {k} units left the risk set; survival at each step = previous "
             "x (1 - events / at risk at the start of the pooled interval), from the released counts only; "
             "times are on a round grid and the last interval is open-ended"]
    return _Built(columns=["group", "t_start", "t_end", "at_risk", "events", "censored", "survival"], cells=cells,
                  value_columns=["at_risk", "events", "censored", "survival"], options=opts, notes=notes)


# ---------------------------------------------------------------------------- main entry
def figure(source: Any, kind: str, x: str | None = None, y: str | None = None, by: str | None = None,
           unit: str | None = None, policy: Any = "acro", con: duckdb.DuckDBPyConnection | None = None,
           **options: Any) -> CheckedFigure:
    """Compute, check and draw a figure; see the module docstring for the kinds and their options.

    Raises :class:`FigureSpecError` (an :class:`sdc.SdcError`) with one clear line for bad input,
    including a raw scatter plot (refused: every point is one unit's values).
    """
    pol = load_policy(policy)
    if not isinstance(kind, str):
        raise FigureSpecError(f"kind must be a string, not {type(kind).__name__}")
    k0 = kind.strip().lower().replace("-", "_").replace(" ", "_")
    if k0 == "scatter":
        raise FigureSpecError("a raw scatter plot is refused: every point is one unit's exact values; use "
                              "kind='binned_scatter' (counts per rectangle, small ones suppressed)")
    if k0 == "pie":
        raise FigureSpecError("pie charts are not supported; draw the same counts with kind='bar'")
    k = _ALIASES.get(k0, k0)
    if k not in KINDS:
        raise FigureSpecError(f"unknown figure kind {kind!r}; use {', '.join(KINDS)}")
    unknown = sorted(set(options) - _OPTIONS[k])
    if unknown:
        raise FigureSpecError(f"unknown option {unknown[0]!r} for a {k}; known: {', '.join(sorted(_OPTIONS[k]))}")
    need = {"histogram": [x], "bar": [x], "line": [x], "box": [y], "binned_scatter": [x, y], "km": [x, y]}[k]
    names = {"histogram": "x", "bar": "x", "line": "x", "box": "y", "binned_scatter": "x and y", "km": "x (time) and y (event)"}[k]
    if any(not isinstance(c, str) or not c for c in need):
        raise FigureSpecError(f"a {k} needs {names}")
    src = resolve_source(source, con)
    cols = src.columns
    for c in [x, y, by, unit]:
        if c is not None and c not in cols:
            shown = ", ".join(cols[:30]) + (", ..." if len(cols) > 30 else "")
            raise SourceError(f"unknown column {c!r}; the source has: {shown}")
    numeric = {"histogram": [x], "box": [y], "binned_scatter": [x, y], "km": [x]}.get(k, [])
    for c in numeric:
        if not src.column_type(c).upper().startswith(_NUMERIC):
            raise SourceError(f"column {c!r} must be numeric for a {k}, it is {src.column_type(c)}")
    if k == "histogram":
        if y is not None or by is not None:
            raise FigureSpecError("a histogram takes x only (draw one per group with a WHERE clause)")
        built = _build_histogram(src, pol, x, unit, options)
    elif k in ("bar", "line"):
        built = _build_table_figure(src, pol, k, x, y, by, unit, options)
    elif k == "box":
        built = _build_box(src, pol, y, by, unit, options)
    elif k == "binned_scatter":
        built = _build_binned(src, pol, x, y, unit, options)
    else:
        built = _build_km(src, pol, x, y, by, unit, options)
    spec = {"kind": "figure", "version": 1, "figure": k,
            "source": ({"sql": src.sql} if src.kind == "sql" else
                       {"path": src.path} if src.kind in ("parquet", "csv") else {"kind": src.kind}),
            "x": x, "y": y, "by": by, "unit": unit, "options": _jsonable(options), "policy": pol.name}
    return CheckedFigure(kind=k, built=built, policy=pol, x=x, y=y, by=by, unit=unit, spec=spec)


def _jsonable(options: Mapping) -> dict:
    try:
        return json.loads(json.dumps(dict(options)))
    except (TypeError, ValueError):
        raise FigureSpecError("figure options must be plain JSON values (numbers, strings, lists)") from None


def figure_from_spec(spec: Mapping[str, Any], con: duckdb.DuckDBPyConnection | None = None,
                     policy: Any = None) -> CheckedFigure:
    """Recompute a figure from its :attr:`CheckedFigure.spec` (what the airlock does); ``policy``
    overrides the spec's policy name."""
    if not isinstance(spec, Mapping):
        raise FigureSpecError("a figure spec must be a dict")
    known = {"kind", "version", "figure", "source", "x", "y", "by", "unit", "options", "policy"}
    unknown = sorted(set(spec) - known)
    if unknown:
        raise FigureSpecError(f"unknown key {unknown[0]!r} in figure spec")
    if spec.get("kind", "figure") != "figure":
        raise FigureSpecError(f"not a figure spec (kind {spec.get('kind')!r})")
    if spec.get("version", 1) != 1:
        raise FigureSpecError(f"unsupported figure spec version {spec.get('version')!r}")
    src = spec.get("source") or {}
    if not isinstance(src, Mapping):
        raise FigureSpecError("spec 'source' must be a dict with 'sql' or 'path'")
    if "sql" in src:
        source: Any = src["sql"]
    elif "path" in src:
        source = src["path"]
    else:
        raise FigureSpecError("spec source has no 'sql' or 'path': this figure cannot be recomputed")
    opts = spec.get("options") or {}
    if not isinstance(opts, Mapping):
        raise FigureSpecError("spec 'options' must be a dict")
    return figure(source, spec.get("figure", ""), x=spec.get("x"), y=spec.get("y"), by=spec.get("by"),
                  unit=spec.get("unit"), policy=policy if policy is not None else spec.get("policy", "acro"),
                  con=con, **opts)
