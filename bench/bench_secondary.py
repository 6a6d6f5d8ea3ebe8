"""Benchmark: secondary suppression + audit on a ~50k-cell 4-D hierarchical table.

Table: municipality (nested in regions) x age group x industry x sex, every margin and subtotal
included (the cross product of the dimensions' code lists, totals included).  Counts come from
synthetic units with a realistic frequency structure (log-normal municipality sizes, skewed age
and industry distributions, an age x industry interaction), so small counts concentrate in small
municipalities and rare industries.  Primary rule: 0 < count < threshold (empty cells are known
zeros), protection ``--protection`` units below and above, unions of suppressed cells in a line
with fewer than ``threshold`` units are unsafe.

    .venv/bin/python bench/bench_secondary.py                 # ~50k cells
    .venv/bin/python bench/bench_secondary.py --compare-milp  # + heuristic/optimal cost on small tables

Prints time, primary/secondary counts, the audit result and peak memory (ru_maxrss of the
process; ``--tracemalloc`` adds Python's own peak, but tracing every allocation makes the run
several times slower, so its time is then not the figure to quote).
"""

from __future__ import annotations

import argparse
import resource
import sys
import time
import tracemalloc
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sdc.audit import audit  # noqa: E402
from sdc.structure import Dimension, TableStructure  # noqa: E402
from sdc.suppress import suppress  # noqa: E402


def build(n_regions: int, mun_per_region: int, n_age: int, n_ind: int, n_units: int, seed: int):
    rng = np.random.default_rng(seed)
    mun = {f"M{r:02d}{m:02d}": f"R{r:02d}" for r in range(n_regions) for m in range(mun_per_region)}
    dims = [
        Dimension.from_pairs("municipality", mun),
        Dimension.flat("age", [f"A{a:02d}" for a in range(n_age)]),
        Dimension.flat("industry", [f"I{i:02d}" for i in range(n_ind)]),
        Dimension.flat("sex", ["M", "F"]),
    ]
    t = TableStructure(dims)
    n_mun = len(mun)
    p_mun = rng.lognormal(0, 1.2, n_mun)
    p_age = np.exp(-0.5 * ((np.arange(n_age) - n_age * 0.45) / (n_age * 0.35)) ** 2)
    p_ind = rng.pareto(1.2, n_ind) + 0.05
    inter = rng.lognormal(0, 0.5, (n_age, n_ind))
    p_sex = np.array([0.5, 0.5])
    w = (p_mun[:, None, None, None] * p_age[None, :, None, None] * p_ind[None, None, :, None]
         * inter[None, :, :, None] * p_sex[None, None, None, :])
    w = w / w.sum()
    z = rng.multinomial(n_units, w.ravel()).astype(float)
    v = t.aggregate(z)
    return t, v


def run(t, v, threshold, protection, method, engine="auto"):
    prim = (v > 0) & (v < threshold)
    L = np.where(prim, np.minimum(protection, v), 0.0)
    U = np.where(prim, float(protection), 0.0)
    nu = v.copy()

    def union_is_unsafe(idx):
        s = nu[idx].sum()
        return 0 < s < threshold

    t0 = time.perf_counter()
    r = suppress(t, v, prim, n_units=nu, lower=L, upper=U, union_is_unsafe=union_is_unsafe,
                 method=method, audit_engine=engine)
    el = time.perf_counter() - t0
    return r, el, prim


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--regions", type=int, default=10)
    ap.add_argument("--mun-per-region", type=int, default=6)
    ap.add_argument("--ages", type=int, default=10)
    ap.add_argument("--industries", type=int, default=21)
    ap.add_argument("--units", type=int, default=30_000_000)
    ap.add_argument("--threshold", type=float, default=10)
    ap.add_argument("--protection", type=float, default=3)
    ap.add_argument("--method", default="auto")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--tracemalloc", action="store_true", help="also trace Python's peak allocation (slow)")
    ap.add_argument("--compare-milp", action="store_true",
                    help="also compare heuristic and MILP-optimal cost on small 2-D tables")
    a = ap.parse_args(argv)

    if a.tracemalloc:
        tracemalloc.start()
    t0 = time.perf_counter()
    t, v = build(a.regions, a.mun_per_region, a.ages, a.industries, a.units, a.seed)
    tb = time.perf_counter() - t0
    print(f"table: {t}  (built in {tb:.1f} s)")
    print(f"units: {int(v[0]):,}  empty cells: {int((v == 0).sum()):,}")
    r, el, prim = run(t, v, a.threshold, a.protection, a.method)
    peak = tracemalloc.get_traced_memory()[1] if a.tracemalloc else None
    tracemalloc.stop()
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    au = r.audit
    print(f"method: {r.method}  primary: {int(prim.sum()):,} ({100 * prim.mean():.1f} % of cells)  "
          f"secondary: {int(r.secondary.sum()):,}  cost (units): {r.cost:,.0f}")
    print(f"time: {el:.1f} s  (" + ", ".join(f"{k} {x:.1f} s" for k, x in r.timings.items()) + ")")
    print(f"audit: protected={au.protected}  LPs={au.n_lp:,}  components={au.n_components}  "
          f"largest={au.largest_component}  unprotected={len(au.unprotected)}  "
          f"union failures={len(au.union_failures)}  rounds={r.rounds}  repairs={r.repairs}  "
          f"fallbacks={r.fallbacks}  audit time (last)={au.seconds:.1f} s")
    print(f"peak memory: process max RSS {rss:.0f} MiB"
          + (f", python (tracemalloc) {peak / 2**20:.0f} MiB" if peak is not None else ""))
    print(f"certificates: {au.certificates:,} ({au.certificates_rejected} rejected), primaries proved by "
          f"certificate {au.proved_by_certificate:,}, local LPs {au.n_local_lp}")

    if a.compare_milp:
        compare_milp(a.seed)
    return 0 if au.protected else 1


def compare_milp(seed: int, n_tables: int = 8):
    """Heuristic ('hypercube', 'lp') vs optimal (MILP) cost on small 2-D hierarchical tables."""
    rng = np.random.default_rng(seed)
    tot = {"hypercube": 0.0, "lp": 0.0, "optimal": 0.0}
    for k in range(n_tables):
        nr = int(rng.integers(4, 8))
        nc = int(rng.integers(3, 6))
        rows = Dimension.from_pairs("r", {f"r{i}": f"g{i % 2}" for i in range(nr)})
        cols = Dimension.flat("c", [f"c{j}" for j in range(nc)])
        t = TableStructure([rows, cols])
        z = rng.poisson(rng.choice([1.5, 5, 20], t.model_matrix().shape[1])).astype(float)
        v = t.aggregate(z)
        prim = (v > 0) & (v < 4)
        L = np.where(prim, np.minimum(2, v), 0.0)
        U = np.where(prim, 2.0, 0.0)
        line = []
        for m in tot:
            r = suppress(t, v, prim, n_units=v + 1, lower=L, upper=U, method=m)
            assert r.audit.protected
            tot[m] += r.cost
            line.append(f"{m} {r.cost:.0f}")
        print(f"  table {k} ({t.n_cells} cells, {int(prim.sum())} primary): " + ", ".join(line))
    print(f"cost ratio vs optimal: hypercube {tot['hypercube'] / tot['optimal']:.3f}, "
          f"lp {tot['lp'] / tot['optimal']:.3f}")


if __name__ == "__main__":
    raise SystemExit(main())
