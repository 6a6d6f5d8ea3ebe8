"""Audit of a suppression pattern: what can an attacker compute from the published table?

This module is deliberately independent of :mod:`sdc.suppress` (it imports nothing from it): it
takes any pattern (``suppressed`` mask) and proves or refutes that every primary cell keeps its
required protection.  It is what an output checker runs; :func:`sdc.suppress.secondary_suppression`
calls it as a final check and repairs what it finds.

Attacker model (the choices, explicitly)
-----------------------------------------
The attacker knows the structure (all additivity relations from
:meth:`~sdc.structure.TableStructure.constraints`), every published cell's value, and that

* every cell is **non-negative** (``x >= 0``).  Tables with negative cells are outside this model;
  :func:`audit` raises ``ValueError`` if a value is negative.
* **empty cells are known** (``zeros_known=True``, the default): a suppressed cell that is not
  primary and has ``n_units == 0`` is treated as published with value 0 (an empty or structural
  zero gives no protection).  A *primary* zero cell is never assumed known (it is what we protect).
* **integrality** (``integer=None`` means: assumed when every value is an integer): the LP bounds
  are rounded inward (``ceil(lo)``, ``floor(hi)``), which any attacker can do.  The exact integer
  hull is *not* computed (in tables of three or more dimensions it can be tighter than the rounded
  LP bounds; pass ``integer_exact=True`` to check primaries with ``scipy.optimize.milp`` on small
  tables).
* **singletons**: a suppressed cell with ``n_units == 1`` is known exactly to its only unit.  For
  every primary cell ``p`` the audit checks an attacker who knows one such cell ``s != p``.  It first
  checks the stronger coalition (all singletons known at once); only if ``p`` fails that, each
  singleton is tried alone.  A failure against a single singleton makes ``p`` unprotected; failing
  only the coalition is reported (``coalition_protected``) but does not fail the audit.
* **unions**: ``union_is_unsafe(indices) -> bool`` (caller's rule, e.g. "fewer than 10 units in
  the union") is asked about the set of suppressed children of every line (a parent and its
  children along one dimension) that has at least two, and about each pair among them (lines with
  up to ``max_union_pairs`` suppressed children).  For each set it flags, the LP range of the sum of
  its cells is computed; an exactly determined unsafe union fails the audit.

Protection criterion
--------------------
For a primary cell with value ``v``, lower/upper protection ``L``/``U`` (absolute, >= 0) and
feasible interval ``[lo, hi]``: protected when ``lo <= v - min(L, v)`` and ``hi >= v + U``.  ``L`` is
capped at ``v`` because no table can go below 0: asking for more downward protection than the value
means "the attacker must not be able to exclude 0".  When ``L == U == 0`` the cell only has to be
not exactly determined (``hi - lo > 0``, after integer rounding when integral).  A primary cell that
is published (not in ``suppressed``) is unprotected.

Computation
-----------
Unknowns are the suppressed cells (minus known zeros).  The relations touching them are reduced to
``A_S x_S = b`` (``b`` from published cells) and split into connected components; each component is
one LP, and every suppressed cell's ``min`` and ``max`` is solved on it.  With the default engine
(``"highs"``) the model is passed once per component to HiGHS (scipy's bundled binding) and only the
objective/bounds change between solves, so each solve is hot-started from the previous basis.
``engine="linprog"`` uses ``scipy.optimize.linprog(method="highs")`` for every solve (slow,
reference).  Every LP solution is a feasible table; it is used to certify ``min == 0`` for all cells
it sets to 0, which skips many ``min`` solves.  All intervals are exact LP bounds (before rounding).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np
import scipy.sparse as sp
from scipy.optimize import linprog
from scipy.sparse.csgraph import connected_components

__all__ = ["audit", "AuditResult", "CellAudit", "verify_certificates"]

try:  # scipy >= 1.13 bundles the highspy bindings
    from scipy.optimize._highspy import _core as _hcore  # type: ignore

    _HAVE_HIGHS = hasattr(_hcore, "_Highs")
except Exception:  # pragma: no cover - depends on scipy build
    _hcore = None
    _HAVE_HIGHS = False


# ----------------------------------------------------------------------------- LP engines
class _LinprogLP:
    """Reference engine: one ``linprog(method="highs")`` call per solve."""

    name = "linprog-highs"

    def __init__(self, A: sp.csr_matrix, b: np.ndarray, lb: np.ndarray, ub: np.ndarray):
        self.A = A
        self.b = b
        self.lb = lb.astype(float).copy()
        self.ub = ub.astype(float).copy()
        self.n = A.shape[1]
        self.n_solves = 0

    def set_bounds(self, cols: np.ndarray, lb: np.ndarray, ub: np.ndarray) -> None:
        self.lb[cols] = lb
        self.ub[cols] = ub

    def solve(self, cols: np.ndarray, coefs: np.ndarray):
        self.n_solves += 1
        c = np.zeros(self.n)
        c[cols] = coefs
        ub = np.where(np.isinf(self.ub), None, self.ub)
        bounds = list(zip(self.lb, ub))
        res = linprog(c, A_eq=self.A if self.A.shape[0] else None, b_eq=self.b if self.A.shape[0] else None,
                      bounds=bounds, method="highs")
        if res.status == 0:
            return "optimal", float(res.fun), res.x
        if res.status == 3:
            return "unbounded", -math.inf, None
        if res.status == 2:
            return "infeasible", math.inf, None
        return "error", math.nan, None


class _HighsLP:
    """Persistent HiGHS model: objective/bounds are changed in place, solves are hot-started."""

    name = "highs"

    def __init__(self, A: sp.csr_matrix, b: np.ndarray, lb: np.ndarray, ub: np.ndarray):
        h = _hcore._Highs()
        h.setOptionValue("output_flag", False)
        h.setOptionValue("log_to_console", False)
        inf = h.getInfinity()
        self.inf = inf
        n = A.shape[1]
        self.n = n
        ubh = np.where(np.isinf(ub), inf, ub).astype(np.float64)
        h.addVars(n, lb.astype(np.float64), ubh)
        A = sp.csr_matrix(A)
        A.sort_indices()
        if A.shape[0]:
            h.addRows(A.shape[0], b.astype(np.float64), b.astype(np.float64), A.nnz,
                      A.indptr[:-1].astype(np.int32), A.indices.astype(np.int32),
                      A.data.astype(np.float64))
        self.h = h
        self._cost_cols = np.zeros(0, dtype=np.int32)
        self.n_solves = 0
        self._ok = _hcore.HighsModelStatus.kOptimal
        self._unb = {_hcore.HighsModelStatus.kUnbounded}
        self._inf = {_hcore.HighsModelStatus.kInfeasible}
        self._unb_or_inf = _hcore.HighsModelStatus.kUnboundedOrInfeasible

    def set_bounds(self, cols: np.ndarray, lb: np.ndarray, ub: np.ndarray) -> None:
        cols = np.asarray(cols, dtype=np.int32)
        if cols.size == 0:
            return
        lb = np.broadcast_to(np.asarray(lb, dtype=np.float64), cols.shape).copy()
        ub = np.broadcast_to(np.asarray(ub, dtype=np.float64), cols.shape).copy()
        ub[np.isinf(ub)] = self.inf
        self.h.changeColsBounds(cols.size, cols, lb, ub)

    def solve(self, cols: np.ndarray, coefs: np.ndarray, retried: bool = False):
        self.n_solves += 1
        h = self.h
        if self._cost_cols.size:
            h.changeColsCost(self._cost_cols.size, self._cost_cols, np.zeros(self._cost_cols.size))
        cols = np.asarray(cols, dtype=np.int32)
        h.changeColsCost(cols.size, cols, np.asarray(coefs, dtype=np.float64))
        self._cost_cols = cols
        h.run()
        st = h.getModelStatus()
        if st == self._ok:
            x = np.asarray(h.getSolution().col_value)
            return "optimal", float(h.getInfo().objective_function_value), x
        if st in self._unb:
            return "unbounded", -math.inf, None
        if st == self._unb_or_inf:
            # only "unbounded" is possible here: the true table is always feasible
            return "unbounded", -math.inf, None
        if st in self._inf:
            return "infeasible", math.inf, None
        if not retried:
            # a hot start can end in a non-terminal status on degenerate models: solve afresh
            h.clearSolver()
            return self.solve(cols, coefs, retried=True)
        return "error", math.nan, None


def _make_engine(engine: str, A, b, lb, ub):
    if engine == "linprog" or (engine == "auto" and not _HAVE_HIGHS):
        return _LinprogLP(A, b, lb, ub)
    if engine in ("highs", "auto"):
        if not _HAVE_HIGHS:
            raise RuntimeError("the HiGHS binding bundled with scipy is not available; use engine='linprog'")
        return _HighsLP(A, b, lb, ub)
    raise ValueError(f"unknown LP engine {engine!r}")


# ----------------------------------------------------------------------------- results
@dataclass
class CellAudit:
    """Audit of one suppressed (or unprotected published primary) cell."""

    index: int
    primary: bool
    lo: float                      # attacker's lower bound (after integer rounding if integral)
    hi: float                      # attacker's upper bound (inf if unbounded)
    protected: bool | None = None  # primaries only
    reason: str = ""               # why not protected (no values in it)
    value: float = math.nan        # true value (never in the releasable JSON)
    required_lo: float = math.nan  # v - min(L, v)
    required_hi: float = math.nan  # v + U
    attacker: int | None = None    # singleton cell whose unit breaks the protection, if any
    suspect: int | None = None     # not proven: a singleton cell no proof found leaves unchanged
    coalition_protected: bool | None = None
    exact: bool = True             # False: [lo, hi] is an inner bound (the true interval is wider)


@dataclass
class AuditResult:
    protected: bool
    cells: list[CellAudit]
    method: str = "lp-highs"
    intervals: str = "exact"
    integer: bool = False
    zeros_known: bool = True
    n_lp: int = 0
    n_local_lp: int = 0
    seconds: float = 0.0
    n_components: int = 0
    largest_component: int = 0
    union_failures: list[dict] = field(default_factory=list)
    singleton_failures: list[dict] = field(default_factory=list)
    keys: Sequence[tuple] | None = None
    certificates: int = 0              # certificates given
    certificates_rejected: int = 0     # ... that failed verification (not used)
    proved_by_certificate: int = 0     # primaries proved without an LP of their own

    @property
    def unprotected(self) -> list[int]:
        """Indices of primary cells that are not protected."""
        return [c.index for c in self.cells if c.primary and not c.protected]

    def interval(self, index: int) -> tuple[float, float]:
        for c in self.cells:
            if c.index == index:
                return (c.lo, c.hi)
        raise KeyError(index)

    def intervals(self) -> dict[int, tuple[float, float]]:
        return {c.index: (c.lo, c.hi) for c in self.cells}

    def to_json(self, reveal: bool = False) -> dict:
        """Plain dict for the table JSON.

        Without ``reveal`` it contains nothing an attacker could not compute from the released
        table (the feasible intervals are exactly what the attacker computes), so it may be
        released; ``reveal=True`` adds true values and required bounds for a checker.
        """

        def num(x: float):
            if x is None or (isinstance(x, float) and math.isnan(x)):
                return None
            if math.isinf(x):
                return None  # JSON has no infinity; null = unbounded
            return float(x)

        def key(i: int):
            if self.keys is None:
                return None
            return [c if isinstance(c, (str, int, float, bool)) or c is None else str(c) for c in self.keys[i]]

        cells = []
        for c in self.cells:
            d = {"index": int(c.index), "key": key(c.index),
                 "status": "primary" if c.primary else "secondary",
                 "interval": [num(c.lo), num(c.hi)], "exact": bool(c.exact)}
            if c.primary:
                d["protected"] = bool(c.protected)
                if c.reason:
                    d["reason"] = c.reason
            if reveal:
                d["true_value"] = num(c.value)
                if c.primary:
                    d["required"] = [num(c.required_lo), num(c.required_hi)]
            cells.append(d)
        out = {
            "protected": bool(self.protected),
            "method": self.method,
            "intervals": self.intervals,
            "integer": bool(self.integer),
            "zeros_known": bool(self.zeros_known),
            "n_suppressed": len(self.cells),
            "n_primary": sum(1 for c in self.cells if c.primary),
            "n_unprotected": len(self.unprotected),
            "n_lp": int(self.n_lp),
            "n_local_lp": int(self.n_local_lp),
            "certificates": int(self.certificates),
            "certificates_rejected": int(self.certificates_rejected),
            "proved_by_certificate": int(self.proved_by_certificate),
            "seconds": round(float(self.seconds), 3),
            "cells": cells,
        }
        if self.union_failures:
            out["union_failures"] = [
                {"cells": [int(i) for i in f["cells"]], "keys": [key(i) for i in f["cells"]]}
                for f in self.union_failures]
        if self.singleton_failures:
            out["singleton_failures"] = [
                {"primary": int(f["primary"]), "singleton": int(f["singleton"])}
                for f in self.singleton_failures]
        return out


# ----------------------------------------------------------------------------- audit
def audit(
    structure,
    values: np.ndarray,
    suppressed: np.ndarray,
    primary: np.ndarray,
    *,
    n_units: np.ndarray,
    lower: np.ndarray,
    upper: np.ndarray,
    union_is_unsafe: Callable[[np.ndarray], bool] | None = None,
    zeros_known: bool = True,
    integer: bool | None = None,
    integer_exact: bool = False,
    singletons: bool = True,
    engine: str = "auto",
    intervals: str = "auto",
    exact_limit: int | None = None,
    max_local: int = 2500,
    max_exact_component: int = 4000,
    max_union_pairs: int = 8,
    tol: float = 1e-6,
    certificates: Sequence[tuple[np.ndarray, np.ndarray]] | None = None,
) -> AuditResult:
    """Check each primary's protection; compute feasible intervals of the suppressed cells.

    See the module docstring for the attacker model.  Arrays are flat, one entry per cell of
    ``structure`` (cell order of :class:`~sdc.structure.TableStructure`).  ``tol`` is relative to
    ``max(1, |value|)`` of the cell concerned.

    ``intervals``:

    * ``"exact"``: the exact LP interval of every suppressed cell (two LPs per cell on its
      connected component; hot-started).  Protection is decided on these intervals.
    * ``"protection"``: for large patterns.  Each primary's protection is *proved* by feasible
      tables found with small local LPs (the suppressed cells within a few relation hops of the
      cell, every relation touching them enforced, everything else at its true value -- any
      solution is a feasible table of the full problem).  Only when the local LPs cannot reach the
      required bounds is the exact LP solved on the whole component, so a "not protected" verdict
      is always exact.  Reported intervals are then inner bounds (``CellAudit.exact`` False): the
      attacker's true interval is at least that wide.
      If the component is larger than ``max_exact_component`` cells the exact LP is skipped and the
      primary is reported unprotected ("not proven"): conservative, never the other way round.
    * ``"auto"`` (default): ``"exact"`` up to ``exact_limit`` suppressed cells (1500, or 300 when
      certificates are given), else ``"protection"``.

    ``certificates``: claimed proofs, e.g. from the suppression: pairs ``(cells, y)``, a perturbation
    ``y`` of the table on ``cells``.  The audit trusts none of them: it checks each one itself
    (:func:`verify_certificates`: ``y`` only on suppressed unknown cells, every additivity relation
    still holds, no cell below 0), so a valid one is a feasible table the attacker cannot exclude.
    In ``"protection"`` mode valid certificates prove primaries (a certificate that changes no
    singleton cell other than the primary itself holds against every singleton attacker and
    coalition), give inner bounds of the intervals, and show that unsafe unions can move; what they
    do not prove goes through the local and exact LPs as before.  Invalid ones are only counted
    (``AuditResult.certificates_rejected``).
    """
    t0 = time.perf_counter()
    n = structure.n_cells
    v = np.asarray(values, dtype=float).reshape(-1)
    sup = np.asarray(suppressed, dtype=bool).reshape(-1)
    prim = np.asarray(primary, dtype=bool).reshape(-1)
    nu = np.asarray(n_units).reshape(-1)
    L = np.asarray(lower, dtype=float).reshape(-1)
    U = np.asarray(upper, dtype=float).reshape(-1)
    for name, arr in (("values", v), ("suppressed", sup), ("primary", prim), ("n_units", nu),
                      ("lower", L), ("upper", U)):
        if arr.shape != (n,):
            raise ValueError(f"{name} has {arr.size} entries, the table has {n} cells")
    if np.any(~np.isfinite(v)):
        raise ValueError("values must be finite")
    if np.any(v < 0):
        raise ValueError("the audit assumes non-negative cells; values has negative entries")
    if np.any(L < 0) or np.any(U < 0):
        raise ValueError("lower/upper protection must be >= 0")
    if intervals not in ("auto", "exact", "protection"):
        raise ValueError(f"unknown intervals mode {intervals!r}")
    if integer is None:
        integer = bool(np.all(v == np.round(v)))

    # required bounds; for integer tables the protection is rounded up (an attacker rounds bounds)
    if integer:
        Lr = np.minimum(np.ceil(L - 1e-9), v)
        Ur = np.ceil(U - 1e-9)
    else:
        Lr = np.minimum(L, v)
        Ur = U
    req_lo = v - Lr
    req_hi = v + Ur
    both0 = (Lr <= 0) & (Ur <= 0)

    known0 = sup & ~prim & (nu == 0) & (v == 0) if zeros_known else np.zeros(n, bool)
    unk = sup & ~known0
    idx = np.flatnonzero(unk)
    k = idx.size
    pos = np.full(n, -1, dtype=np.int64)
    pos[idx] = np.arange(k)
    mode = intervals
    if exact_limit is None:
        exact_limit = 1500 if certificates is None else 300
    if mode == "auto":
        mode = "exact" if k <= exact_limit else "protection"

    A = structure.constraints()
    AS = A[:, idx].tocsr()
    rows = np.flatnonzero(np.diff(AS.indptr) > 0)
    AS = AS[rows]
    b = -(A[rows] @ np.where(unk, 0.0, v))
    m = rows.size

    # scale magnitudes so HiGHS' absolute tolerances are meaningful
    scale = max(1.0, float(np.max(v)) / 1e6) if v.size else 1.0
    bs = b / scale
    vs = v / scale
    vk = vs[idx]

    # connected components over unknown cells linked by shared relations
    if k:
        B = sp.csr_matrix(AS != 0, dtype=np.int8)
        G = sp.bmat([[None, B.T], [B, None]], format="csr") if m else sp.csr_matrix((k, k))
        ncomp, lab = connected_components(G, directed=False)
        cell_lab = lab[:k]
        row_lab = lab[k:]
        BT = B.T.tocsr()          # cell -> rows
        ASc = AS.tocsc()
    else:
        ncomp, cell_lab, row_lab = 0, np.zeros(0, int), np.zeros(0, int)
        B = BT = ASc = None

    single_k = (nu[idx] == 1) if singletons else np.zeros(k, bool)
    order_rows = np.argsort(row_lab, kind="stable")
    row_starts = np.searchsorted(row_lab[order_rows], np.arange(ncomp + 1))
    order_cells = np.argsort(cell_lab, kind="stable")
    cell_starts = np.searchsorted(cell_lab[order_cells], np.arange(ncomp + 1))
    comp_engines: dict[int, tuple] = {}
    counters = {"local": 0}

    def comp_model(ci: int):
        """(engine, component cell positions (into idx), position -> local column)."""
        if ci in comp_engines:
            return comp_engines[ci]
        cols = order_cells[cell_starts[ci]:cell_starts[ci + 1]]
        rws = order_rows[row_starts[ci]:row_starts[ci + 1]]
        Ac = AS[rws][:, cols]
        eng = _make_engine(engine, Ac, bs[rws], np.zeros(cols.size), np.full(cols.size, np.inf))
        local = {int(c): j for j, c in enumerate(cols)}
        comp_engines[ci] = (eng, cols, local)
        return comp_engines[ci]

    def solve_range(eng, lcols: np.ndarray, coefs: np.ndarray):
        """(min, max, argmin point, argmax point) of coefs . x[lcols] on an engine's model."""
        st1, f1, x1 = eng.solve(lcols, coefs)
        st2, f2, x2 = eng.solve(lcols, -coefs)
        if "error" in (st1, st2):
            raise RuntimeError("LP solver failed during the audit")
        if "infeasible" in (st1, st2):
            raise RuntimeError("audit LP infeasible: values are not additive over the structure")
        lo_ = f1 if st1 == "optimal" else -math.inf
        hi_ = -f2 if st2 == "optimal" else math.inf
        return lo_, hi_, x1, x2

    def rnd(lo_, hi_):
        if integer:
            e = 1e-6
            lo_ = math.ceil(lo_ - e * max(1.0, abs(lo_))) if math.isfinite(lo_) else lo_
            hi_ = math.floor(hi_ + e * max(1.0, abs(hi_))) if math.isfinite(hi_) else hi_
        return lo_, hi_

    def check(i: int, lo_: float, hi_: float, lo_req: float | None = None) -> tuple[bool, str]:
        t = tol * max(1.0, abs(v[i]))
        if both0[i]:
            if hi_ - lo_ <= t:
                return False, "exactly determined"
            return True, ""
        ok_lo = lo_ <= (req_lo[i] if lo_req is None else lo_req) + t
        ok_hi = hi_ >= req_hi[i] - t
        if ok_lo and ok_hi:
            return True, ""
        if hi_ - lo_ <= t:
            return False, "exactly determined"
        why = []
        if not ok_lo:
            why.append("lower bound too close")
        if not ok_hi:
            why.append("upper bound too close")
        return False, " and ".join(why)

    def shares_unit(i: int, s_cells: np.ndarray) -> np.ndarray:
        """For singleton cells s: is s's only unit also a unit of cell i?  (Their intersection
        cell exists and has a unit.)  Such a unit knows its own share of i."""
        mt = structure.meet(i, np.asarray(s_cells, dtype=np.int64))
        return (mt >= 0) & (nu[np.maximum(mt, 0)] >= 1)

    def attackers_of(i: int, cols: np.ndarray):
        """Local positions (in cols) of singletons that attack primary i (not i, not i's own unit)."""
        s_loc = np.flatnonzero(single_k[cols])
        p = pos[i]
        s_loc = s_loc[cols[s_loc] != p]
        selfs = s_loc[:0]
        if nu[i] <= 1 and s_loc.size:
            own = shares_unit(i, idx[cols[s_loc]])
            selfs = s_loc[own]
            s_loc = s_loc[~own]
        return s_loc, selfs

    tol_v = tol * np.maximum(1.0, np.abs(v))
    tgt_hi = np.where(both0, v + (1.0 if integer else 10 * tol_v), req_hi)
    tgt_lo = np.where(both0, v - (1.0 if integer else 10 * tol_v), req_lo)

    def lo_req_for(i: int, s_cell: int) -> float:
        """Required lower bound of primary i against the unit of singleton cell s_cell.

        A unit inside ``i`` always knows ``x_i >= its own value``; what must stay protected is
        the rest of the cell, so the downward protection is capped at ``v_i - v_s`` there.
        """
        mt = int(structure.meet(i, s_cell))
        if mt >= 0 and nu[mt] >= 1:
            own = v[mt]  # the attacker's own share of i (the meet holds only its unit)
            return float(v[i] - min(Lr[i], max(v[i] - own, 0.0)))
        return float(req_lo[i])

    def tgt_lo_for(i: int, s_cell: int) -> float:
        return float(tgt_lo[i]) if both0[i] else lo_req_for(i, s_cell)

    def singleton_check(i: int, cell: "CellAudit") -> None:
        """Exact coalition / single-attacker check of primary i on its component.

        Attacker s needs its own LP only if no feasible table found so far reaches the required
        bound while leaving s at its true value.
        """
        ci = int(cell_lab[pos[i]])
        eng, cols, local = comp_model(ci)
        att, _ = attackers_of(i, cols)
        if att.size == 0:
            return
        pj = np.array([local[int(pos[i])]])
        one = np.ones(1)
        inside = shares_unit(i, idx[cols[att]])
        co = att[~inside]          # coalition of the singletons outside i
        if co.size:
            av = vk[cols[co]]
            eng.set_bounds(co, av, av)
            l_, h_, _, _ = solve_range(eng, pj, one)
            eng.set_bounds(co, np.zeros(co.size), np.full(co.size, np.inf))
            ok, _ = check(i, *rnd(l_ * scale, h_ * scale))
        else:
            ok = True
        cell.coalition_protected = ok
        todo = att[inside] if ok else att
        if todo.size == 0:
            return
        t_ = tol_v[i]
        ups: list = []
        dns: list = []

        _, _, x1, x2 = solve_range(eng, pj, one)
        base_pts = [x for x in (x1, x2) if x is not None]
        for sj in todo:
            s_cell = int(idx[cols[sj]])
            lo_t = tgt_lo_for(i, s_cell)
            vsj = vk[cols[sj]]
            pts = [x for x in base_pts + ups + dns if abs(x[sj] - vsj) <= 1e-9]
            has_up = any(x[pj[0]] * scale >= tgt_hi[i] - t_ for x in pts)
            has_dn = any(x[pj[0]] * scale <= lo_t + t_ for x in pts)
            if (has_up and has_dn) or (both0[i] and (has_up or has_dn)):
                continue
            eng.set_bounds(np.array([sj]), np.array([vsj]), np.array([vsj]))
            l2, h2, x1, x2 = solve_range(eng, pj, one)
            eng.set_bounds(np.array([sj]), np.zeros(1), np.full(1, np.inf))
            ups += [x for x in (x2,) if x is not None]
            dns += [x for x in (x1,) if x is not None]
            ok2, why2 = check(i, *rnd(l2 * scale, h2 * scale), lo_req=lo_req_for(i, s_cell))
            if not ok2:
                cell.protected = False
                cell.attacker = s_cell
                cell.reason = f"recoverable by the unit of singleton cell {cell.attacker} ({why2})"
                singleton_failures.append({"primary": i, "singleton": cell.attacker})
                return

    def exact_primary(i: int, cell: "CellAudit") -> None:
        ci = int(cell_lab[pos[i]])
        eng, cols, local = comp_model(ci)
        l_, h_, _, _ = solve_range(eng, np.array([local[int(pos[i])]]), np.ones(1))
        cell.lo, cell.hi = rnd(max(l_, 0.0) * scale, h_ * scale)
        cell.exact = True
        cell.protected, cell.reason = check(i, cell.lo, cell.hi)
        if cell.protected and singletons:
            singleton_check(i, cell)

    def ball(start: np.ndarray, hops: int) -> np.ndarray:
        """Unknown-cell positions within `hops` relation hops of `start` (positions)."""
        cur = np.unique(start)
        for _ in range(hops):
            r = np.unique(BT[cur].indices)
            nxt = np.unique(B[r].indices)
            if nxt.size == cur.size:
                break
            cur = nxt
        return cur

    def local_model(C: np.ndarray, fixed: np.ndarray):
        """Perturbation LP on cells C (positions): A y = 0 on every relation touching C, y >= -v."""
        rr = np.unique(BT[C].indices)
        Al = AS[rr][:, C]
        lb = -vk[C]
        ub = np.full(C.size, np.inf)
        lb[fixed] = 0.0
        ub[fixed] = 0.0
        counters["local"] += 1
        return _make_engine(engine, Al, np.zeros(rr.size), lb, ub)

    Ycert = None
    n_cert = n_rejected = n_by_cert = 0
    if certificates is not None:
        Ycert, ok_c = verify_certificates(A, v, unk, certificates, tol=tol)
        n_cert = int(ok_c.size)
        n_rejected = int((~ok_c).sum())
        Ycert = Ycert[np.flatnonzero(ok_c)]
    Ycert_csc = Ycert.tocsc() if Ycert is not None and Ycert.shape[0] else None

    cells: list[CellAudit] = []
    by_index: dict[int, CellAudit] = {}
    singleton_failures: list[dict] = []
    lo = np.full(k, np.nan)
    hi = np.full(k, np.nan)
    largest = int(np.max(np.diff(cell_starts))) if ncomp else 0

    if mode == "exact":
        for ci in range(ncomp):
            cols = order_cells[cell_starts[ci]:cell_starts[ci + 1]]
            if row_starts[ci] == row_starts[ci + 1]:
                lo[cols] = 0.0   # a suppressed cell in no relation: only x >= 0 is known
                hi[cols] = math.inf
                continue
            eng, cols, local = comp_model(ci)
            seen_lo = vk[cols].copy()   # the true table is a feasible point
            one = np.ones(1)
            for j in range(cols.size):
                st, f, x = eng.solve(np.array([j]), -one)
                if st == "optimal":
                    hi[cols[j]] = -f
                    np.minimum(seen_lo, x, out=seen_lo)
                elif st == "unbounded":
                    hi[cols[j]] = math.inf
                else:
                    raise RuntimeError(f"audit LP {st} (max of cell {int(idx[cols[j]])})")
            for j in range(cols.size):
                if seen_lo[j] <= 1e-9:
                    lo[cols[j]] = 0.0    # certified by a feasible point: min is the bound 0
                    continue
                st, f, x = eng.solve(np.array([j]), one)
                if st != "optimal":
                    raise RuntimeError(f"audit LP {st} (min of cell {int(idx[cols[j]])})")
                lo[cols[j]] = max(f, 0.0)
                np.minimum(seen_lo, x, out=seen_lo)
        lo *= scale
        hi *= scale
        for j, i in enumerate(idx):
            l_, h_ = rnd(lo[j], hi[j])
            c = CellAudit(index=int(i), primary=bool(prim[i]), lo=l_, hi=h_, value=float(v[i]), exact=True)
            if prim[i]:
                c.required_lo, c.required_hi = float(req_lo[i]), float(req_hi[i])
                c.protected, c.reason = check(int(i), l_, h_)
                if c.protected and singletons:
                    singleton_check(int(i), c)
            cells.append(c)
            by_index[int(i)] = c
    else:
        seen_lo = vk.copy()   # inner bounds from feasible tables found (any model)
        seen_hi = vk.copy()
        coal_lo = vk.copy()   # ... from points valid in the all-singletons-known model
        coal_hi = vk.copy()
        hops0 = max(2, len(structure.shape))
        prim_k = np.flatnonzero(prim[idx])
        one = np.ones(1)

        points: list = []        # feasible tables found: (cell positions, perturbation)
        pts_of: dict = {}        # primary position -> ids of points that move it
        prim_k_mask = prim[idx]
        cert_up = np.zeros(k, bool)
        cert_dn = np.zeros(k, bool)
        single_up = np.zeros(k, bool)      # proved against each single attacker (not the coalition)
        single_dn = np.zeros(k, bool)
        suspect: dict[int, int] = {}       # a singleton no certificate of the primary avoids

        def reaches(cells: np.ndarray, x: np.ndarray):
            """(up, down): does table value x of each cell reach its required bound (for a
            "not exactly determined" cell: any move an attacker cannot round away)?"""
            t = tol * np.maximum(1.0, np.abs(v[cells]))
            d = np.abs(x - v[cells])
            far = d >= 1 - 1e-9 if integer else d > t
            z = both0[cells]
            return np.where(z, far, x >= req_hi[cells] - t), np.where(z, far, x <= req_lo[cells] + t)

        if Ycert_csc is not None:
            C_ = Ycert.tocoo()
            r_, c_, y_ = C_.row, C_.col, C_.data
            pk_ = pos[c_]
            x_ = (v[c_] + y_) / scale
            np.minimum.at(seen_lo, pk_, x_)
            np.maximum.at(seen_hi, pk_, x_)
            # singleton cells each certificate changes
            moved_single = np.bincount(r_, weights=single_k[pk_].astype(float), minlength=Ycert.shape[0])
            free = moved_single[r_] == 0
            np.minimum.at(coal_lo, pk_[free], x_[free])
            np.maximum.at(coal_hi, pk_[free], x_[free])
            # per primary: the certificate may change the primary itself and no other singleton
            own = prim[c_] & (moved_single[r_] - single_k[pk_] == 0)
            reach_up, reach_dn = reaches(c_, v[c_] + y_)
            up, dn = own & reach_up, own & reach_dn
            np.logical_or.at(cert_up, pk_[up], True)
            np.logical_or.at(cert_dn, pk_[dn], True)
            cert_up |= cert_dn & both0[idx]
            cert_dn |= cert_up & both0[idx]
            # certificates that also change other singleton cells: each holds against every
            # attacker it leaves unchanged, so together they prove the primary against each single
            # attacker when no singleton is changed by all of them (their intersection is empty)
            others = prim[c_] & ~own
            if others.any():
                smask = (unk & (nu == 1)) if singletons else np.zeros(n, bool)
                S = (Ycert @ sp.diags(smask.astype(float))).tocsr()
                S.eliminate_zeros()
                Yc = Ycert_csc
                todo = np.unique(c_[others & ~(cert_up[pk_] & cert_dn[pk_])])
                for me in todo.tolist():
                    p0 = int(pos[me])
                    rows_p = Yc.indices[Yc.indptr[me]:Yc.indptr[me + 1]]
                    x_p = v[me] + Yc.data[Yc.indptr[me]:Yc.indptr[me + 1]]
                    t0_ = tol * max(1.0, abs(v[me]))
                    moved = []
                    for r0 in rows_p.tolist():
                        mv = S.indices[S.indptr[r0]:S.indptr[r0 + 1]]
                        mv = mv[mv != me]
                        if nu[me] <= 1 and mv.size:     # the primary's own unit is no attacker
                            mv = mv[~shares_unit(me, mv)]
                        moved.append(set(mv.tolist()))
                    reach = dict(zip(("up", "dn"), reaches(np.full(x_p.size, me), x_p)))
                    for d_, flag, ok_arr in (("up", cert_up, single_up), ("dn", cert_dn, single_dn)):
                        if flag[p0]:
                            continue
                        R = np.flatnonzero(reach[d_])
                        if R.size == 0:
                            continue
                        inter = set.intersection(*(moved[j] for j in R))
                        if inter and d_ == "dn" and not both0[me]:
                            # a unit inside the primary knows its share: against it the downward
                            # requirement is lower (lo_req_for), any certificate leaving it reaches
                            inter = {s_ for s_ in inter if not any(
                                s_ not in moved[j] and x_p[j] <= lo_req_for(me, s_) + t0_
                                for j in range(len(moved)))}
                        if inter:
                            suspect[p0] = min(inter)
                        else:
                            ok_arr[p0] = True

        def certify(eng, pl, pk, i, C, need_up, need_dn, coal_ok, lo_t=None):
            """Local LPs for primary i: (ok_up, ok_dn); record the feasible tables found."""
            t_ = tol * max(1.0, abs(v[i]))
            lo_t = tgt_lo[i] if lo_t is None else lo_t
            ok_up, ok_dn = not need_up, not need_dn
            pts = []
            if need_up:
                st, f, x = eng.solve(pl, -one)
                if st == "unbounded":
                    ok_up = True
                elif st == "optimal":
                    pts.append(x)
                    ok_up = (vk[pk] - f) * scale >= tgt_hi[i] - t_
            if need_dn and not (both0[i] and ok_up):
                st, f, x = eng.solve(pl, one)
                if st == "optimal":
                    pts.append(x)
                    ok_dn = (vk[pk] + f) * scale <= lo_t + t_
            for x in pts:
                nzp = np.abs(x) > 1e-12
                if nzp.any():
                    points.append((C[nzp], x[nzp]))
                    for q in C[nzp & prim_k_mask[C]]:
                        pts_of.setdefault(int(q), []).append(len(points) - 1)
                xx = vk[C] + x
                seen_lo[C] = np.minimum(seen_lo[C], xx)
                seen_hi[C] = np.maximum(seen_hi[C], xx)
                if coal_ok:
                    coal_lo[C] = np.minimum(coal_lo[C], xx)
                    coal_hi[C] = np.maximum(coal_hi[C], xx)
            if both0[i]:
                return ok_up or ok_dn
            return ok_up and ok_dn

        strides = np.array([int(np.prod(structure.shape[d + 1:], dtype=np.int64))
                            for d in range(len(structure.shape))], dtype=np.int64)

        def axis_box(i: int) -> np.ndarray:
            """Suppressed cells in the product of the codes met on i's axis lines."""
            co = np.unravel_index(i, structure.shape)
            per = []
            for d, nd in enumerate(structure.shape):
                line = i + (np.arange(nd) - co[d]) * strides[d]
                per.append(np.flatnonzero(unk[line]))
            g = np.meshgrid(*per, indexing="ij")
            cells_ = np.ravel_multi_index(tuple(x.ravel() for x in g), structure.shape)
            p_ = pos[cells_]
            return np.unique(p_[p_ >= 0])

        def axis_box_small(i: int, K: int = 3) -> np.ndarray:
            """Like axis_box, but per dimension only the K axis codes that close the most
            rectangles with the other dimensions' axis codes (where a hypercube would lie)."""
            co = np.unravel_index(i, structure.shape)
            nd_ = len(structure.shape)
            axes = []
            for d, nd in enumerate(structure.shape):
                line = i + (np.arange(nd) - co[d]) * strides[d]
                a = np.flatnonzero(unk[line])
                axes.append(a[a != co[d]])
            per = []
            for d in range(nd_):
                a = axes[d]
                if a.size <= K:
                    per.append(np.append(a, co[d]))
                    continue
                score = np.zeros(a.size)
                for e in range(nd_):
                    if e == d or axes[e].size == 0:
                        continue
                    grid = i + ((a - co[d]) * strides[d])[:, None] + ((axes[e] - co[e]) * strides[e])[None, :]
                    score += unk[grid].sum(1)
                keep = a[np.argsort(-score, kind="stable")[:K]]
                per.append(np.append(keep, co[d]))
            g = np.meshgrid(*per, indexing="ij")
            cells_ = np.ravel_multi_index(tuple(x.ravel() for x in g), structure.shape)
            p_ = pos[cells_]
            return np.unique(p_[p_ >= 0])

        def local_sets(pk: int, i: int):
            C0 = axis_box_small(i)
            yield C0
            C = axis_box(i)
            if C.size > C0.size and C.size <= max_local:
                yield C
            last = max(C.size, C0.size)
            for h in (hops0, 2 * hops0):
                C2 = ball(np.array([pk]), h)
                if C2.size > max_local:
                    break
                if C2.size > last:
                    last = C2.size
                    yield C2

        def local_verdict(pk, i, C, c, need_up, need_dn):
            """True/False when local LPs on C decide i's protection, None when they cannot."""
            att = single_k[C] & (C != pk)
            if nu[i] <= 1 and att.any():
                am = np.flatnonzero(att)
                att[am[shares_unit(i, idx[C[am]])]] = False
            att_l = np.flatnonzero(att)
            inside = shares_unit(i, idx[C[att_l]]) if att_l.size else np.zeros(0, bool)
            co_mask = np.zeros(C.size, bool)
            co_mask[att_l[~inside]] = True
            eng = local_model(C, co_mask)
            pl = np.array([int(np.searchsorted(C, pk))])
            # 1. every singleton in reach outside i known at once (the points are valid for the
            #    other primaries' checks too unless i is itself a singleton: its cell is free here)
            if certify(eng, pl, pk, i, C, need_up, need_dn,
                       coal_ok=not single_k[pk] and not inside.any()):
                todo = att_l[inside]
                c.coalition_protected = True
            else:
                c.coalition_protected = False
                # 2. no singleton known
                co = att_l[~inside]
                if co.size:
                    eng.set_bounds(co, -vk[C[co]], np.full(co.size, np.inf))
                if not (co.size and certify(eng, pl, pk, i, C, True, True, coal_ok=False)):
                    return None
                todo = att_l
            # 3. one singleton at a time (those out of reach are unchanged in every local point);
            #    a singleton the local LP cannot rule out sends the primary to a larger set or to
            #    the exact check on its whole component
            for sj in todo:
                s_cell = int(idx[C[sj]])
                lo_t = tgt_lo_for(i, s_cell)
                eng.set_bounds(np.array([sj]), np.zeros(1), np.zeros(1))
                ok = certify(eng, pl, pk, i, C, True, True, coal_ok=False, lo_t=lo_t)
                eng.set_bounds(np.array([sj]), -vk[C[[sj]]], np.full(1, np.inf))
                if not ok:
                    return None
            c.protected = True
            return bool(c.protected)

        for pk in prim_k:
            i = int(idx[pk])
            t_ = tol_v[i]
            ok_up = coal_hi[pk] * scale >= tgt_hi[i] - t_
            ok_dn = coal_lo[pk] * scale <= tgt_lo[i] + t_
            c = CellAudit(index=i, primary=True, lo=0.0, hi=0.0, value=float(v[i]), exact=False,
                          required_lo=float(req_lo[i]), required_hi=float(req_hi[i]))
            by_index[i] = c
            if cert_up[pk] and cert_dn[pk]:
                c.protected = c.coalition_protected = True
                n_by_cert += 1
                continue
            s_up, s_dn = cert_up[pk] or single_up[pk], cert_dn[pk] or single_dn[pk]
            if (s_up and s_dn) or (both0[i] and (s_up or s_dn)):
                c.protected = True
                c.coalition_protected = None     # not checked: each single attacker is
                n_by_cert += 1
                continue
            if (ok_up and ok_dn) or (both0[i] and (ok_up or ok_dn)):
                c.protected = c.coalition_protected = True
                continue
            ok_up |= bool(cert_up[pk])
            ok_dn |= bool(cert_dn[pk])
            need_up, need_dn = not ok_up, not ok_dn
            if both0[i]:
                need_up = need_dn = True
            verdict = None
            for C in local_sets(pk, i):
                verdict = local_verdict(pk, i, C, c, need_up, need_dn)
                if verdict is not None:
                    break
            if verdict is None:
                csize = int(cell_starts[cell_lab[pk] + 1] - cell_starts[cell_lab[pk]])
                if csize <= max_exact_component:
                    exact_primary(i, c)   # exact on the whole component, incl. all singletons
                else:
                    # conservative: what cannot be proved is reported unprotected (never the
                    # other way round); the suppression then adds a local proof
                    c.protected = False
                    c.reason = "not proven by local LPs (component too large for the exact check)"
                    c.suspect = suspect.get(int(pk))

        for j, i in enumerate(idx):
            i = int(i)
            c = by_index.get(i)
            l_, h_ = rnd(seen_lo[j] * scale, seen_hi[j] * scale)
            if c is None:
                c = CellAudit(index=i, primary=bool(prim[i]), lo=l_, hi=h_, value=float(v[i]), exact=False)
                if prim[i]:   # certified by earlier points without an LP of its own
                    c.required_lo, c.required_hi = float(req_lo[i]), float(req_hi[i])
                    c.protected = True
                    c.coalition_protected = True
                by_index[i] = c
            elif not c.exact:
                c.lo, c.hi = l_, h_
            cells.append(c)

    for i in np.flatnonzero(known0):
        c = CellAudit(index=int(i), primary=False, lo=0.0, hi=0.0, value=float(v[i]),
                      reason="known empty cell", exact=True)
        cells.append(c)
        by_index[int(i)] = c
    for i in np.flatnonzero(prim & ~sup):
        c = CellAudit(index=int(i), primary=True, lo=float(v[i]), hi=float(v[i]), value=float(v[i]),
                      protected=False, reason="published", exact=True,
                      required_lo=float(req_lo[i]), required_hi=float(req_hi[i]))
        cells.append(c)
        by_index[int(i)] = c

    # ---- unions of suppressed cells in a line
    union_failures: list[dict] = []
    if union_is_unsafe is not None and k:
        child = A.copy()
        child.data = (child.data < 0).astype(np.int8)
        child.eliminate_zeros()
        cnt = np.asarray(child @ unk.astype(np.int64)).reshape(-1)
        checked: set = set()
        for r in np.flatnonzero(cnt >= 2):
            ch = child.indices[child.indptr[r]:child.indptr[r + 1]]
            T = np.sort(ch[unk[ch]])
            sets = [tuple(T.tolist())]
            if 2 < T.size <= max_union_pairs:
                sets += [(int(a), int(bb)) for ai, a in enumerate(T) for bb in T[ai + 1:]]
            for Q in sets:
                if Q in checked:
                    continue
                checked.add(Q)
                q = np.asarray(Q, dtype=np.int64)
                if not union_is_unsafe(q):
                    continue
                loc = pos[q]
                vq = float(v[q].sum())
                tq = tol * max(1.0, abs(vq))
                moved = False
                if Ycert_csc is not None:
                    moved = bool(np.any(np.abs(np.asarray(Ycert_csc[:, q].sum(axis=1)).ravel()) > tq))
                if mode == "protection" and not moved:
                    # a feasible table found while proving the primaries may already move the sum
                    for pid in {p_ for q_ in loc for p_ in pts_of.get(int(q_), ())}:
                        Cp, yp = points[pid]
                        hit = np.isin(Cp, loc)
                        if abs(yp[hit].sum()) * scale > tq:
                            moved = True
                            break
                if mode == "protection" and not moved:
                    C = np.unique(np.concatenate([axis_box_small(int(q_)) for q_ in q]))
                    if C.size > max_local:
                        C = ball(loc, max(2, len(structure.shape)))
                    eng = local_model(C, np.zeros(C.size, bool))
                    ql = np.searchsorted(C, loc)
                    lo_s, hi_s, _, _ = solve_range(eng, ql, np.ones(ql.size))
                    lo_s, hi_s = rnd(vq + lo_s * scale, vq + hi_s * scale)
                    moved = hi_s - lo_s > tq
                if not moved and mode == "protection" and max(
                        int(cell_starts[ci + 1] - cell_starts[ci]) for ci in np.unique(cell_lab[loc])) \
                        > max_exact_component:
                    union_failures.append({"cells": list(Q), "lo": math.nan, "hi": math.nan})
                    continue
                if not moved:
                    labs = cell_lab[loc]
                    lo_s = hi_s = 0.0
                    for ci in np.unique(labs):
                        eng, cols, local = comp_model(int(ci))
                        lc = np.array([local[int(x)] for x in loc[labs == ci]])
                        a_, b_, _, _ = solve_range(eng, lc, np.ones(lc.size))
                        lo_s += a_ * scale
                        hi_s += b_ * scale
                    lo_s, hi_s = rnd(lo_s, hi_s)
                    if hi_s - lo_s <= tq:
                        union_failures.append({"cells": list(Q), "lo": lo_s, "hi": hi_s})

    if integer_exact and k:
        _integer_exact_check(structure, v, unk, prim, by_index, check, tol)

    n_lp = sum(e[0].n_solves for e in comp_engines.values())
    eng_name = "highs" if (engine in ("auto", "highs") and _HAVE_HIGHS) else "linprog-highs"
    ok = all(c.protected for c in cells if c.primary) and not union_failures
    return AuditResult(
        protected=ok,
        cells=sorted(cells, key=lambda c: c.index),
        method=f"lp-{eng_name}",
        intervals=mode,
        integer=integer,
        zeros_known=zeros_known,
        n_lp=n_lp,
        n_local_lp=counters["local"],
        seconds=time.perf_counter() - t0,
        n_components=int(ncomp),
        largest_component=int(largest),
        union_failures=union_failures,
        singleton_failures=singleton_failures,
        keys=_LazyKeys(structure),
        certificates=n_cert,
        certificates_rejected=n_rejected,
        proved_by_certificate=n_by_cert,
    )


def verify_certificates(A: sp.spmatrix, values: np.ndarray, unknown: np.ndarray,
                        certificates: Sequence[tuple[np.ndarray, np.ndarray]], tol: float = 1e-6):
    """Check claimed perturbations; returns (Y, ok): Y a sparse (certificates x cells) matrix and
    ``ok`` a bool per certificate.

    A certificate ``(cells, y)`` is valid when ``y`` is finite, non-zero only on ``unknown`` cells
    (suppressed, not known zeros), keeps every relation of ``A`` (``|A @ y| <= tol * max(1, |y|)``
    per relation) and keeps every cell non-negative (``v + y >= -tol * max(1, v)``).  Then
    ``values + y`` is a table the attacker cannot tell from the true one.  Repeated cells in one
    certificate are summed.
    """
    v = np.asarray(values, dtype=float).reshape(-1)
    n = v.size
    nc = len(certificates)
    if nc == 0:
        return sp.csr_matrix((0, n)), np.zeros(0, bool)
    lens = np.fromiter((np.size(c) for c, _ in certificates), dtype=np.int64, count=nc)
    ylens = np.fromiter((np.size(y) for _, y in certificates), dtype=np.int64, count=nc)
    ok = lens == ylens
    keep = [j for j in range(nc) if ok[j]]
    rows = np.repeat(np.asarray(keep, dtype=np.int64), lens[keep]) if keep else np.zeros(0, np.int64)
    cols = np.concatenate([np.asarray(certificates[j][0], dtype=np.int64).reshape(-1) for j in keep]) \
        if keep else np.zeros(0, np.int64)
    vals = np.concatenate([np.asarray(certificates[j][1], dtype=float).reshape(-1) for j in keep]) \
        if keep else np.zeros(0)
    inr = (cols >= 0) & (cols < n)
    bad = ~inr | ~np.isfinite(vals)
    ok[np.unique(rows[bad])] = False
    rows, cols, vals = rows[~bad], cols[~bad], vals[~bad]
    Y = sp.csr_matrix((vals, (rows, cols)), shape=(nc, n))
    Y.sum_duplicates()
    Y.eliminate_zeros()
    C = Y.tocoo()
    unk = np.asarray(unknown, dtype=bool).reshape(-1)
    off = ~unk[C.col]                                   # moves a published cell or a known zero
    neg = v[C.col] + C.data < -tol * np.maximum(1.0, np.abs(v[C.col]))
    ok[np.unique(C.row[off | neg])] = False
    ymax = np.zeros(nc)
    np.maximum.at(ymax, C.row, np.abs(C.data))
    R = (Y @ sp.csr_matrix(A).T).tocoo()                # relations x certificates, transposed
    res_bad = np.abs(R.data) > tol * np.maximum(1.0, ymax[R.row])
    ok[np.unique(R.row[res_bad])] = False
    return Y, ok


class _LazyKeys:
    """Cell keys on demand (avoids materialising all keys of a big table)."""

    def __init__(self, structure):
        self.s = structure

    def __getitem__(self, i: int) -> tuple:
        return self.s.key(int(i))


def _integer_exact_check(structure, v, unk, prim, by_index, check, tol) -> None:
    """Exact integer bounds for primaries via MILP (small tables only)."""
    from scipy.optimize import Bounds, LinearConstraint, milp

    A = structure.constraints()
    idx = np.flatnonzero(unk)
    AS = A[:, idx].tocsr()
    b = -(A @ np.where(unk, 0.0, v))
    keep = np.diff(AS.indptr) > 0
    AS, b = AS[keep], b[keep]
    cons = LinearConstraint(AS, b, b)
    integrality = np.ones(idx.size)
    bounds = Bounds(np.zeros(idx.size), np.full(idx.size, np.inf))
    for j, i in enumerate(idx):
        if not prim[i]:
            continue
        c = np.zeros(idx.size)
        c[j] = 1
        r1 = milp(c, constraints=cons, integrality=integrality, bounds=bounds)
        r2 = milp(-c, constraints=cons, integrality=integrality, bounds=bounds)
        lo_ = r1.fun if r1.status == 0 else -math.inf
        hi_ = -r2.fun if r2.status == 0 else math.inf
        cell = by_index[int(i)]
        if lo_ > cell.lo or hi_ < cell.hi:
            cell.lo, cell.hi = float(lo_), float(hi_)
            ok, why = check(int(i), cell.lo, cell.hi)
            if cell.protected and not ok:
                cell.protected = False
                cell.reason = why + " (integer bounds)"
