"""Checked summary statistics: ``sdc.summary(...)`` -> count, mean, sd, percentiles, extremes.

>>> s = sdc.summary("people.parquet", value="income", by="region", unit="person_id",
...                 stats=["count", "mean", "sd", "median", "p90", "min", "max"], policy="acro")
>>> s.to_json()          # every (group, statistic) cell with its status and failed rules

What each statistic needs (all cells per group and for the whole population, ``Total``):

``count``, ``sum``, ``mean``  the table engine (:func:`sdc.table`): threshold, zeros, dominance,
                              p%, negatives, missing, with secondary suppression and the audit
                              (needs ``by``; without it, the single cell gets the primary rules);
``sd``                        threshold, and ``n - 1 >= models.min_residual_df`` **for that cell
                              only** (ACRO 1.0.2 blanks the whole table when one cell fails);
``median``, ``pNN``           only when the policy allows them; threshold, zeros, percentile
                              (``n * min(q, 1 - q) >= statistics.percentile_min_units_each_side``),
                              missing;
``min``, ``max``              never a unit's own value: with ``statistics.extremes = "mean_of_k"``
                              the mean of the ``k`` smallest/largest units (needs ``n >= k`` and
                              the threshold), otherwise refused (rule ``extremes``).

Rows are summed per unit first (``unit=...``); with no unit column each row is a unit.  DuckDB
computes every group's numbers in one pass (GROUPING SETS), out of core.
"""

from __future__ import annotations

import html
import math
from dataclasses import dataclass
from typing import Any, Sequence

import duckdb
import numpy as np

from sdc.errors import SourceError, TableSpecError
from sdc.evidence import TOTAL, _NUMERIC, _first_line, _q, resolve_source
from sdc.policy import Policy, load_policy, percentile_q, stat_kind
from sdc.rules import RULE_ORDER, percentile_rule, primary, threshold_rule, zeros_rule

__all__ = ["summary", "CheckedSummary", "group_stats", "JSON_FORMAT"]

JSON_FORMAT = "sdc-summary/1"
_KNOWN = ("count", "sum", "mean", "sd", "median", "min", "max")


def _as_list(x: Any, what: str) -> list[str]:
    if x is None:
        return []
    if isinstance(x, str):
        return [s.strip() for s in x.split(",") if s.strip()]
    out = list(x)
    for s in out:
        if not isinstance(s, str) or not s:
            raise TableSpecError(f"{what} must be column names, got {s!r}")
    return out


def group_stats(rel: duckdb.DuckDBPyRelation, value: str, by: Sequence[str], unit: str | None,
                quantiles: Sequence[float] = (), top_k: int = 2, extremes_k: int = 0) -> dict[str, Any]:
    """Per group (and ``Total``): n, sum, mean, sd, top values, negatives, missing, quantiles,
    mean of the ``extremes_k`` smallest/largest unit values -- one DuckDB query.

    Returns numpy arrays keyed by name plus ``keys`` (list of dicts, ``Total`` for the margin),
    groups in sorted order with the ``Total`` row first.
    """
    by = list(by)
    v = f"CASE WHEN isnan(CAST({_q(value)} AS DOUBLE)) THEN NULL ELSE CAST({_q(value)} AS DOUBLE) END"
    by_sql = "".join(f"{_q(c)}, " for c in by)
    if unit:
        units = (f"SELECT {by_sql}{_q(unit)} AS __u, sum(__v) AS __v, count(*) - count(__v) AS __nm "
                 f"FROM (SELECT {by_sql}{_q(unit)}, {v} AS __v FROM __s) GROUP BY {by_sql}{_q(unit)}")
    else:
        units = f"SELECT {by_sql}{v} AS __v, ({v} IS NULL)::INTEGER AS __nm FROM __s"
    qs = ", ".join(repr(float(q)) for q in quantiles)
    k = max(int(top_k), 1)
    aggs = [
        "count(__v) AS n", "sum(__v) AS total", "avg(__v) AS mean", "stddev_samp(__v) AS sd",
        f"max(__v, {k}) AS top", "count(*) FILTER (WHERE __v < 0) AS n_neg",
        "count(*) FILTER (WHERE __nm > 0) AS n_miss",
    ]
    if quantiles:
        aggs.append(f"quantile_cont(__v, [{qs}]) AS q")
    if extremes_k:
        aggs.append(f"list_avg(min(__v, {int(extremes_k)})) AS low_k")
        aggs.append(f"list_avg(max(__v, {int(extremes_k)})) AS high_k")
    if by:
        gsets = f"GROUPING SETS (({', '.join(_q(c) for c in by)}), ())"
        gid = f"GROUPING({', '.join(_q(c) for c in by)}) AS __gid"
        keys_sql = ", ".join(f"CAST({_q(c)} AS VARCHAR) AS {_q(c)}" for c in by)
        sql = (f"SELECT {keys_sql}, {gid}, {', '.join(aggs)} FROM ({units}) GROUP BY {gsets} "
               f"ORDER BY __gid DESC, {', '.join(_q(c) for c in by)}")
    else:
        sql = f"SELECT 1 AS __gid, {', '.join(aggs)} FROM ({units})"
    try:
        res = rel.query("__s", sql).fetchall()
    except duckdb.Error as e:
        raise SourceError(f"the summary query failed: {_first_line(e)}") from None
    names = (list(by) if by else []) + ["__gid", "n", "total", "mean", "sd", "top", "n_neg", "n_miss"]
    if quantiles:
        names.append("q")
    if extremes_k:
        names += ["low_k", "high_k"]
    rows = [dict(zip(names, r)) for r in res]
    for r in rows:
        if by and r["__gid"] == 0:
            for c in by:
                if r[c] is None:
                    raise SourceError(f"column {c!r} has missing values (NULL); give them a category first")
                if r[c] == TOTAL:
                    raise SourceError(f"column {c!r} has a value {TOTAL!r}, which is reserved for margins")
    out: dict[str, Any] = {
        "keys": [{c: (TOTAL if r["__gid"] else r[c]) for c in by} for r in rows],
        "n": np.array([r["n"] for r in rows], dtype=np.int64),
        "total": np.array([r["total"] or 0.0 for r in rows], dtype=float),
        "mean": np.array([np.nan if r["mean"] is None else r["mean"] for r in rows], dtype=float),
        "sd": np.array([np.nan if r["sd"] is None else r["sd"] for r in rows], dtype=float),
        "n_neg": np.array([r["n_neg"] for r in rows], dtype=np.int64),
        "n_miss": np.array([r["n_miss"] for r in rows], dtype=np.int64),
    }
    top = np.zeros((len(rows), k))
    for i, r in enumerate(rows):
        t = [x for x in (r["top"] or []) if x is not None][:k]
        top[i, : len(t)] = t
    out["top"] = top
    if quantiles:
        out["q"] = np.array([[np.nan if x is None else x for x in (r["q"] or [None] * len(quantiles))]
                             for r in rows], dtype=float).reshape(len(rows), len(quantiles))
    if extremes_k:
        out["low_k"] = np.array([np.nan if r["low_k"] is None else r["low_k"] for r in rows], dtype=float)
        out["high_k"] = np.array([np.nan if r["high_k"] is None else r["high_k"] for r in rows], dtype=float)
    return out


def check_quantile(pol: Policy, n: np.ndarray, q: float, n_missing: np.ndarray | None = None,
                   min_each_side: int | None = None) -> dict[str, np.ndarray]:
    """Rule masks for a median/percentile cell (threshold, zeros, percentile, missing)."""
    stat = "median" if q == 0.5 else f"p{int(round(q * 100))}"
    zeros = np.zeros(len(n), dtype=np.int64)
    res = primary(pol, stat, n_units=n, total=n.astype(float), top=None, n_negative=zeros,
                  n_missing=zeros if n_missing is None else n_missing)
    masks = dict(res.masks)
    if min_each_side:
        extra = percentile_rule(n, q, min_each_side)
        masks["percentile"] = masks.get("percentile", np.zeros(len(n), bool)) | extra
    return masks


@dataclass
class SummaryCell:
    key: dict
    stat: str
    value: float | None
    n_units: int
    rules: tuple[str, ...]

    @property
    def status(self) -> str:
        return "primary" if self.rules else "safe"


class CheckedSummary:
    """Summary statistics per group, each (group, statistic) cell checked on its own."""

    def __init__(self, *, cells: list[dict], policy: Policy, value: str, by: list[str], unit: str | None,
                 stats: list[str], spec: dict):
        self._cells = cells
        self.policy = policy
        self.value_column = value
        self.by = by
        self.unit = unit
        self.stats = stats
        self.spec = spec

    @property
    def cells(self) -> list[SummaryCell]:
        return [SummaryCell(c["key"], c["stat"], c["true_value"], c["true_n_units"], tuple(c["rules"]))
                for c in self._cells]

    def cell(self, stat: str, **key: str) -> SummaryCell:
        want = {c: str(key.get(c, TOTAL)) for c in self.by}
        for c in self.cells:
            if c.stat == stat and c.key == want:
                return c
        raise KeyError(f"no cell {stat} {want}")

    @property
    def summary(self) -> dict:
        return {"cells": len(self._cells), "primary": sum(c["status"] == "primary" for c in self._cells),
                "secondary": sum(c["status"] == "secondary" for c in self._cells)}

    def to_json(self, reveal: bool = False) -> dict:
        cells = []
        for c in self._cells:
            d = {k: c[k] for k in ("key", "stat", "value", "n_units", "status", "rules", "reason")}
            if reveal:
                d["true_value"] = c["true_value"]
                d["true_n_units"] = c["true_n_units"]
            cells.append(d)
        failed = [{"key": c["key"], "stat": c["stat"], "rules": c["rules"], "reason": c["reason"]}
                  for c in self._cells if c["status"] != "safe"]
        return {"format": JSON_FORMAT, "kind": "summary", "ok": True, "policy": self.policy.to_json(),
                "value": self.value_column, "by": self.by, "unit": self.unit, "stats": self.stats,
                "cells": cells, "failed": failed, "summary": self.summary,
                "audit": getattr(self, "audits", {})}

    def to_csv(self) -> str:
        head = self.by + ["stat", "value", "n_units"]
        lines = [",".join(head)]
        for c in self._cells:
            vals = [str(c["key"][b]) for b in self.by] + [c["stat"], _csv(c["value"]), _csv(c["n_units"])]
            lines.append(",".join(_csv_field(v) for v in vals))
        return "\n".join(lines) + "\n"

    def to_html(self) -> str:
        rows = []
        for c in self._cells:
            cls = "" if c["status"] == "safe" else ' style="background:#f4a3a3"'
            rows.append(f"<tr><td>{html.escape(' / '.join(str(c['key'][b]) for b in self.by) or TOTAL)}</td>"
                        f"<td>{c['stat']}</td><td{cls}>{html.escape(_csv(c['true_value']))}</td>"
                        f"<td>{html.escape(c['reason'] or '')}</td></tr>")
        return ("<table><tr><th>group</th><th>stat</th><th>value</th><th>why</th></tr>"
                + "".join(rows) + "</table>")

    def _repr_html_(self) -> str:
        return self.to_html()


def _csv(x: Any) -> str:
    if x is None:
        return ""
    if isinstance(x, float):
        return "" if not math.isfinite(x) else repr(x)
    return str(x)


def _csv_field(s: str) -> str:
    return '"' + s.replace('"', '""') + '"' if any(ch in s for ch in ',"\n') else s


def _reason(rules: list[str], stat: str, n: int, pol: Policy) -> str:
    bits = []
    for r in rules:
        if r == "threshold":
            bits.append(f"{n} units < {pol.min_units}")
        elif r == "zeros":
            bits.append("no units")
        elif r == "dof":
            bits.append(f"{n - 1} degrees of freedom < {pol.min_residual_df}")
        elif r == "percentile":
            bits.append(f"fewer than the policy's minimum units on one side of {stat}")
        elif r == "extremes":
            if pol.extremes == "refuse":
                bits.append(f"{stat} is a single unit's value; the policy refuses it "
                            "(statistics.extremes = \"refuse\")")
            else:
                bits.append(f"{n} units < k = {pol.extremes_k} for the mean of the k most extreme units")
        else:
            bits.append(r)
    return "; ".join(bits)


def summary(source: Any, value: str, by: str | Sequence[str] | None = None,
            stats: str | Sequence[str] = ("count", "mean", "sd", "median"), unit: str | None = None,
            policy: Any = "acro", con: duckdb.DuckDBPyConnection | None = None) -> CheckedSummary:
    """Summary statistics of ``value`` per group of ``by`` (and overall), checked per cell."""
    pol = load_policy(policy)
    by_l = _as_list(by, "by")
    stat_l = [s.strip().lower() for s in _as_list(stats, "stats")]
    if not stat_l:
        raise TableSpecError("stats must name at least one statistic")
    quantiles = []
    for s in stat_l:
        kind = stat_kind(s)
        if kind not in _KNOWN and kind != "percentile":
            raise TableSpecError(f"unknown statistic {s!r}; use count, sum, mean, sd, median, pNN, min, max")
        if kind in ("median", "percentile"):
            try:
                q = percentile_q(s)
            except ValueError as e:
                raise TableSpecError(str(e)) from None
            if not pol.allows(s):
                raise TableSpecError(f"policy {pol.name!r} does not allow {s!r}; allowed: {', '.join(pol.allowed_stats)}")
            quantiles.append(q)
        if kind in ("sum", "mean", "count") and not pol.allows(kind):
            raise TableSpecError(f"policy {pol.name!r} does not allow {s!r}")
    src = resolve_source(source, con)
    for c in by_l + [value] + ([unit] if unit else []):
        if c not in src.columns:
            raise SourceError(f"unknown column {c!r}; the source has: {', '.join(src.columns[:30])}")
    if not src.column_type(value).upper().startswith(_NUMERIC):
        raise SourceError(f"value column {value!r} must be numeric, it is {src.column_type(value)}")
    ek = pol.extremes_k if pol.extremes == "mean_of_k" else 0
    g = group_stats(src.relation, value, by_l, unit, quantiles, top_k=pol.top_k, extremes_k=ek)
    n = g["n"]
    m = len(n)
    tables: dict[str, Any] = {}
    if by_l:  # additive statistics: the table engine, with secondary suppression and the audit
        from sdc.table import table as _table

        for s in stat_l:
            if s in ("count", "sum", "mean"):
                tables[s] = _table(src.relation, rows=by_l, value=None if s == "count" else value, stat=s,
                                   unit=unit, policy=pol)
    # count, sum and mean of the same groups are linked (sum = mean * count): a group suppressed in
    # one of them is suppressed in all of them
    linked = np.zeros(m, bool)
    audits = {}
    for s_, t in tables.items():
        pos = {tuple(k[c] for c in by_l): i for i, k in enumerate(t.keys)}
        order = [pos[tuple(k[c] for c in by_l)] for k in g["keys"]]
        linked |= t.suppressed[order]
        audits[s_] = {"protected": t.protected, "method": t.to_json()["audit"].get("method")}
    cells: list[dict] = []
    qi = 0
    for s in stat_l:
        kind = stat_kind(s)
        masks: dict[str, np.ndarray] = {}
        secondary = np.zeros(m, bool)
        if kind in ("count", "sum", "mean"):
            vals = {"count": n.astype(float), "sum": g["total"], "mean": g["mean"]}[kind]
            if kind in tables:
                t = tables[kind]
                pos = {tuple(k[c] for c in by_l): i for i, k in enumerate(t.keys)}
                order = [pos[tuple(k[c] for c in by_l)] for k in g["keys"]]
                rl = t.primary_result.rules_lists()
                rules_per = [rl[j] for j in order]
                secondary = linked.copy()
            else:
                res = primary(pol, kind, n_units=n, total=g["total"], top=g["top"] if kind != "count" else None,
                              n_negative=g["n_neg"], n_missing=g["n_miss"])
                rules_per = res.rules_lists()
        else:
            if kind == "sd":
                vals = g["sd"]
                if pol.min_units is not None:
                    masks["threshold"] = threshold_rule(n, pol.min_units, pol.zeros_disclosive)
                if pol.zeros_disclosive:
                    masks["zeros"] = zeros_rule(n)
                if pol.min_residual_df is not None:
                    masks["dof"] = (n - 1) < pol.min_residual_df
            elif kind in ("median", "percentile"):
                q = quantiles[qi]
                qi += 1
                vals = g["q"][:, quantiles.index(q)]
                masks = check_quantile(pol, n, q, g["n_miss"])
            else:  # min / max
                vals = g["low_k"] if (kind == "min" and ek) else g["high_k"] if ek else np.full(m, np.nan)
                ext = np.ones(m, bool) if not ek else n < ek
                masks["extremes"] = ext
                if pol.min_units is not None:
                    masks["threshold"] = threshold_rule(n, pol.min_units, pol.zeros_disclosive)
            order_r = list(RULE_ORDER[:5]) + ["dof", "extremes"] + list(RULE_ORDER[5:])
            rules_per = [[r for r in order_r if r in masks and masks[r][i]] for i in range(m)]
        for i in range(m):
            rules = list(rules_per[i])
            status = "primary" if rules else ("secondary" if secondary[i] else "safe")
            v = float(vals[i]) if vals[i] is not None and math.isfinite(float(vals[i])) else None
            if kind == "count" and v is not None:
                v = int(v)
            reason = _reason(rules, s, int(n[i]), pol) if rules else (
                "secondary: suppressed to protect another cell" if status == "secondary" else "")
            cells.append({"key": g["keys"][i], "stat": s, "value": v if status == "safe" else None,
                          "n_units": int(n[i]) if status == "safe" else None, "status": status,
                          "rules": rules, "reason": reason, "true_value": v, "true_n_units": int(n[i])})
    spec = {"kind": "summary", "version": 1, "source": _spec_source(src), "value": value, "by": by_l,
            "stats": stat_l, "unit": unit, "policy": pol.name}
    out = CheckedSummary(cells=cells, policy=pol, value=value, by=by_l, unit=unit, stats=stat_l, spec=spec)
    out.audits = audits
    return out


def _spec_source(src) -> dict:
    if src.kind == "sql":
        return {"sql": src.sql}
    if src.kind in ("parquet", "csv"):
        return {"path": src.path}
    return {"kind": src.kind}
