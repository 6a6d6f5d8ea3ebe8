"""Secondary cell suppression for hierarchical, linked (additive) tables.

Entry points: :func:`secondary_suppression` (returns the secondary mask, the agreed contract) and
:func:`suppress` (same, returns a :class:`SuppressionResult` with the audit, cost and timings).

Protection model
----------------
A primary cell ``p`` with value ``v_p`` and required protection ``L_p`` (below) / ``U_p`` (above) is
protected when the attacker's feasible interval (every additive, non-negative table that agrees
with the published cells) reaches ``v_p - min(L_p, v_p)`` and ``v_p + U_p`` (see :mod:`sdc.audit`).
Equivalently: there are **additive perturbations** ``y`` (``A @ y == 0``) that are zero on every
published cell, keep the table non-negative (``v + y >= 0``) and move ``p`` by ``+U_p`` and by
``-min(L_p, v_p)``.  Every method here constructs such a perturbation for each primary cell and
suppresses its support; the perturbation is a proof of protection that later suppressions cannot
break (suppressing more only enlarges the feasible set).

Methods
-------
``"hypercube"`` (fast; default inside ``"auto"``)
    A generalisation of the hypercube method (GHMITER) to hierarchies: the perturbation for ``p``
    is a tensor product of one-dimensional additive vectors, one per dimension.  In dimension ``d``
    with ``p`` at code ``c`` the candidates are

    * *pair*: ``+1`` on ``c`` and on a path from ``c`` down to a leaf, ``-1`` on a sibling ``s`` of
      ``c`` and a path from ``s`` down to a leaf (for leaves: just ``+c, -s``);
    * *path*: ``+1`` on a path from a leaf below ``c`` up to the root (the only option at a root).

    Any tensor product of such vectors satisfies every relation of the table, so the corners
    (product of the supports, sign = product of signs) form a valid perturbation.  Candidates are
    ranked per dimension by the cost of their cells on the axis line through ``p`` (exact capacity
    and forbidden-cell checks there), the best few per dimension are combined and every product is
    evaluated in one vectorised step: cost of corners not yet suppressed, capacity (a corner of
    sign -1 must be able to drop by ``U_p``; of sign +1 by ``L_p``), no forbidden corner.  The
    cheapest valid one is suppressed.  Primaries are processed most-aggregated first (their
    hypercubes reach down to the leaves and are reused by the cells below).
``"lp"`` (slower, usually cheaper patterns)
    For each primary and direction, an LP finds the cheapest perturbation (weighted L1 relaxation
    of the fixed-charge cost, as in Fischetti & Salazar's heuristic) on a neighbourhood box of the
    cell (its line siblings, parent and their descendants in every dimension), falling back to the
    whole table.
``"optimal"``
    Mixed-integer program (``scipy.optimize.milp``/HiGHS) minimising total cost over all patterns
    under the same protection model (one perturbation vector per primary and direction).  Small
    tables only (a few hundred cells, tens of primaries).
``"auto"``
    ``"lp"`` for small tables (``n_cells <= 500``), ``"hypercube"`` otherwise.

Every method is followed by the same steps, repeated until the audit passes (``max_rounds``):
the union rule pass, an audit by :func:`sdc.audit.audit` (independent code), and an LP repair for
every cell or union the audit reports.  If the audit still fails after ``max_rounds`` the result
says so (``SuppressionResult.audit.protected`` is False); the pattern is never silently unsafe.

Traps
-----
* **Zero cells**: with ``zeros_known=True`` a non-primary cell with ``n_units == 0`` (empty or
  structural zero) is never chosen as a secondary: the attacker is assumed to know it is 0.
* **Singletons** (``n_units == 1``): the unit of such a cell knows its value.  The hypercube and LP
  steps first look for a perturbation that leaves *every* singleton cell other than ``p`` unchanged
  (then no singleton, nor any coalition of them, can undo it); only if none exists is the
  restriction dropped and the audit's per-singleton check decides, with a targeted repair.
* **Unions**: ``union_is_unsafe(indices) -> bool`` is asked about the suppressed children of every
  line whose parent is published and that has two or more of them (their sum is then known
  exactly).  For an unsafe union another child of the line is suppressed together with a hypercube
  pairing it with a member of the union, so that the union's sum can move.  The audit checks the
  result by LP (also for pairs and for lines with a suppressed parent).

Cost
----
``cost=None`` means cost = value (for a frequency table the value is the count) plus a small
constant (1e-3 of the mean positive value) so that among equally valued options fewer cells win.
Suppressed cells cost nothing to reuse.

Integer tables (all values integral): protection amounts are rounded up to integers and a
"not exactly determined" requirement (``L = U = 0``) becomes a move of at least 1, matching the
audit's integer rounding.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import scipy.sparse as sp
from scipy.optimize import linprog

from .audit import AuditResult, audit as _audit
from .structure import TableStructure

__all__ = ["secondary_suppression", "suppress", "SuppressionResult"]


@dataclass
class SuppressionResult:
    secondary: np.ndarray          # bool mask of secondary cells
    suppressed: np.ndarray         # primary | secondary
    audit: AuditResult | None
    method: str
    cost: float                    # total cost of the secondary cells
    rounds: int = 0
    repairs: int = 0
    seconds: float = 0.0
    timings: dict = field(default_factory=dict)
    fallbacks: int = 0             # primaries the main method could not protect on its own
    certificates: list = field(default_factory=list)   # (cells, y) perturbations found (proofs)


# ============================================================================ per-dimension candidates
class _DimCandidates:
    """One-dimensional additive vectors with +1 at a given code (see module docstring)."""

    def __init__(self, dim, max_paths: int = 8, max_pair_levels: int = 2):
        self.max_pair_levels = max_pair_levels
        codes = dim.codes
        n = len(codes)
        pos = {c: i for i, c in enumerate(codes)}
        self.n = n
        par = np.full(n, -1, dtype=np.int64)
        for c, p in dim.parent.items():
            par[pos[c]] = pos[p]
        self.parent = par
        kids: list[list[int]] = [[] for _ in range(n)]
        for i in range(n):
            if par[i] >= 0:
                kids[par[i]].append(i)
        self.kids = kids
        # down paths (code -> ... -> leaf), at most max_paths per code, evenly spread over leaves
        down: list[list[tuple]] = [None] * n  # type: ignore

        def paths(i: int) -> list[tuple]:
            if down[i] is not None:
                return down[i]
            if not kids[i]:
                down[i] = [(i,)]
                return down[i]
            allp = []
            for ch in kids[i]:
                for pth in paths(ch):
                    allp.append((i,) + pth)
            if len(allp) > max_paths:
                # prefer short paths, then spread
                allp.sort(key=len)
                sel = np.linspace(0, len(allp) - 1, max_paths).round().astype(int)
                allp = [allp[j] for j in sorted(set(sel.tolist()))]
            down[i] = allp
            return allp

        anc: list[tuple] = []
        for i in range(n):
            a = []
            j = par[i]
            while j >= 0:
                a.append(int(j))
                j = par[j]
            anc.append(tuple(a))
        self._paths = paths
        self._anc = anc
        self._cache: dict[int, tuple] = {}

    def get(self, i: int):
        """(P, S, partner) for code position i: P (nc x M) positions padded with -1, S signs."""
        if i in self._cache:
            return self._cache[i]
        rows: list[tuple[list[int], list[int]]] = []
        partner: list[int] = []
        # pairs at the level of i or of an ancestor a of i: +1 on (leaf below i) .. i .. a,
        # -1 on a sibling s of a and a path below s; the partner recorded is s
        up_chain = [i, *self._anc[i]]
        for lvl, a in enumerate(up_chain):
            pa = self.parent[a]
            if pa < 0:
                break
            if lvl > 0 and len(self.kids[pa]) > 1 and lvl > self.max_pair_levels:
                break
            above = up_chain[1:lvl + 1]
            for s in self.kids[pa]:
                if s == a:
                    continue
                for P in self._paths(i):
                    for Q in self._paths(s):
                        plus = list(P) + above
                        rows.append((plus + list(Q), [1] * len(plus) + [-1] * len(Q)))
                        partner.append(s)
        for P in self._paths(i):
            supp = list(P) + list(self._anc[i])
            rows.append((supp, [1] * len(supp)))
            partner.append(-1)
        M = max(len(r[0]) for r in rows)
        Pm = np.full((len(rows), M), -1, dtype=np.int64)
        Sm = np.zeros((len(rows), M), dtype=np.int8)
        for r, (pp, ss) in enumerate(rows):
            Pm[r, : len(pp)] = pp
            Sm[r, : len(ss)] = ss
        out = (Pm, Sm, np.asarray(partner, dtype=np.int64))
        self._cache[i] = out
        return out


# ============================================================================ context
class _Ctx:
    def __init__(self, structure: TableStructure, v, primary, n_units, lower, upper, cost,
                 zeros_known: bool, singletons: bool):
        self.s = structure
        self.shape = structure.shape
        self.k = len(self.shape)
        self.strides = np.array([int(np.prod(self.shape[d + 1:], dtype=np.int64)) for d in range(self.k)],
                                dtype=np.int64)
        self.v = v
        self.n = v.size
        self.primary = primary
        self.nu = n_units
        self.integer = bool(np.all(v == np.round(v)))
        self.known0 = (~primary & (n_units == 0) & (v == 0)) if zeros_known else np.zeros(self.n, bool)
        self.single = (n_units == 1) if singletons else np.zeros(self.n, bool)
        self.cost = cost
        self.sup = primary.copy()
        self.certs: list[tuple[np.ndarray, np.ndarray]] = []   # perturbations found (proofs)
        self._single_idx = np.flatnonzero(self.single)
        eps_c = 1e-3 * (float(cost[cost > 0].mean()) if np.any(cost > 0) else 1.0)
        self.eps_c = eps_c
        self.dims = [_DimCandidates(d) for d in structure.dimensions]
        self.A = structure.constraints()
        self.Acsc = self.A.tocsc()
        # required moves
        L = np.minimum(lower, v)
        U = upper.copy()
        if self.integer:
            L = np.ceil(L - 1e-9)
            U = np.ceil(U - 1e-9)
            tiny = 1.0
        else:
            tiny = 1e-6 * max(1.0, float(np.abs(v).max()) if v.size else 1.0)
        both0 = (L <= 0) & (U <= 0)
        # "not exactly determined": a move of `tiny` in whichever direction is possible
        self.d_up = np.where(both0, tiny, U)
        self.d_dn = np.where(both0 & (v >= tiny), 0.0, L)
        self.both0 = both0
        self.tiny = tiny

    def take(self, cells: np.ndarray, y: np.ndarray) -> None:
        """Suppress the support of perturbation ``y`` on ``cells`` and keep it as a certificate."""
        cells = np.asarray(cells, dtype=np.int64)
        self.sup[cells] = True
        self.certs.append((cells, np.asarray(y, dtype=float)))

    def coords(self, i: int) -> np.ndarray:
        return np.array(np.unravel_index(i, self.shape), dtype=np.int64)

    def ceff(self) -> np.ndarray:
        return np.where(self.sup, 0.0, self.cost + self.eps_c)

    def forbidden(self, strict_singletons: bool, for_cells: np.ndarray | None = None) -> np.ndarray:
        """Cells a perturbation must not touch.

        Known zeros always; with ``strict_singletons`` also every singleton cell, except those
        whose only unit is the unit of the protected cell itself (a singleton cell nested with a
        target cell that has at most one unit): knowing your own value is no attack.
        """
        f = self.known0.copy()
        if strict_singletons:
            f |= self.single
            if for_cells is not None:
                sidx = self._single_idx
                for c in np.asarray(for_cells).reshape(-1):
                    if not sidx.size:
                        continue
                    # singletons whose only unit is also in the target: that unit knows its own
                    # share of the target and nothing more follows from that alone (with one
                    # unit in the target it is the target's own unit); the audit checks each
                    mt = self.s.meet(int(c), sidx)
                    f[sidx[(mt >= 0) & (self.nu[np.maximum(mt, 0)] >= 1)]] = False
        return f


# ============================================================================ hypercube
def _best_hypercube(ctx: _Ctx, ip: int, d_up: float, d_dn: float, ceff: np.ndarray, forb: np.ndarray,
                    restrict: dict | None = None, budget: int = 40000, need_both: bool = True,
                    raw: bool = False):
    """Cheapest valid hypercube perturbation through cell ip.

    Returns (support indices, cost, directions, signs) where directions is "both", "up" or "down"
    and ``signs`` (+1/-1 per support cell, +1 at ip) is the perturbation's shape: ``d_up * signs``
    moves ip up by ``d_up``, ``-d_dn * signs`` down by ``d_dn``; or None.  ``restrict``: {dim:
    allowed partner code positions} (union repairs).  ``raw``: return every evaluated hypercube
    instead, as (cells, valid, signs, cost, up_bad, down_bad) arrays with one row per hypercube.
    """
    coords = ctx.coords(ip)
    v = ctx.v
    sel = []
    for d in range(ctx.k):
        P, S, partner = ctx.dims[d].get(int(coords[d]))
        if restrict and d in restrict:
            keep = np.isin(partner, restrict[d])
            P, S, partner = P[keep], S[keep], partner[keep]
            if P.shape[0] == 0:
                return None
        ok = P >= 0
        cells = ip + (np.where(ok, P, coords[d]) - coords[d]) * ctx.strides[d]
        isp = cells == ip
        lc = np.where(ok & ~isp, ceff[cells], 0.0).sum(1)
        bad = (ok & ~isp & forb[cells]).any(1)
        vv = v[cells]
        up_bad = (ok & (S < 0) & (vv < d_up)).any(1)
        dn_bad = (ok & (S > 0) & (vv < d_dn)).any(1)
        sel.append((P, S, lc, bad, up_bad, dn_bad))
    # choose K_d per dimension under the corner budget
    Ms = [s[0].shape[1] for s in sel]
    corners = int(np.prod(Ms))
    kmax = max(1, int((budget / max(corners, 1)) ** (1.0 / ctx.k)))
    dims_sel = []
    for (P, S, lc, bad, up_bad, dn_bad) in sel:
        score = lc + np.where(bad, np.inf, 0.0)
        # prefer candidates that work in both directions, keep some one-directional ones too
        both_bad = up_bad | dn_bad
        s_both = np.where(both_bad, np.inf, score)
        o1 = np.argsort(s_both, kind="stable")[:kmax]
        o1 = o1[np.isfinite(s_both[o1])]
        extra = np.argsort(np.where(bad | (up_bad & dn_bad), np.inf, score), kind="stable")[:max(1, kmax // 2)]
        o = np.unique(np.concatenate([o1, extra]))
        o = o[np.isfinite(score[o])]
        if o.size == 0:
            return None
        dims_sel.append((P[o], S[o]))
    k = ctx.k
    Ks = [p.shape[0] for p, _ in dims_sel]
    Ms = [p.shape[1] for p, _ in dims_sel]
    full = Ks + Ms
    idx = np.zeros(full, dtype=np.int64)
    valid = np.ones(full, dtype=bool)
    sign = np.ones(full, dtype=np.int8)
    for d, (P, S) in enumerate(dims_sel):
        shp = [1] * (2 * k)
        shp[d] = Ks[d]
        shp[k + d] = Ms[d]
        Pr = P.reshape(shp)
        idx = idx + np.where(Pr >= 0, Pr, 0) * ctx.strides[d]
        valid = valid & (Pr >= 0)
        sign = sign * S.reshape(shp)
    nK = int(np.prod(Ks))
    idx = idx.reshape(nK, -1)
    valid = np.broadcast_to(valid, full).reshape(nK, -1)
    sign = np.broadcast_to(sign, full).reshape(nK, -1)
    cost = np.where(valid, ceff[idx], 0.0).sum(1)
    bad = (valid & forb[idx] & (idx != ip)).any(1)
    vv = ctx.v[idx]
    up_bad = (valid & (sign < 0) & (vv < d_up)).any(1) | bad
    dn_bad = (valid & (sign > 0) & (vv < d_dn)).any(1) | bad
    if raw:
        return idx, valid, sign, cost, up_bad, dn_bad
    ok_both = ~(up_bad | dn_bad)
    if ok_both.any():
        j = int(np.argmin(np.where(ok_both, cost, np.inf)))
        return idx[j][valid[j]], float(cost[j]), "both", sign[j][valid[j]].astype(float)
    if need_both:
        return None
    res = []
    if (~up_bad).any():
        j = int(np.argmin(np.where(~up_bad, cost, np.inf)))
        res.append((idx[j][valid[j]], float(cost[j]), "up", sign[j][valid[j]].astype(float)))
    if (~dn_bad).any():
        j = int(np.argmin(np.where(~dn_bad, cost, np.inf)))
        res.append((idx[j][valid[j]], float(cost[j]), "down", sign[j][valid[j]].astype(float)))
    return res or None


def _protect_hypercube(ctx: _Ctx, ip: int, stricts=(True, False), extra_forbid=None) -> bool:
    """Suppress a hypercube (or one per direction) protecting primary ip; False if none found.

    Compares one hypercube valid for both directions with two separate ones (up, then down with
    the up hypercube's cells already free) and takes the cheaper.  The perturbations are kept as
    certificates for the audit (``ctx.certs``).
    """
    d_up, d_dn = float(ctx.d_up[ip]), float(ctx.d_dn[ip])

    def forbidden(strict):
        f = ctx.forbidden(strict, [ip])
        return f if extra_forbid is None else f | extra_forbid

    if ctx.both0[ip]:
        # only "not exactly determined": one move of `tiny` in either direction is enough
        for strict in stricts:
            forb = forbidden(strict)
            ceff = ctx.ceff()
            opts = []
            up = _best_hypercube(ctx, ip, ctx.tiny, 0.0, ceff, forb)
            if up is not None:
                opts.append((up, ctx.tiny))
            if ctx.v[ip] >= ctx.tiny:
                dn = _best_hypercube(ctx, ip, 0.0, ctx.tiny, ceff, forb)
                if dn is not None:
                    opts.append((dn, -ctx.tiny))
            if opts:
                (cells, _, _, sg), amount = min(opts, key=lambda o: o[0][1])
                ctx.take(cells, amount * sg)
                return True
        return False
    for strict in stricts:
        forb = forbidden(strict)
        ceff = ctx.ceff()
        # one evaluation serves all options: one hypercube for both directions, or one up and one
        # down (the down one priced with the up one's cells already suppressed)
        ev = _best_hypercube(ctx, ip, d_up, d_dn, ceff, forb, raw=True)
        if ev is None:
            continue
        idx, valid, sign, cost, up_bad, dn_bad = ev
        ok_both = ~(up_bad | dn_bad)
        best = None
        if ok_both.any():
            j = int(np.argmin(np.where(ok_both, cost, np.inf)))
            best = (float(cost[j]), [(j, d_up), (j, -d_dn)])
        if d_up > 0 and d_dn > 0 and (~up_bad).any() and (~dn_bad).any():
            ju = int(np.argmin(np.where(~up_bad, cost, np.inf)))
            c2 = ceff.copy()
            c2[idx[ju][valid[ju]]] = 0.0
            cost2 = np.where(valid, c2[idx], 0.0).sum(1)
            jd = int(np.argmin(np.where(~dn_bad, cost2, np.inf)))
            sep_cost = float(cost[ju] + cost2[jd])
            if best is None or sep_cost < best[0] - 1e-12:
                best = (sep_cost, [(ju, d_up), (jd, -d_dn)])
        if best is None:
            continue
        for j, amount in best[1]:
            if amount != 0:
                ctx.take(idx[j][valid[j]], amount * sign[j][valid[j]].astype(float))
        return True
    return False


def _moved_singletons(ctx: _Ctx, ip: int, since: int) -> np.ndarray:
    """Singleton cells (other than ip) changed by the certificates added since index ``since``."""
    if since >= len(ctx.certs):
        return np.zeros(0, dtype=np.int64)
    cells = np.unique(np.concatenate([c for c, _ in ctx.certs[since:]]))
    return cells[ctx.single[cells] & (cells != ip)]


def _complement(ctx: _Ctx, ip: int, since: int, max_steps: int = 3) -> None:
    """A perturbation for ip that had to change singleton cells S proves nothing against S's
    units; add one that leaves all of S unchanged (it may change others, T: then every single
    attacker leaves one of the two feasible, since S and T are disjoint).  Repeated while the new
    one needed singletons that the old ones did not avoid."""
    avoid = np.zeros(ctx.n, bool)
    for _ in range(max_steps):
        S = _moved_singletons(ctx, ip, since)
        if S.size == 0 or avoid[S].all():
            return
        avoid[S] = True
        since = len(ctx.certs)
        if not _protect_hypercube(ctx, ip, (False,), extra_forbid=avoid):
            if not _protect_primary_lp(ctx, ip, extra_forbid=avoid, stricts=(False,)):
                return


def _primary_order(ctx: _Ctx, prim_idx: np.ndarray) -> np.ndarray:
    coords = np.array(np.unravel_index(prim_idx, ctx.shape)).T if prim_idx.size else np.zeros((0, ctx.k), int)
    nonleaf = np.zeros(prim_idx.size, dtype=np.int64)
    for d in range(ctx.k):
        isleaf = np.array([len(ctx.dims[d].kids[i]) == 0 for i in range(ctx.dims[d].n)])
        nonleaf += ~isleaf[coords[:, d]]
    need = np.maximum(ctx.d_up[prim_idx], ctx.d_dn[prim_idx])
    return prim_idx[np.lexsort((prim_idx, -need, -nonleaf))]


# ============================================================================ LP perturbation
def _neighbourhood(ctx: _Ctx, cells: np.ndarray) -> np.ndarray:
    """Cells of the box: per dimension the codes' parents, siblings, themselves and descendants."""
    per_dim = []
    for d in range(ctx.k):
        dc = ctx.dims[d]
        codes = set()
        for i in cells:
            c = int(np.unravel_index(int(i), ctx.shape)[d])
            p = dc.parent[c]
            base = dc.kids[p] + [p] if p >= 0 else [c]
            stack = list(base)
            while stack:
                x = stack.pop()
                if x in codes:
                    continue
                codes.add(x)
                stack.extend(dc.kids[x])
        per_dim.append(np.array(sorted(codes), dtype=np.int64))
    grids = np.meshgrid(*per_dim, indexing="ij")
    return np.ravel_multi_index(tuple(g.ravel() for g in grids), ctx.shape).astype(np.int64)


def _small_box(ctx: _Ctx, cells: np.ndarray, m: int = 3) -> np.ndarray:
    """A small box around target cells for the LP: per dimension the code, its parent, up to 2m
    siblings (the m cheapest and the m largest along the line through the first target) and, for
    non-leaf codes, up to m children (largest first) recursively."""
    ip = int(cells[0])
    coords0 = ctx.coords(ip)
    ceff = ctx.ceff()
    per_dim = []
    for d in range(ctx.k):
        dc = ctx.dims[d]
        codes: set = set()

        def line_cells(cs):
            cs = np.asarray(cs, dtype=np.int64)
            return ip + (cs - coords0[d]) * ctx.strides[d]

        def add_down(c0: int, depth: int = 0):
            codes.add(c0)
            kids = dc.kids[c0]
            if not kids:
                return
            kids_a = np.array(kids)
            vals = ctx.v[line_cells(kids_a)]
            for kk in kids_a[np.argsort(-vals, kind="stable")][:m]:
                add_down(int(kk), depth + 1)

        for i in cells:
            c = int(np.unravel_index(int(i), ctx.shape)[d])
            add_down(c)
            p = dc.parent[c]
            if p >= 0:
                codes.add(int(p))
                sibs = np.array([x for x in dc.kids[p] if x != c], dtype=np.int64)
                if sibs.size:
                    lc = line_cells(sibs)
                    bad = ctx.known0[lc]
                    cheap = sibs[np.argsort(np.where(bad, np.inf, ceff[lc]), kind="stable")][:m]
                    big = sibs[np.argsort(-ctx.v[lc], kind="stable")][:m]
                    for sb in np.unique(np.concatenate([cheap, big])):
                        add_down(int(sb))
        per_dim.append(np.array(sorted(codes), dtype=np.int64))
    grids = np.meshgrid(*per_dim, indexing="ij")
    return np.ravel_multi_index(tuple(g.ravel() for g in grids), ctx.shape).astype(np.int64)


def _lp_perturbation(ctx: _Ctx, target: np.ndarray, coef: np.ndarray, delta: float, forb: np.ndarray,
                     box: np.ndarray | None = None):
    """Cheapest additive perturbation y (weighted L1) with coef . y[target] == delta.

    Variables y = yp - ym on ``box`` (all cells if None); cells outside are 0.  Capacity
    ``y >= -v``; forbidden cells fixed at 0 (targets are never forbidden).  Returns the support
    (cell indices, |y| > 1e-7 delta) and y there, or None if infeasible.
    """
    cells = np.arange(ctx.n) if box is None else np.unique(np.concatenate([box, target]))
    nb = cells.size
    Ab = ctx.Acsc[:, cells].tocsr()
    rows = np.flatnonzero(np.diff(Ab.indptr) > 0)
    Ab = Ab[rows]
    loc = np.searchsorted(cells, target)
    t = sp.csr_matrix((coef, (np.zeros(loc.size, dtype=np.int64), loc)), shape=(1, nb))
    Aeq = sp.vstack([sp.hstack([Ab, -Ab]), sp.hstack([t, -t])], format="csr")
    beq = np.zeros(Aeq.shape[0])
    beq[-1] = delta
    ceff = ctx.ceff()[cells]
    w = np.where(ctx.sup[cells], ctx.eps_c * 0.1, ceff) / max(abs(delta), 1e-12)
    f = forb[cells].copy()
    f[loc] = False
    vcap = ctx.v[cells]
    ub_p = np.where(f, 0.0, np.inf)
    ub_m = np.where(f, 0.0, vcap)
    bounds = np.column_stack([np.zeros(2 * nb), np.concatenate([ub_p, ub_m])])
    res = linprog(np.concatenate([w, w]), A_eq=Aeq, b_eq=beq, bounds=bounds, method="highs")
    if res.status != 0:
        return None
    y = res.x[:nb] - res.x[nb:]
    keep = np.abs(y) > 1e-7 * max(abs(delta), 1e-12)
    return cells[keep], y[keep]


def _protect_lp(ctx: _Ctx, targets: list[tuple], extra_forbid: np.ndarray | None = None,
                stricts=(True, False)) -> bool:
    """targets: list of (cells, coefs, delta).  Suppress the support of an LP perturbation for each."""
    ok_all = True
    for cells, coef, delta in targets:
        if delta == 0:
            continue
        done = False
        for strict in stricts:
            forb = ctx.forbidden(strict, cells)
            if extra_forbid is not None:
                forb = forb | extra_forbid
            boxes = [_small_box(ctx, cells), _neighbourhood(ctx, cells)]
            if not strict:
                boxes.append(None)   # the whole table, last resort
            for box in boxes:
                found = _lp_perturbation(ctx, cells, coef, delta, forb, box)
                if found is not None:
                    ctx.take(*found)
                    done = True
                    break
            if done:
                break
        ok_all &= done
    return ok_all


def _protect_primary_lp(ctx: _Ctx, ip: int, extra_forbid=None, stricts=(True, False)) -> bool:
    one = np.array([ip])
    c = np.ones(1)
    if ctx.both0[ip]:
        # either direction will do: take the cheaper support
        for strict in stricts:
            forb = ctx.forbidden(strict, one)
            if extra_forbid is not None:
                forb = forb | extra_forbid
            ceff = ctx.ceff()
            best = None
            for delta in ((ctx.tiny, -ctx.tiny) if ctx.v[ip] >= ctx.tiny else (ctx.tiny,)):
                for box in (_small_box(ctx, one), _neighbourhood(ctx, one), None):
                    found = _lp_perturbation(ctx, one, c, delta, forb, box)
                    if found is not None:
                        cst = float(ceff[found[0]].sum())
                        if best is None or cst < best[1]:
                            best = (found, cst)
                        break
            if best is not None:
                ctx.take(*best[0])
                return True
        return False
    t = []
    if ctx.d_up[ip] > 0:
        t.append((one, c, float(ctx.d_up[ip])))
    if ctx.d_dn[ip] > 0:
        t.append((one, c, -float(ctx.d_dn[ip])))
    return _protect_lp(ctx, t, extra_forbid, stricts)


# ============================================================================ optimal (MILP)
def _optimal(ctx: _Ctx, time_limit: float = 60.0) -> None:
    """MILP over all patterns; singleton-strict model first, relaxed if that is infeasible."""
    try:
        _optimal_model(ctx, time_limit, strict=True)
    except _Infeasible:
        _optimal_model(ctx, time_limit, strict=False)


class _Infeasible(RuntimeError):
    pass


def _optimal_model(ctx: _Ctx, time_limit: float, strict: bool) -> None:
    from scipy.optimize import Bounds, LinearConstraint, milp

    n = ctx.n
    A = ctx.A
    prim = np.flatnonzero(ctx.primary)
    vecs = []  # (p, delta); delta None = either direction (binary chooses)
    for p in prim:
        if ctx.both0[p]:
            vecs.append((p, None))  # "not determined": one move of `tiny`, either direction
            continue
        if ctx.d_up[p] > 0:
            vecs.append((p, float(ctx.d_up[p])))
        if ctx.d_dn[p] > 0:
            vecs.append((p, -float(ctx.d_dn[p])))
    nv = len(vecs)
    if nv == 0:
        return
    forb_base = ctx.forbidden(False)  # suppression variables: only known zeros are excluded
    total = float(ctx.v.max()) + float(max(ctx.d_up.max(), 1.0))
    bigM = 2 * total
    # variables: s (n binaries), y^1..y^nv (n each), then one direction binary per "either" vector
    either = [j for j, (_, d) in enumerate(vecs) if d is None]
    ne = len(either)
    N = n + nv * n + ne
    c = np.concatenate([np.where(ctx.primary, 0.0, ctx.cost + ctx.eps_c), np.zeros(nv * n + ne)])
    lb = np.zeros(N)
    ub = np.ones(N)
    lb[:n][ctx.primary] = 1
    ub[:n][forb_base & ~ctx.primary] = 0
    blocks_rows = []
    rhs_lo, rhs_hi = [], []
    I = sp.identity(n, format="csr")
    for j, (p, delta) in enumerate(vecs):
        off = n + j * n
        yl = -ctx.v.copy()
        yu = np.full(n, bigM)
        f = ctx.forbidden(strict, [p])
        f[p] = False
        yl[f] = 0
        yu[f] = 0
        ze = sp.csr_matrix((n, ne))
        if delta is not None:
            yl[p] = yu[p] = delta
        else:
            # y_p = 2 tiny z - tiny with z binary (z = 1: up, z = 0: down)
            yl[p] = -ctx.tiny if ctx.v[p] >= ctx.tiny else ctx.tiny
            yu[p] = ctx.tiny
            e = either.index(j)
            row = sp.csr_matrix(([1.0], ([0], [off - n + p + n])), shape=(1, n + nv * n))
            zc = sp.csr_matrix(([-2 * ctx.tiny], ([0], [e])), shape=(1, ne))
            blocks_rows.append(sp.hstack([row, zc], format="csr"))
            rhs_lo.append(np.array([-ctx.tiny]))
            rhs_hi.append(np.array([-ctx.tiny]))
        lb[off:off + n] = yl
        ub[off:off + n] = yu
        # A y = 0
        za = sp.csr_matrix((A.shape[0], ne))
        blk = sp.hstack([sp.csr_matrix((A.shape[0], n)), sp.csr_matrix((A.shape[0], j * n)), A,
                         sp.csr_matrix((A.shape[0], (nv - j - 1) * n)), za], format="csr")
        blocks_rows.append(blk)
        rhs_lo.append(np.zeros(A.shape[0]))
        rhs_hi.append(np.zeros(A.shape[0]))
        # y_i - M s_i <= 0 ; y_i + v_i s_i >= 0
        z1 = sp.csr_matrix((n, j * n))
        z2 = sp.csr_matrix((n, (nv - j - 1) * n))
        blocks_rows.append(sp.hstack([-bigM * I, z1, I, z2, ze], format="csr"))
        rhs_lo.append(np.full(n, -np.inf))
        rhs_hi.append(np.zeros(n))
        blocks_rows.append(sp.hstack([sp.diags(ctx.v), z1, I, z2, ze], format="csr"))
        rhs_lo.append(np.zeros(n))
        rhs_hi.append(np.full(n, np.inf))
    M = sp.vstack(blocks_rows, format="csr")
    integrality = np.concatenate([np.ones(n), np.zeros(nv * n), np.ones(ne)])
    res = milp(c, constraints=LinearConstraint(M, np.concatenate(rhs_lo), np.concatenate(rhs_hi)),
               integrality=integrality, bounds=Bounds(lb, ub),
               options={"time_limit": time_limit, "disp": False})
    if res.status == 2:
        raise _Infeasible(res.message)
    if res.x is None:
        raise RuntimeError(f"MILP for optimal suppression failed: {res.message}")
    s = res.x[:n] > 0.5
    ctx.sup |= s
    for j in range(nv):
        y = res.x[n + j * n:n + (j + 1) * n]
        nz = np.flatnonzero(np.abs(y) > 1e-9)
        ctx.certs.append((nz, y[nz]))


# ============================================================================ unions
def _union_pass(ctx: _Ctx, union_is_unsafe, max_iter: int = 20) -> int:
    """Lines with a published parent and >= 2 suppressed children whose union is unsafe."""
    if union_is_unsafe is None:
        return 0
    A = ctx.A
    child = A.copy()
    child.data = (child.data < 0).astype(np.int8)
    child.eliminate_zeros()
    parent_of_row = np.asarray(A.multiply(A > 0).argmax(axis=1)).reshape(-1)
    added = 0
    for _ in range(max_iter):
        unk = ctx.sup & ~ctx.known0
        cnt = np.asarray(child @ unk.astype(np.int64)).reshape(-1)
        rows = np.flatnonzero((cnt >= 2) & ~ctx.sup[parent_of_row])
        changed = False
        for r in rows:
            ch = child.indices[child.indptr[r]:child.indptr[r + 1]]
            unk = ctx.sup & ~ctx.known0
            if ctx.sup[parent_of_row[r]]:
                continue
            T = np.sort(ch[unk[ch]])
            if T.size < 2 or not union_is_unsafe(T):
                continue
            if _fix_union_line(ctx, r, ch, T):
                added += 1
                changed = True
        if not changed:
            break
    return added


def _fix_union_line(ctx: _Ctx, r: int, ch: np.ndarray, T: np.ndarray) -> bool:
    # the dimension of the line: the coordinate in which children differ
    c0 = ctx.coords(int(ch[0]))
    c1 = ctx.coords(int(ch[1])) if ch.size > 1 else c0
    d = int(np.flatnonzero(c0 != c1)[0]) if ch.size > 1 else 0
    partner_codes = np.array([ctx.coords(int(t))[d] for t in T])
    cand = ch[~ctx.sup[ch] & ~ctx.known0[ch]]
    if cand.size == 0:
        return False
    delta = float(max(1.0 if ctx.integer else ctx.tiny,
                      np.max(np.maximum(ctx.d_up[T], ctx.d_dn[T]))))
    best = None
    ceff = ctx.ceff()
    for strict in (True, False):
        for c in cand[np.argsort(ceff[cand])][:4]:
            forb = ctx.forbidden(strict, [int(c)])
            for du, dd in ((delta, 0.0), (0.0, delta)):
                r_ = _best_hypercube(ctx, int(c), du, dd, ceff, forb, restrict={d: partner_codes})
                if r_ is not None:
                    tot = r_[1] + ceff[c]
                    if best is None or tot < best[1]:
                        best = (r_[0], tot, (du if du > 0 else -dd) * r_[3])
        if best is not None:
            break
    if best is None:
        # LP: move the union's sum
        return _protect_lp(ctx, [(T, np.ones(T.size), delta)])
    ctx.take(best[0], best[2])
    return True


# ============================================================================ driver
def suppress(
    structure: TableStructure,
    values: np.ndarray,
    primary: np.ndarray,
    *,
    n_units: np.ndarray,
    lower: np.ndarray,
    upper: np.ndarray,
    cost: np.ndarray | None = None,
    union_is_unsafe: Callable[[np.ndarray], bool] | None = None,
    method: str = "auto",
    zeros_known: bool = True,
    singletons: bool = True,
    max_rounds: int = 8,
    audit: bool = True,
    audit_engine: str = "auto",
    milp_time_limit: float = 60.0,
    certificates: bool = True,
) -> SuppressionResult:
    """Choose secondary suppressions; see the module docstring.  Returns a SuppressionResult."""
    t0 = time.perf_counter()
    n = structure.n_cells
    v = np.asarray(values, dtype=float).reshape(-1)
    prim = np.asarray(primary, dtype=bool).reshape(-1)
    nu = np.asarray(n_units).reshape(-1)
    lo = np.asarray(lower, dtype=float).reshape(-1)
    up = np.asarray(upper, dtype=float).reshape(-1)
    for name, arr in (("values", v), ("primary", prim), ("n_units", nu), ("lower", lo), ("upper", up)):
        if arr.shape != (n,):
            raise ValueError(f"{name} has {arr.size} entries, the table has {n} cells")
    if np.any(v < 0):
        raise ValueError("secondary suppression assumes non-negative cell values")
    if not structure.is_additive(v):
        raise ValueError("values are not additive over the table structure")
    if cost is None:
        cst = v.copy()
    else:
        cst = np.asarray(cost, dtype=float).reshape(-1)
        if cst.shape != (n,) or np.any(cst < 0):
            raise ValueError("cost must be a non-negative array with one entry per cell")
    ctx = _Ctx(structure, v, prim, nu, lo, up, cst, zeros_known, singletons)
    if method == "auto":
        method = "lp" if n <= 500 else "hypercube"
    timings = {}
    fallbacks = 0
    t = time.perf_counter()
    prim_idx = np.flatnonzero(prim)
    if method == "hypercube":
        for ip in _primary_order(ctx, prim_idx):
            ip = int(ip)
            if _protect_hypercube(ctx, ip, (True,)):
                continue
            fallbacks += 1
            if _protect_primary_lp(ctx, ip, stricts=(True,)):
                continue
            since = len(ctx.certs)
            if not _protect_hypercube(ctx, ip, (False,)):
                _protect_primary_lp(ctx, ip, stricts=(False,))
            _complement(ctx, ip, since)
    elif method == "lp":
        for ip in _primary_order(ctx, prim_idx):
            if not _protect_primary_lp(ctx, int(ip)):
                fallbacks += 1
    elif method == "optimal":
        _optimal(ctx, milp_time_limit)
    else:
        raise ValueError(f"unknown method {method!r}")
    timings["main"] = time.perf_counter() - t
    t = time.perf_counter()
    _union_pass(ctx, union_is_unsafe)
    timings["unions"] = time.perf_counter() - t

    res_audit = None
    rounds = repairs = 0
    timings["audit"] = 0.0
    timings["repair"] = 0.0
    if audit:
        for rounds in range(1, max_rounds + 1):
            t = time.perf_counter()
            res_audit = _audit(structure, v, ctx.sup, prim, n_units=nu, lower=lo, upper=up,
                               union_is_unsafe=union_is_unsafe, zeros_known=zeros_known,
                               engine=audit_engine, certificates=ctx.certs if certificates else None)
            timings["audit"] += time.perf_counter() - t
            if res_audit.protected:
                break
            t = time.perf_counter()
            before = (int(ctx.sup.sum()), len(ctx.certs))
            for c in res_audit.cells:
                if not c.primary or c.protected:
                    continue
                extra = None
                who = c.attacker if c.attacker is not None else c.suspect
                if who is not None:
                    extra = np.zeros(n, bool)
                    extra[who] = True
                since = len(ctx.certs)
                _protect_primary_lp(ctx, c.index, extra)
                if res_audit.intervals == "protection":
                    _complement(ctx, c.index, since)
                repairs += 1
            for f in res_audit.union_failures:
                Q = np.asarray(f["cells"], dtype=np.int64)
                delta = float(max(1.0 if ctx.integer else ctx.tiny,
                                  np.max(np.maximum(ctx.d_up[Q], ctx.d_dn[Q]))))
                _protect_lp(ctx, [(Q, np.ones(Q.size), delta)])
                repairs += 1
            _union_pass(ctx, union_is_unsafe)
            timings["repair"] += time.perf_counter() - t
            if (int(ctx.sup.sum()), len(ctx.certs)) == before:
                break  # nothing more we can do
    sec = ctx.sup & ~prim
    return SuppressionResult(
        secondary=sec, suppressed=ctx.sup.copy(), audit=res_audit, method=method,
        cost=float(cst[sec].sum()), rounds=rounds, repairs=repairs,
        seconds=time.perf_counter() - t0, timings=timings, fallbacks=fallbacks, certificates=ctx.certs,
    )


def secondary_suppression(
    structure: TableStructure,
    values: np.ndarray,
    primary: np.ndarray,
    *,
    n_units: np.ndarray,
    lower: np.ndarray,
    upper: np.ndarray,
    cost: np.ndarray | None = None,
    union_is_unsafe: Callable[[np.ndarray], bool] | None = None,
    method: str = "auto",
    **kw,
) -> np.ndarray:
    """Secondary mask (cells to suppress in addition to ``primary``); see :func:`suppress`.

    Raises ``RuntimeError`` if the final audit does not pass (never returns an unsafe pattern
    silently); use :func:`suppress` to get the pattern and the failing audit instead.
    """
    r = suppress(structure, values, primary, n_units=n_units, lower=lower, upper=upper, cost=cost,
                 union_is_unsafe=union_is_unsafe, method=method, **kw)
    if r.audit is not None and not r.audit.protected:
        raise RuntimeError(
            f"secondary suppression could not protect every primary cell "
            f"({len(r.audit.unprotected)} unprotected, {len(r.audit.union_failures)} unsafe unions)")
    return r.secondary
