"""Benchmark: end-to-end rows/s of ``ingest add`` for a CSV and a Parquet source.

The source has a BSN (98 % valid, 1 % failing the 11-test, 1 % missing), a birth date, a
6-character postcode, an amount and a code. The spec pseudonymises the BSN and generalises two
columns (birth date -> year, postcode -> 4 digits), keeps the rest, written as Parquet into a
fresh store. Inputs are generated once under bench/out/ (git-ignored) and reused.

    .venv/bin/python bench/bench_ingest.py --rows 10000000

CPU time (all threads of the process) is printed too: this machine has two cores shared with
other work, so wall time alone says little. Each run also prints the 1-minute load average at
its start and how many cores *other* processes used during the run (from /proc/stat: all busy
CPU time minus this process's); a run is only a two-core figure when that is near 0. Timing
covers everything ``ingest add`` does: hashing the source for idempotence, the checked and
pseudonymised pass over the data, writing, counting, metadata and the rename into the store
(the Python API is called directly, so interpreter start-up and imports are not counted).
``--repeat N`` runs each format N times (the machine is shared: take the best, report all);
``--hmac native,polars-hash`` alternates the default native HMAC with polars-hash (what runs
when the native one is turned off or cannot be built).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import polars as pl

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from data_ingest.demo import bsn_array  # noqa: E402
from data_ingest import native  # noqa: E402
from data_ingest.keys import init_key  # noqa: E402
from data_ingest.pipeline import Reporter, add  # noqa: E402

OUT = Path(__file__).resolve().parent / "out"

SPEC = """
[dataset]
name = "bench"
title = "benchmark source"
unit = "person"
unit_id = "person_id"

[source]
format = "{fmt}"

[columns.bsn]
action = "pseudonymise"
kind = "bsn"
as = "person_id"

[columns.birth_date]
action = "generalise"
to = "year"
as = "birth_year"

[columns.postcode]
action = "generalise"
to = "pc4"

[columns.amount]
action = "keep"
type = "float"

[columns.code]
action = "keep"
type = "int"
"""


def make_inputs(rows: int, seed: int = 1) -> tuple[Path, Path]:
    OUT.mkdir(parents=True, exist_ok=True)
    pq_path, csv_path = OUT / f"src-{rows}.parquet", OUT / f"src-{rows}.csv"
    if pq_path.exists() and csv_path.exists():
        return csv_path, pq_path
    t = time.perf_counter()
    rng = np.random.default_rng(seed)
    bsn = bsn_array(rng, rows).astype(str).astype(object)
    r = rng.random(rows)
    bsn[r < 0.01] = None
    bad = (r >= 0.01) & (r < 0.02)
    bsn[bad] = "123456789"  # fails the 11-test
    birth = np.datetime64("1920-01-01") + rng.integers(0, 37000, rows).astype("timedelta64[D]")
    pc = np.char.add(rng.integers(1000, 9999, rows).astype(str), rng.choice(["AB", "CD", "EF", "XZ"], rows))
    df = pl.DataFrame({"bsn": pl.Series(bsn, dtype=pl.String), "birth_date": birth, "postcode": pc,
                       "amount": np.round(rng.lognormal(10, 1, rows), 2), "code": rng.integers(1, 6, rows)})
    df.write_parquet(pq_path)
    df.write_csv(csv_path)
    print(f"generated {rows:,} rows in {time.perf_counter() - t:.1f} s: {csv_path.name} "
          f"({csv_path.stat().st_size / 1e6:.0f} MB), {pq_path.name} ({pq_path.stat().st_size / 1e6:.0f} MB)")
    return csv_path, pq_path


def busy_seconds() -> float | None:
    """CPU seconds all processes have been busy since boot (Linux /proc/stat), or None."""
    try:
        with open("/proc/stat") as f:
            fields = [int(x) for x in f.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


class StageTimes(Reporter):
    def __init__(self):
        self.times: list[tuple[str, float]] = []

    @contextmanager
    def stage(self, text, total=None):
        t = time.perf_counter()
        yield lambda n=1: None
        self.times.append((text, time.perf_counter() - t))


def run(source: Path, fmt: str, rows: int, compression: str, hmac: str = "native") -> float:
    work = OUT / f"run-{fmt}"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    key = work / "keys" / "master.key"
    init_key(key)
    spec = work / "spec.toml"
    spec.write_text(SPEC.format(fmt=fmt))
    os.environ[native.ENV_SWITCH] = "1" if hmac == "native" else "0"
    if hmac == "native" and not native.available():
        raise SystemExit(f"the native HMAC is not available here: {native.status()}")
    t = time.perf_counter()
    load = os.getloadavg()[0]  # other work on the machine (1-minute load average) when we start
    busy = busy_seconds()
    cpu = time.process_time()
    rep = StageTimes()
    res = add(source, spec, work / "store", key, compression=compression, reporter=rep)
    secs = time.perf_counter() - t
    cpu = time.process_time() - cpu
    others = "?" if busy is None else f"{max(0.0, (busy_seconds() - busy - cpu) / secs):.2f}"
    assert res.rows_in == rows and not res.reused
    print(f"{fmt:8s} {hmac:11s} {rows:>12,} rows  {secs:7.2f} s  {rows / secs / 1e6:6.2f} M rows/s  "
          f"(CPU {cpu:.1f} s = {cpu / rows * 1e6:.2f} µs/row, {cpu / secs:.2f} cores; load avg at start {load:.1f}, "
          f"other processes {others} cores)  "
          f"(valid/invalid/missing ids: {'/'.join(str(res.status['person_id'].get(k, 0)) for k in ('valid', 'invalid', 'missing'))})")
    print("                  " + "; ".join(f"{name.split(' ')[0]} {s:.2f}s" for name, s in rep.times))
    shutil.rmtree(work, ignore_errors=True)
    return rows / secs


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=10_000_000)
    ap.add_argument("--formats", default="parquet,csv")
    ap.add_argument("--compression", default="lz4")
    ap.add_argument("--repeat", type=int, default=1, help="runs per format (report all, compare the best)")
    ap.add_argument("--hmac", default="native" if native.enabled() else "polars-hash",
                    help="native (the default), polars-hash (the fallback) or both: native,polars-hash "
                         "(runs alternate, for a fair comparison on a shared machine)")
    a = ap.parse_args()
    csv_path, pq_path = make_inputs(a.rows)
    modes = a.hmac.split(",")
    if set(modes) - {"native", "polars-hash"}:
        ap.error(f"--hmac: native, polars-hash or both, not {a.hmac!r}")
    print(f"polars {pl.__version__}, {os.cpu_count()} CPUs, store compression {a.compression}, "
          f"HMAC: {', '.join(modes)}")
    for fmt in a.formats.split(","):
        rates: dict[str, list[float]] = {m: [] for m in modes}
        for _ in range(a.repeat):
            for m in modes:
                rates[m].append(run(pq_path if fmt == "parquet" else csv_path, fmt, a.rows, a.compression, m))
        if a.repeat > 1:
            for m, r in rates.items():
                print(f"{fmt:8s} {m:11s} best of {a.repeat}: {max(r) / 1e6:.2f} M rows/s, "
                      f"median {statistics.median(r) / 1e6:.2f}")


if __name__ == "__main__":
    main()
