"""Airlock recomputation vs the researcher's local preview, on the same table and data.

The preview is ``sdc.table`` in the researcher's process (as in the notebook, views over the
project's Parquet); the recomputation is the airlock's sandboxed job (a new process, a private
mount namespace when run as root, DuckDB locked to the project's data) computing the same spec.
Prints the median of ``--repeat`` runs of each and the ratio (target <= 1.5x).

    .venv/bin/python bench/bench_airlock.py [--units 1000000] [--repeat 3]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import duckdb  # noqa: E402

import sdc  # noqa: E402
from hub.airlock.sandbox import Limits, recompute  # noqa: E402


def make_data(data: Path, units: int) -> None:
    target = data / "persons" / "part-0.parquet"
    marker = data / f".units-{units}"
    if marker.exists():
        return
    target.parent.mkdir(parents=True, exist_ok=True)
    duckdb.execute(f"""
        COPY (SELECT range AS person_id,
                     'R' || lpad((hash(range) % 12)::VARCHAR, 2, '0') AS region,
                     'A' || lpad((hash(range * 7) % 11)::VARCHAR, 2, '0') AS age_group,
                     CASE WHEN hash(range * 13) % 2 = 0 THEN 'F' ELSE 'M' END AS sex,
                     round(20000 + (hash(range * 31) % 80000)::DOUBLE, 2) AS income
              FROM range({units}))
        TO '{target}' (FORMAT parquet)""")
    marker.touch()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--units", type=int, default=1_000_000)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    data = ROOT / "bench" / "out" / "airlock" / "data"
    make_data(data, args.units)
    sql = "SELECT * FROM persons"
    kw = dict(rows=["region", "age_group"], cols=["sex"], value="income", stat="mean",
              unit="person_id")

    def preview():
        con = duckdb.connect()
        con.execute(f"CREATE VIEW persons AS SELECT * FROM read_parquet('{data}/persons/*.parquet')")
        t = sdc.table(sql, con=con, policy="acro", **kw)
        return t.spec, t.to_csv()

    pre, rec = [], []
    spec, csv_local = preview()
    for _ in range(args.repeat):
        t0 = time.perf_counter()
        preview()
        pre.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        r = recompute(data, {"kind": "table", **spec}, "acro", Limits(timeout_s=600))
        rec.append(time.perf_counter() - t0)
    same = r.files["table.csv"].decode() == csv_local
    p, q = statistics.median(pre), statistics.median(rec)
    print(f"units={args.units} cells={r.summary['cells']} primary={r.summary['primary']} "
          f"secondary={r.summary['secondary']} same_csv={same} root={os.geteuid() == 0}")
    print(f"local preview (in process): median {p:.3f}s  runs {' '.join(f'{x:.3f}' for x in pre)}")
    print(f"airlock recompute (sandbox): median {q:.3f}s  runs {' '.join(f'{x:.3f}' for x in rec)}")
    print(f"ratio recompute/preview: {q / p:.2f}x (target <= 1.5x)")
    print(f"load average: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
