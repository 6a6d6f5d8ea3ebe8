"""Benchmark: ``ingest link`` of a source without identifiers (about 1M records) to a spine.

Synthetic inputs, generated once under bench/out/ (git-ignored) and reused:

- ``spine.parquet`` -- the person register (``spine = true``): BSN (passing the 11-test; 1.5 %
  with a typo in the check digit, 1 % missing, as in the demo), birth date, sex (M/V),
  6-character postcode. Postcodes are drawn like the Netherlands' (about 4,000 PC4 areas of
  unequal size, 113 PC6 codes each), birth dates from the demo's age distribution;
- ``lab.parquet`` -- a laboratory without BSN (as the demo's ``covid_tests.csv``): 1 to 4 records
  per tested person (mean 2.2), birth date, sex, postcode, test date, result. Errors as in the
  demo's laboratory file plus a few more: birth date off by 1 or 9 days (2 %), day and month
  swapped (0.5 %), postcode of somewhere else (moved, 5 %), one postcode letter wrong (1 %),
  postcode missing (0.5 %), sex missing (1 %) or the other one (0.3 %). 2 % of the tested people are not in the
  register at all, and 2.5 % of the registered ones have no valid BSN there: their records have
  no correct match;
- ``truth.parquet`` -- the true BSN of every laboratory record (row number = ``_rid``).

Each run ingests both into a fresh store with the real API (``data_ingest.pipeline.add``, timed
on its own), then times ``data_ingest.linkage.link`` end to end (``--repeat`` times; the linkage
run folder is removed between repeats, the store is not): wall time, CPU time of the process (all
threads), peak RSS during the linkage (the kernel's high-water mark, reset before it), the load
average at its start and the cores *other* processes used meanwhile (/proc/stat, as
bench_ingest.py), and the time of each stage. Quality against the known truth: the store
pseudonym of each record's true BSN is computed with ``data_ingest.kdf`` (the Python reference
HMAC) from the store's key; a record is *linkable* when that pseudonym is a valid one in the
spine. Precision = correct links / links made; recall = correct links / linkable records.

    .venv/bin/python bench/bench_link.py --persons 1000000 --records 1000000 --repeat 2
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import sys
import time
from contextlib import contextmanager
from datetime import date
from pathlib import Path

import numpy as np
import polars as pl

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_ingest import busy_seconds  # noqa: E402
from data_ingest.demo import _dates, bsn_array  # noqa: E402
from data_ingest.kdf import kind_key, pseudonym  # noqa: E402
from data_ingest.keys import init_key, load_key  # noqa: E402
from data_ingest.linkage import link  # noqa: E402
from data_ingest.pipeline import Reporter, add  # noqa: E402
from data_ingest.rules import normalise_bsn  # noqa: E402
from data_ingest.store import Store, remove_tree  # noqa: E402

OUT = Path(__file__).resolve().parent / "out"
GENERATOR = 2  # bump when the generated data change

SPINE_SPEC = """
[dataset]
name = "persons"
title = "Person register (benchmark)"
unit = "person"
unit_id = "person_id"
spine = true

[source]
format = "parquet"

[columns.bsn]
action = "pseudonymise"
kind = "bsn"
as = "person_id"

[columns.geboortedatum]
action = "generalise"
to = "year-month"
as = "birth_month"
required = true
link = "birth_date"

[columns.geslacht]
action = "keep"
as = "sex"
type = "str"
codes = { M = "male", V = "female" }
required = true
link = "sex"

[columns.postcode]
action = "generalise"
to = "pc4"
as = "postcode4"
link = "postcode"
"""

LAB_SPEC = """
[dataset]
name = "lab"
title = "Laboratory tests without BSN (benchmark)"
unit = "person"
unit_id = "person_id"
unit_id_kind = "bsn"
temporal = "testdatum"

[source]
format = "parquet"

[columns.geboortedatum]
action = "drop"
type = "date"
link = "birth_date"

[columns.geslacht]
action = "drop"
type = "str"
codes = { M = "male", V = "female" }
link = "sex"

[columns.postcode]
action = "drop"
link = "postcode"

[columns.testdatum]
action = "keep"
as = "test_date"
type = "date"

[columns.uitslag]
action = "keep"
as = "result"
type = "str"
codes = { POS = "positive", NEG = "negative" }
"""

LETTERS = np.array(list("ABCEGHJKLMNPRTVWXZ"))  # as the demo's postcodes


def make_inputs(persons: int, records: int, seed: int) -> Path:
    """Generate spine, laboratory file and truth (or reuse them when the manifest matches)."""
    out = OUT / f"link-{persons}-{records}-{seed}"
    want = {"persons": persons, "records": records, "seed": seed, "generator": GENERATOR}
    files = ("spine.parquet", "lab.parquet", "truth.parquet")
    man = out / "manifest.json"
    if man.exists() and json.loads(man.read_text()) == want and all((out / f).exists() for f in files):
        return out
    t = time.perf_counter()
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    outside = max(1, persons // 50)  # tested, but not in the register
    n = persons + outside
    bsn = bsn_array(rng, n)
    age = np.clip(rng.gamma(4.0, 11.0, n), 0, 100).astype(int)  # as the demo
    birth = np.datetime64("2023-01-01", "D") - (age * 365.25 + rng.integers(0, 365, n)).astype("timedelta64[D]")
    sex = rng.choice(["M", "V"], n)
    # About 4,000 PC4 areas of unequal size with 113 PC6 codes each (the Netherlands: ~4,070 PC4,
    # ~460,000 PC6); a 1M spine then has ~2 persons per PC6 and ~250 per PC4.
    areas = np.sort(rng.choice(np.arange(1000, 10000), 4000, replace=False))
    weight = rng.gamma(2.0, 1.0, areas.size)
    area = rng.choice(areas.size, n, p=weight / weight.sum())
    first = rng.integers(0, LETTERS.size ** 2, areas.size)  # each area's first letter pair
    pair = (first[area] + rng.integers(0, 113, n)) % LETTERS.size ** 2
    pc = np.char.add(areas[area].astype(str), np.char.add(LETTERS[pair // LETTERS.size], LETTERS[pair % LETTERS.size]))

    # --- the spine (the first ``persons`` people) ---
    bsn_txt = bsn.astype(str)
    s = slice(0, persons)
    src_bsn = bsn_txt[s].astype(object)
    r = rng.random(persons)
    bad = r < 0.015
    src_bsn[bad] = np.char.add(np.char.rjust((bsn[s][bad] // 10).astype(str), 8, "0"),
                               ((bsn[s][bad] % 10 + 1) % 10).astype(str))  # check digit typo (demo)
    src_bsn[(r >= 0.015) & (r < 0.025)] = None
    pl.DataFrame({"bsn": pl.Series(src_bsn, dtype=pl.String), "geboortedatum": birth[s], "geslacht": sex[s],
                  "postcode": pc[s]}).write_parquet(out / "spine.parquet")

    # --- the laboratory: 1-4 records per tested person, errors in the linkage keys ---
    tested = rng.choice(n, size=min(n, int(records / 2.2 * 1.05) + 1), replace=False)
    idx = np.repeat(tested, rng.choice([1, 1, 2, 3, 4], tested.size))
    if idx.size < records:
        idx = np.concatenate([idx, rng.choice(n, records - idx.size)])
    idx = rng.permutation(idx)[:records]
    tb = birth[idx].copy()
    u = rng.random(records)
    off = u < 0.02  # a typo: one or nine days off (one character apart, as the demo)
    tb[off] += rng.choice([-9, -1, 1, 9], int(off.sum())).astype("timedelta64[D]")
    swap = (u >= 0.02) & (u < 0.025)
    ymd = tb.astype("datetime64[D]").astype(object)
    for i in np.flatnonzero(swap):  # day and month swapped, where that is a date (~0.5 % of rows)
        d = ymd[i]
        if d.day <= 12 and d.day != d.month:
            tb[i] = np.datetime64(date(d.year, d.day, d.month), "D")
    tpc = pc[idx].astype(object)
    v = rng.random(records)
    moved = v < 0.05
    tpc[moved] = rng.choice(pc[:persons], int(moved.sum()))
    letter = (v >= 0.05) & (v < 0.06)  # one letter of the postcode wrong (same PC4)
    k = np.flatnonzero(letter)
    pos = rng.integers(4, 6, k.size)
    new = LETTERS[rng.integers(0, LETTERS.size, k.size)]
    tpc[k] = [p[:q] + c + p[q + 1:] for p, q, c in zip(tpc[k], pos, new)]
    tpc[(v >= 0.06) & (v < 0.065)] = None
    tsex = sex[idx].astype(object)
    rs = rng.random(records)
    tsex[rs < 0.01] = None
    wrong = (rs >= 0.01) & (rs < 0.013)  # recorded as the other sex
    tsex[wrong] = np.where(sex[idx][wrong] == "M", "V", "M")
    pl.DataFrame({
        "geboortedatum": tb, "geslacht": pl.Series(tsex, dtype=pl.String),
        "postcode": pl.Series(tpc, dtype=pl.String),
        "testdatum": _dates(rng, date(2020, 6, 1), date(2022, 6, 30), records),
        "uitslag": rng.choice(["POS", "NEG"], records, p=[0.18, 0.82]),
    }).write_parquet(out / "lab.parquet")
    pl.DataFrame({"_rid": np.arange(records, dtype=np.int64), "bsn": bsn_txt[idx]}).write_parquet(out / "truth.parquet")
    man.write_text(json.dumps(want))
    print(f"generated {persons:,} persons and {records:,} laboratory records in {time.perf_counter() - t:.1f} s "
          f"({out.relative_to(OUT.parent)})")
    return out


class Stages(Reporter):
    """Wall and CPU time of each stage ``link`` reports."""

    def __init__(self):
        self.times: list[tuple[str, float, float]] = []

    @contextmanager
    def stage(self, text, total=None):
        t, c = time.perf_counter(), time.process_time()
        yield lambda n=1: None
        self.times.append((text, time.perf_counter() - t, time.process_time() - c))


def _hwm_reset() -> bool:
    """Reset the kernel's peak-RSS mark of this process (Linux >= 4.0), so the peak of the
    linkage is not the peak of generating or ingesting."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _hwm_mb(reset: bool) -> float:
    if reset:
        try:
            m = re.search(r"VmHWM:\s+(\d+) kB", Path("/proc/self/status").read_text())
            if m:
                return int(m.group(1)) / 1024
        except OSError:
            pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # the process's peak so far


def quality(inputs: Path, store: Store, key_hex: str, links_path: Path) -> dict[str, float | int]:
    """Precision and recall of the lab's links against the generator's truth."""
    truth = pl.read_parquet(inputs / "truth.parquet")
    kk = kind_key(key_hex, "bsn")
    distinct = truth["bsn"].unique()
    pid = pl.DataFrame({"bsn": distinct,
                        "true_pid": [pseudonym(kk, normalise_bsn(b)) for b in distinct.to_list()]})
    spine = pl.read_parquet(store.data_files("persons", store.resolve("persons")[1]), columns=["person_id"])
    valid = spine["person_id"].drop_nulls().implode()
    links = pl.read_parquet(links_path).filter(pl.col("dataset") == "lab").select("_rid", "pid")
    t = (truth.join(pid, on="bsn").with_columns(pl.col("true_pid").is_in(valid).alias("linkable"))
         .join(links, on="_rid", how="left"))
    made = t["pid"].is_not_null().sum()
    correct = (t["pid"] == t["true_pid"]).fill_null(False).sum()
    linkable = t["linkable"].sum()
    wrong_person = (t["pid"].is_not_null() & t["linkable"] & (t["pid"] != t["true_pid"])).sum()
    return {"records": t.height, "linkable": int(linkable), "links": int(made), "correct": int(correct),
            "wrong_person": int(wrong_person), "linked_unlinkable": int(made - correct - wrong_person),
            "precision": correct / made if made else float("nan"),
            "recall": correct / linkable if linkable else float("nan")}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--persons", type=int, default=1_000_000, help="persons in the spine")
    ap.add_argument("--records", type=int, default=1_000_000, help="records of the source without an identifier")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--repeat", type=int, default=1, help="linkage runs on the same store")
    ap.add_argument("--threshold", type=float, default=0.9)
    a = ap.parse_args()

    import duckdb
    import splink

    inputs = make_inputs(a.persons, a.records, a.seed)
    print(f"polars {pl.__version__}, duckdb {duckdb.__version__}, splink {splink.__version__}, "
          f"{os.cpu_count()} CPUs; {a.persons:,} persons in the spine, {a.records:,} records without an id")

    work = inputs / "run"
    if work.exists():
        remove_tree(work)
    key = work / "keys" / "master.key"
    init_key(key)
    store = Store(work / "store")
    for name, spec_text, src in (("persons", SPINE_SPEC, "spine.parquet"), ("lab", LAB_SPEC, "lab.parquet")):
        spec = work / f"{name}.toml"
        spec.write_text(spec_text)
        t, c = time.perf_counter(), time.process_time()
        res = add(inputs / src, spec, store, key)
        print(f"ingest {name:8s} {res.rows_in:>10,} rows  {time.perf_counter() - t:6.2f} s  "
              f"(CPU {time.process_time() - c:.1f} s)  ids valid/invalid/missing "
              f"{'/'.join(str(res.status['person_id'].get(k, 0)) for k in ('valid', 'invalid', 'missing'))}")

    for run in range(a.repeat):
        reset = _hwm_reset()
        rep = Stages()
        load = os.getloadavg()[0]
        busy = busy_seconds()
        t, c = time.perf_counter(), time.process_time()
        res = link(store, threshold=a.threshold, reporter=rep)
        secs, cpu = time.perf_counter() - t, time.process_time() - c
        others = "?" if busy is None else f"{max(0.0, (busy_seconds() - busy - cpu) / secs):.2f}"
        peak = _hwm_mb(reset)
        assert not res.reused
        p = next(x for x in res.report["probabilistic"] if x["dataset"].startswith("lab@"))
        q = quality(inputs, store, load_key(key), res.path / "links.parquet")
        print(f"link #{run + 1}: {p['records_without_valid_id']:,} records in, {p['linked']:,} links  "
              f"{secs:7.1f} s  (CPU {cpu:.1f} s, {cpu / secs:.2f} cores; peak RSS {peak:,.0f} MB"
              f"{'' if reset else ' (whole process)'}; load avg at start {load:.1f}, other processes {others} cores)")
        print(f"   precision {q['precision']:.5f}  recall {q['recall']:.5f}  ({q['correct']:,} correct of "
              f"{q['links']:,} links; {q['linkable']:,} records linkable; {q['wrong_person']:,} to the wrong person, "
              f"{q['linked_unlinkable']:,} of unlinkable records)")
        print(f"   pairs scored {p['pairs_scored']:,}; several candidates above threshold "
              f"{p['records_with_several_candidates_above_threshold']:,} (tied best, not linked: "
              f"{p['records_with_tied_best_candidates_not_linked']:,}); {'; '.join(p['training'])}")
        for name, w, c in rep.times:
            if w >= 0.05:
                name = name.replace("probabilistic linkage of lab to persons", "lab → persons")
                print(f"   {w:6.1f} s (CPU {c:6.1f})  {name}")
        if run + 1 < a.repeat:
            remove_tree(res.path)
    remove_tree(work)  # the store and its key: nothing of a run is kept


if __name__ == "__main__":
    main()
