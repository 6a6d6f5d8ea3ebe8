"""Checked statistical models: ``sdc.model(...)`` -> refit on the trusted side, checked, rounded.

>>> m = sdc.model("people.parquet", "income ~ age + C(region)", family="ols", unit="person_id")
>>> m.files()            # {"coefficients.csv": ..., "model.json": ...}
>>> m.to_json()          # docs/sdc-figures-models.md

Checks (each failure is a rule with one clear reason; a failing model releases no numbers):

``residual_df``  statsmodels' ``df_resid >= models.min_residual_df`` (ACRO 1.0.2: >= 10);
``saturated``    ``df_resid <= 0`` or a rank-deficient design (a coefficient that is not
                 identified);
``level``        every level of a categorical variable, and every cell of an interaction of
                 categorical variables, backed by at least ``models.min_units_per_level`` units
                 (DuckDB group-bys; an empty interaction cell also fails);
``single_unit``  a design column that is non-zero (or, for a 0/1 column, zero) for fewer than that
                 many units: its coefficient would describe a handful of units (e.g. a dummy made
                 in SQL for one person);
``separation``   a logit/probit with perfect (quasi-)separation.

The data are pulled by DuckDB (only the formula's columns, rows with a missing value dropped);
the design matrices are built by patsy from numpy arrays and the model is fitted by statsmodels'
array API (no pandas in this module's own path).
"""

from __future__ import annotations

import html
import json
import math
import re
import warnings
from typing import Any, Mapping

import duckdb
import numpy as np

from sdc.errors import SdcError, SourceError
from sdc.evidence import _first_line, _q, resolve_source
from sdc.policy import Policy, load_policy

__all__ = ["model", "model_from_spec", "CheckedModel", "ModelSpecError", "FAMILIES", "JSON_FORMAT"]

JSON_FORMAT = "sdc-model/1"
FAMILIES = ("ols", "logit", "probit", "poisson")
_STRINGY = ("VARCHAR", "BOOLEAN", "ENUM", "DATE", "TIMESTAMP")
_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_.]*")


class ModelSpecError(SdcError):
    """Model arguments that do not fit together (formula, family, columns)."""


def round_sig(x: float | None, digits: int | None) -> float | None:
    """``x`` rounded to ``digits`` significant digits (``None`` stays ``None``; no digits: as is)."""
    if x is None or not math.isfinite(x):
        return None
    if digits is None or x == 0:
        return float(x)
    return float(f"{x:.{digits}g}")


class CheckedModel:
    """A model refitted and checked against a policy."""

    def __init__(self, *, formula: str, family: str, policy: Policy, unit: str | None, n: int, n_units: int,
                 df_resid: float | None, df_model: float | None, coef: list[dict], failed: list[dict],
                 levels: list[dict], spec: dict):
        self.formula = formula
        self.family = family
        self.policy = policy
        self.unit = unit
        self.n = n
        self.n_units = n_units
        self.df_resid = df_resid
        self.df_model = df_model
        self._coef = coef
        self._failed = failed
        self._levels = levels
        self.spec = spec

    @property
    def ok(self) -> bool:
        return not self._failed

    @property
    def status(self) -> str:
        return "pass" if self.ok else "refused"

    @property
    def failed(self) -> list[dict]:
        return list(self._failed)

    @property
    def coefficients(self) -> list[dict]:
        """The true (unrounded) coefficients, for the checker; ``[]`` when the fit failed."""
        return [dict(c) for c in self._coef]

    @property
    def summary(self) -> dict:
        return {"n": self.n if self.ok else None, "n_units": self.n_units if self.ok else None,
                "df_resid": self.df_resid if self.ok else None, "df_model": self.df_model if self.ok else None,
                "coefficients": len(self._coef), "failed": len(self._failed)}

    def __repr__(self) -> str:
        return (f"<CheckedModel {self.family} {self.formula!r}: {self.status}; n={self.n}, "
                f"df_resid={self.df_resid}; policy {self.policy.name}>")

    def _released_coef(self) -> list[dict]:
        if not self.ok:
            return []
        d = self.policy.significant_digits or 6
        return [{"term": c["term"], **{k: round_sig(c[k], d) for k in
                                       ("estimate", "se", "statistic", "p", "ci_low", "ci_high")}}
                for c in self._coef]

    def to_json(self, reveal: bool = False) -> dict:
        out = {"format": JSON_FORMAT, "kind": "model", "family": self.family, "formula": self.formula,
               "ok": self.ok, "status": self.status, "policy": self.policy.to_json(), "unit": self.unit,
               "n": self.n if self.ok else None, "n_units": self.n_units if self.ok else None,
               "df_resid": self.df_resid if self.ok else None, "df_model": self.df_model if self.ok else None,
               "statistic": "t" if self.family == "ols" else "z",
               "significant_digits": self.policy.significant_digits or 6,
               "coefficients": self._released_coef(), "failed": self.failed, "summary": self.summary}
        if reveal:
            out["true"] = {"n": self.n, "n_units": self.n_units, "df_resid": self.df_resid,
                           "df_model": self.df_model, "coefficients": self.coefficients, "levels": self._levels}
        return out

    def to_csv(self) -> str:
        cols = ["term", "estimate", "se", "statistic", "p", "ci_low", "ci_high", "n", "df_resid"]
        lines = [",".join(cols)]
        for c in self._released_coef():
            vals = [c["term"]] + ["" if c[k] is None else repr(c[k]) for k in cols[1:7]]
            vals += [str(self.n), _num(self.df_resid)]
            lines.append(",".join('"' + v.replace('"', '""') + '"' if any(ch in v for ch in ',"\n') else v
                                  for v in vals))
        return "\n".join(lines) + "\n"

    def files(self) -> dict[str, bytes]:
        """The exact bytes to release: ``coefficients.csv`` and ``model.json`` (empty table if refused)."""
        return {"coefficients.csv": self.to_csv().encode("utf-8"),
                "model.json": (json.dumps(self.to_json(), indent=1, ensure_ascii=False, allow_nan=False)
                               + "\n").encode("utf-8")}

    def to_html(self) -> str:
        """A checker's view: the failed rules, the level counts and the true coefficients."""
        fails = "".join(f"<li><b>{html.escape(f['rule'])}</b>: {html.escape(f['reason'])}</li>" for f in self._failed)
        lv = "".join(f"<tr><td>{html.escape(l['term'])}</td><td>{html.escape(json.dumps(l['level']))}</td>"
                     f"<td{' style=background:#f4a3a3' if l['n_units'] < self.policy.units_per_level else ''}>"
                     f"{l['n_units']}</td></tr>" for l in self._levels)
        co = "".join("<tr>" + "".join(f"<td>{html.escape(_num(c[k]) if k != 'term' else c[k])}</td>" for k in
                                      ("term", "estimate", "se", "statistic", "p", "ci_low", "ci_high")) + "</tr>"
                     for c in self._coef)
        return (f'<div class="sdc-model"><p><b>{html.escape(self.family)}</b> {html.escape(self.formula)} &middot; '
                f"policy <b>{html.escape(self.policy.name)}</b> &middot; <b>{self.status}</b> &middot; n={self.n}, "
                f"units={self.n_units}, df_resid={_num(self.df_resid)}</p>"
                + (f"<ul>{fails}</ul>" if fails else "")
                + (f'<table border="1"><tr><th>term</th><th>level</th><th>units</th></tr>{lv}</table>' if lv else "")
                + ('<table border="1"><tr><th>term</th><th>estimate</th><th>se</th><th>stat</th><th>p</th>'
                   f"<th>ci low</th><th>ci high</th></tr>{co}</table>" if co else "")
                + "</div>")

    def _repr_html_(self) -> str:
        return self.to_html()


def _num(x) -> str:
    if x is None:
        return ""
    if isinstance(x, float):
        return "" if not math.isfinite(x) else (str(int(x)) if x.is_integer() else f"{x:.6g}")
    return str(x)


def _categorical_terms(desc, cols: list[str], types: dict[str, str]) -> list[tuple[str, list[str]]]:
    """(term name, categorical columns) for every term with a categorical factor."""
    out = []
    for term in desc.rhs_termlist:
        cats = []
        for f in term.factors:
            code = f.code
            names = [t for t in _IDENT.findall(code) if t in cols]
            is_c = code.strip().startswith("C(") or any(types[c].upper().startswith(_STRINGY) for c in names)
            if is_c:
                cats += [c for c in names if c not in cats]
        if cats:
            out.append((term.name(), cats))
    return out


def model(source: Any, formula: str, family: str = "ols", unit: str | None = None, policy: Any = "acro",
          con: duckdb.DuckDBPyConnection | None = None) -> CheckedModel:
    """Fit ``formula`` (statsmodels/patsy syntax) with ``family`` and check it against the policy."""
    import patsy

    pol = load_policy(policy)
    if not isinstance(family, str) or family.lower() not in FAMILIES:
        raise ModelSpecError(f"unknown family {family!r}; use {', '.join(FAMILIES)}")
    family = family.lower()
    if not isinstance(formula, str) or "~" not in formula:
        raise ModelSpecError("formula must look like 'y ~ x1 + C(group)'")
    try:
        desc = patsy.ModelDesc.from_formula(formula)
    except patsy.PatsyError as e:
        raise ModelSpecError(f"cannot parse the formula: {_first_line(e)}") from None
    src = resolve_source(source, con)
    cols = src.columns
    types = {c: src.column_type(c) for c in cols}
    used = [t for t in dict.fromkeys(_IDENT.findall(formula)) if t in cols]
    lhs = [t for t in _IDENT.findall(formula.split("~", 1)[0]) if t in cols]
    if not lhs:
        raise ModelSpecError(f"the outcome of {formula!r} is not a column of the source")
    rhs_names = [t for t in _IDENT.findall(formula.split("~", 1)[1]) if t not in ("C", "I", "np", "log", "exp",
                                                                                  "Treatment", "Sum", "center",
                                                                                  "standardize", "Q")]
    missing = [t for t in rhs_names if t not in cols and not t.replace(".", "").isdigit()]
    if missing:
        raise SourceError(f"unknown column {missing[0]!r} in the formula; the source has: {', '.join(cols[:30])}")
    if unit and unit not in cols:
        raise SourceError(f"unknown unit column {unit!r}")
    sel_cols = list(dict.fromkeys(used + ([unit] if unit else [])))
    not_null = " AND ".join(f"{_q(c)} IS NOT NULL" for c in sel_cols)
    sel = ", ".join(f"CAST({_q(c)} AS VARCHAR) AS {_q(c)}" if types[c].upper().startswith(_STRINGY)
                    else _q(c) for c in sel_cols)
    try:
        data = src.relation.query("__s", f"SELECT {sel} FROM __s WHERE {not_null}").fetchnumpy()
    except duckdb.Error as e:
        raise SourceError(f"the model query failed: {_first_line(e)}") from None
    data = {k: (np.asarray(v) if not hasattr(v, "filled") else np.asarray(v.filled())) for k, v in data.items()}
    n = len(next(iter(data.values()))) if data else 0
    cat_terms = _categorical_terms(desc, cols, types)
    for _, cats in cat_terms:
        for c in cats:   # numeric codes as plain Python numbers: terms read C(sex)[T.1], not [T.np.int8(1)]
            if data[c].dtype.kind in "iubf":
                data[c] = data[c].astype(object)
    failed: list[dict] = []
    m = pol.units_per_level

    # -- categorical levels and interaction cells, counted in DuckDB
    levels: list[dict] = []
    for term, cats in cat_terms:
        cat_sql = ", ".join(_q(c) for c in cats)
        cnt = f"count(DISTINCT {_q(unit)})" if unit else "count(*)"
        rows = src.relation.query(
            "__s", f"SELECT {', '.join(f'CAST({_q(c)} AS VARCHAR)' for c in cats)}, {cnt} FROM __s "
                   f"WHERE {not_null} GROUP BY ALL ORDER BY ALL").fetchall()
        seen = {tuple(r[:-1]): int(r[-1]) for r in rows}
        per_col = [sorted({k[i] for k in seen}) for i in range(len(cats))]
        combos = [()]
        for vals in per_col:
            combos = [c + (v,) for c in combos for v in vals]
        for combo in combos:
            k = seen.get(combo, 0)
            levels.append({"term": term, "level": dict(zip(cats, combo)), "n_units": k})
        small = [lv for lv in levels if lv["term"] == term and lv["n_units"] < m]
        if small:
            shown = ", ".join("/".join(f"{c}={v}" for c, v in lv["level"].items()) for lv in small[:5])
            more = f" and {len(small) - 5} more" if len(small) > 5 else ""
            failed.append({"rule": "level", "term": term,
                           "reason": f"{len(small)} level(s) of {term} have fewer than {m} units: {shown}{more}"})

    if n == 0:
        failed.append({"rule": "residual_df", "reason": "no rows with all the formula's columns present"})
        return _refused(formula, family, pol, unit, 0, 0, failed, levels, src)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            y, X = patsy.dmatrices(desc, data, return_type="matrix", NA_action="raise")
    except patsy.PatsyError as e:
        raise ModelSpecError(f"cannot build the design matrix: {_first_line(e)}") from None
    y = np.asarray(y, dtype=float)
    if y.ndim == 2 and y.shape[1] != 1:
        raise ModelSpecError("the outcome must be one numeric column (write a 0/1 outcome for logit/probit)")
    y = y.ravel()
    names = list(X.design_info.column_names)
    X = np.asarray(X, dtype=float)
    units = data[unit] if unit else None
    n_units = int(len(np.unique(units))) if unit else n

    # -- design columns backed by too few units
    for j, name in enumerate(names):
        col = X[:, j]
        if name == "Intercept" or np.all(col == col[0]):
            continue
        nz = col != 0
        sides = [("non-zero", nz)]
        if np.all((col == 0) | (col == 1)):
            sides.append(("zero", ~nz))
        for what, mask in sides:
            k = int(len(np.unique(units[mask]))) if unit else int(mask.sum())
            if k < m:
                failed.append({"rule": "single_unit", "term": name,
                               "reason": f"column {name} is {what} for fewer than {m} units"})
    rank = int(np.linalg.matrix_rank(X)) if X.size else 0
    df_resid = float(n - rank)
    df_model = float(rank - (1 if "Intercept" in names else 0))
    if rank < X.shape[1] or df_resid <= 0:
        failed.append({"rule": "saturated",
                       "reason": (f"the model is saturated: {X.shape[1]} coefficients, rank {rank}, {n} rows"
                                  if df_resid <= 0 else
                                  f"the design has rank {rank} < {X.shape[1]} coefficients: some are not identified")})
    if pol.min_residual_df is not None and df_resid < pol.min_residual_df:
        failed.append({"rule": "residual_df",
                       "reason": f"residual degrees of freedom {df_resid:g} < {pol.min_residual_df}"})
    if family in ("logit", "probit") and not np.all((y == 0) | (y == 1)):
        raise ModelSpecError(f"a {family} model needs a 0/1 outcome")
    if family == "poisson" and (np.any(y < 0) or not np.all(y == np.floor(y))):
        raise ModelSpecError("a poisson model needs a non-negative integer outcome")
    coef: list[dict] = []
    if not any(f["rule"] == "saturated" for f in failed):
        coef, sep = _fit(family, y, X, names)
        if sep:
            failed.append({"rule": "separation", "reason": sep})
    return CheckedModel(formula=formula, family=family, policy=pol, unit=unit, n=n, n_units=n_units,
                        df_resid=df_resid, df_model=df_model, coef=coef, failed=failed, levels=levels,
                        spec=_spec(src, formula, family, unit, pol))


def _fit(family: str, y: np.ndarray, X: np.ndarray, names: list[str]) -> tuple[list[dict], str]:
    import statsmodels.api as sm

    sep = ""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            if family == "ols":
                res = sm.OLS(y, X).fit()
            elif family == "logit":
                res = sm.Logit(y, X).fit(disp=0)
            elif family == "probit":
                res = sm.Probit(y, X).fit(disp=0)
            else:
                res = sm.Poisson(y, X).fit(disp=0)
        except Exception as e:  # noqa: BLE001 - statsmodels raises several kinds for separation
            if "separation" in str(e).lower() or type(e).__name__ == "PerfectSeparationError":
                return [], f"perfect separation: {_first_line(e)}"
            if isinstance(e, np.linalg.LinAlgError):
                return [], f"the fit failed: {_first_line(e)}"
            raise
    for w in caught:
        msg = str(w.message).lower()
        if "separation" in msg:
            sep = "perfect or quasi-separation: some outcomes are predicted exactly; coefficients are not stable"
    params = np.asarray(res.params)
    bse = np.asarray(res.bse)
    tv = np.asarray(res.tvalues)
    pv = np.asarray(res.pvalues)
    ci = np.asarray(res.conf_int())
    coef = [{"term": nm, "estimate": float(params[i]), "se": float(bse[i]), "statistic": float(tv[i]),
             "p": float(pv[i]), "ci_low": float(ci[i, 0]), "ci_high": float(ci[i, 1])} for i, nm in enumerate(names)]
    return coef, sep


def _spec(src, formula, family, unit, pol) -> dict:
    return {"kind": "model", "version": 1,
            "source": ({"sql": src.sql} if src.kind == "sql" else
                       {"path": src.path} if src.kind in ("parquet", "csv") else {"kind": src.kind}),
            "formula": formula, "family": family, "unit": unit, "policy": pol.name}


def _refused(formula, family, pol, unit, n, n_units, failed, levels, src) -> CheckedModel:
    return CheckedModel(formula=formula, family=family, policy=pol, unit=unit, n=n, n_units=n_units, df_resid=None,
                        df_model=None, coef=[], failed=failed, levels=levels, spec=_spec(src, formula, family, unit, pol))


def model_from_spec(spec: Mapping[str, Any], con: duckdb.DuckDBPyConnection | None = None,
                    policy: Any = None) -> CheckedModel:
    """Recompute a model from its :attr:`CheckedModel.spec`; ``policy`` overrides the spec's."""
    if not isinstance(spec, Mapping):
        raise ModelSpecError("a model spec must be a dict")
    known = {"kind", "version", "source", "formula", "family", "unit", "policy"}
    unknown = sorted(set(spec) - known)
    if unknown:
        raise ModelSpecError(f"unknown key {unknown[0]!r} in model spec")
    if spec.get("kind", "model") != "model":
        raise ModelSpecError(f"not a model spec (kind {spec.get('kind')!r})")
    if spec.get("version", 1) != 1:
        raise ModelSpecError(f"unsupported model spec version {spec.get('version')!r}")
    src = spec.get("source") or {}
    if not isinstance(src, Mapping):
        raise ModelSpecError("spec 'source' must be a dict with 'sql' or 'path'")
    if "sql" in src:
        source: Any = src["sql"]
    elif "path" in src:
        source = src["path"]
    else:
        raise ModelSpecError("spec source has no 'sql' or 'path': this model cannot be recomputed")
    return model(source, spec.get("formula", ""), family=spec.get("family", "ols"), unit=spec.get("unit"),
                 policy=policy if policy is not None else spec.get("policy", "acro"), con=con)
