"""Slices computed and written at the same time give exactly what one-after-the-other gives, and a
bad value in a later slice is still reported as the first bad value of the file, with nothing
written; the postcode fast path gives what the plain normalisation gives."""

from __future__ import annotations

import json
import random

import polars as pl
import pytest

from data_ingest import rules
from data_ingest.errors import IngestError
from data_ingest.pipeline import add
from data_ingest.store import Store

from ingest_helpers import write

SPEC = """
[dataset]
name = "mixed"
title = "mixed"
unit = "person"
unit_id = "person_id"
temporal = "birth"

[columns.bsn]
action = "pseudonymise"
kind = "bsn"
as = "person_id"

[columns.birth]
action = "generalise"
type = "date"
to = "year-month"
link = "birth_date"

[columns.sex]
action = "keep"
codes = ["M", "V"]
link = "sex"

[columns.pc]
action = "generalise"
to = "pc4"
link = "postcode"
on_invalid = "null"

[columns.pc_plain]
action = "generalise"
to = "pc4"
on_invalid = "null"

[columns.amount]
action = "keep"
type = "float"
"""

# Postcodes as they come: mostly in their normal form, some with spaces, lower case, white space
# around, Unicode that upper-cases to ASCII letters (ß -> SS), blanks, nulls and non-postcodes.
ODD_POSTCODES = ["1234 AB", "1234ab", " 1234AB", "1234AB\t", "12 34 ab", "1234ß", "1234ıa", "", "   ",
                 None, "0123AB", "1234A", "1234ABC", "ABCDEF", "1234-AB", "１２３４AB", "9999zz "]


def _source(tmp_path, rows: int, seed: int = 5):
    from data_ingest.demo import bsn_array
    import numpy as np

    rng = random.Random(seed)
    valid = [str(x) for x in bsn_array(np.random.default_rng(seed), 3000)]
    bsn, pc, pc_plain = [], [], []
    for _ in range(rows):
        r = rng.random()
        bsn.append(None if r < 0.05 else "123456789" if r < 0.1 else f" {rng.choice(valid)}" if r < 0.15
                   else rng.choice(valid))
        for col in (pc, pc_plain):
            col.append(rng.choice(ODD_POSTCODES) if rng.random() < 0.2
                       else f"{rng.randint(1000, 9999)}{rng.choice(['AB', 'CD', 'XZ'])}")
    df = pl.DataFrame({
        "bsn": bsn,
        "birth": [f"{rng.randint(1920, 2020)}-0{rng.randint(1, 9)}-1{rng.randint(0, 9)}" for _ in range(rows)],
        "sex": [rng.choice(["M", "V"]) for _ in range(rows)],
        "pc": pc, "pc_plain": pc_plain,
        "amount": [rng.random() * 1000 for _ in range(rows)],
    }, schema={"bsn": pl.String, "birth": pl.String, "sex": pl.String, "pc": pl.String,
               "pc_plain": pl.String, "amount": pl.Float64})
    src = tmp_path / "src.parquet"
    df.write_parquet(src)
    return src, write(tmp_path / "spec.toml", SPEC), df


def _files(path):
    return {p.relative_to(path).as_posix(): p.read_bytes() for p in sorted(path.rglob("*.parquet"))}


def _metadata(path):
    md = json.loads((path / "metadata.json").read_text())
    md["provenance"].pop("created")
    return md


@pytest.mark.parametrize("slice_rows", [997, 4_000])
def test_parallel_slices_write_the_same_bytes_as_one_after_the_other(env, tmp_path, slice_rows):
    _store, key = env
    src, spec, _df = _source(tmp_path, 9_000)
    one = add(src, spec, tmp_path / "one", key, slice_rows=slice_rows, workers=1)
    many = add(src, spec, tmp_path / "many", key, slice_rows=slice_rows, workers=3)
    assert one.rows_in == many.rows_in == 9_000
    assert (one.status, one.units, one.nulled) == (many.status, many.units, many.nulled)
    a, b = _files(one.path), _files(many.path)
    assert list(a) == list(b) and len([f for f in a if f.startswith("part-")]) == -(-9_000 // slice_rows)
    assert a == b  # the part files and linkage keys, byte for byte (footer included)
    assert _metadata(one.path) == _metadata(many.path)


def test_postcode_fast_path_equals_the_plain_normalisation(env, tmp_path):
    store, key = env
    src, spec, df = _source(tmp_path, 6_000)
    res = add(src, spec, store, key, slice_rows=1_000)
    out = pl.concat([pl.read_parquet(res.path / f"part-{k}.parquet") for k in range(6)])
    keys = pl.read_parquet(res.path / "_linkage" / "*.parquet").sort("_rid")
    for col in ("pc", "pc_plain"):
        text = pl.col(col).str.strip_chars()
        text = pl.when(text.str.len_bytes() > 0).then(text)
        want = df.select(rules.postcode4_expr(text).alias("pc4"),
                         rules.postcode_bad_expr(text).alias("bad"),
                         rules.normalise_postcode_expr(text).alias("norm"))
        assert out[col].to_list() == want["pc4"].to_list()
        assert res.nulled[col] == want["bad"].sum() > 0
        if col == "pc":  # linkage keeps the full normalised postcode (a bad one is set to null)
            assert keys["postcode"].to_list() == want.select(
                pl.when(~pl.col("bad")).then(pl.col("norm")))["norm"].to_list()
            assert {"1234SS", "9999ZZ", "1234AB"} <= set(keys["postcode"].to_list())


def test_present_only_works_on_chunked_and_sliced_series():
    f = rules._present_only(lambda s: s.str.to_uppercase())
    s = pl.concat([pl.Series(["a", None, "b"]), pl.Series([None, "c"])], rechunk=False)
    assert f(s).to_list() == ["A", None, "B", None, "C"]
    assert f(s.slice(1, 3)).to_list() == [None, "B", None]
    assert f(pl.Series([None, None], dtype=pl.String)).to_list() == [None, None]
    assert s.to_list() == ["a", None, "b", None, "c"]  # the input is not changed


def _bad_sex_source(tmp_path, rows: int, bad_rows: list[int]):
    src, spec, df = _source(tmp_path, rows)
    sex = df["sex"].to_list()
    for r in bad_rows:
        sex[r] = f"Q{r}"
    df.with_columns(sex=pl.Series(sex)).write_parquet(src)
    return src, spec


@pytest.mark.parametrize("workers", [1, 2, 4])
def test_first_bad_value_of_the_file_is_reported_with_nothing_written(env, tmp_path, workers):
    """Bad values in the 2nd and 4th slice: the 2nd slice's first one is the error, whichever
    slice finishes first; no version, no claimed folder and no staging folder are left."""
    store, key = env
    src, spec = _bad_sex_source(tmp_path, 8_000, [7_777, 3_456, 2_999])
    with pytest.raises(IngestError) as e:
        add(src, spec, store, key, slice_rows=1_000, workers=workers)
    msg = str(e.value)
    assert "row 3000," in msg and "column 'sex'" in msg and "'Q2999'" in msg, msg
    assert "(2 rows in this part" not in msg
    assert Store(store).versions("mixed") == []
    assert not (store / "datasets" / "mixed" / "v1").exists()
    assert not any((store / ".staging").iterdir())
    # the file corrected: v1
    src, spec = _bad_sex_source(tmp_path, 8_000, [])
    assert add(src, spec, store, key, slice_rows=1_000, workers=workers).version == "v1"


def test_bad_value_in_the_last_slice_only(env, tmp_path):
    store, key = env
    src, spec = _bad_sex_source(tmp_path, 5_000, [4_999])
    with pytest.raises(IngestError) as e:
        add(src, spec, store, key, slice_rows=1_000, workers=2)
    assert "row 5000," in str(e.value) and "'Q4999'" in str(e.value)
    assert Store(store).versions("mixed") == [] and not any((store / ".staging").iterdir())


def test_an_exception_in_a_later_slice_leaves_nothing(env, tmp_path, monkeypatch):
    from data_ingest import pipeline

    store, key = env
    src, spec, _df = _source(tmp_path, 6_000)
    real = pipeline._write_part

    def failing(out, keys, stage, k, *a, **kw):
        if k == 3:
            raise OSError("disk full")
        return real(out, keys, stage, k, *a, **kw)

    monkeypatch.setattr(pipeline, "_write_part", failing)
    with pytest.raises(OSError):
        add(src, spec, store, key, slice_rows=1_000, workers=2)
    assert Store(store).versions("mixed") == [] and not any((store / ".staging").iterdir())


def _count_computed(monkeypatch):
    from data_ingest import pipeline

    computed = []
    real = pipeline._Slices._compute_check_write

    def spy(self, k, *a):
        computed.append(k)
        return real(self, k, *a)

    monkeypatch.setattr(pipeline._Slices, "_compute_check_write", spy)
    return computed


def test_a_rerun_is_decided_by_the_hash_before_any_slice_is_computed(env, tmp_path, monkeypatch):
    store, key = env
    _src, spec, df = _source(tmp_path, 3_000)
    src = tmp_path / "src.csv"
    df.write_csv(src)
    spec = write(tmp_path / "spec.toml", spec.read_text().replace("[dataset]", '[source]\nformat = "csv"\n\n[dataset]'))
    first = add(src, spec, store, key, slice_rows=1_000)
    computed = _count_computed(monkeypatch)
    again = add(src, spec, store, key, slice_rows=1_000)
    assert again.reused and again.version == first.version and computed == []
    # the same size, other bytes: only the hash can tell, and then the slices are computed
    text = src.read_text()
    i = text.rindex("M,")
    src.write_text(text[:i] + "V," + text[i + 2:])
    assert src.stat().st_size == json.loads((first.path / "metadata.json").read_text())["provenance"]["source_bytes"]
    other = add(src, spec, store, key, slice_rows=1_000)
    assert not other.reused and other.version == "v2" and sorted(computed) == [0, 1, 2]


def test_slices_computed_while_the_source_is_hashed(env, tmp_path, monkeypatch):
    """A slow hash: the slices are computed meanwhile, but nothing is written before the version is
    claimed; a bad value found meanwhile is reported as usual, and nothing is left."""
    import time

    from data_ingest import pipeline

    store, key = env
    real = pipeline.file_sha256
    claimed = []
    real_claim = Store.claim_version

    def slow(path, *a):
        time.sleep(0.5)
        return real(path, *a)

    def claim(self, dataset):
        claimed.append(sorted(p.name for p in (store / ".staging").rglob("part-*")))
        return real_claim(self, dataset)

    monkeypatch.setattr(pipeline, "file_sha256", slow)
    monkeypatch.setattr(Store, "claim_version", claim)
    computed = _count_computed(monkeypatch)
    src, spec = _bad_sex_source(tmp_path, 4_000, [2_500])
    with pytest.raises(IngestError) as e:
        add(src, spec, store, key, slice_rows=1_000)
    assert "row 2501," in str(e.value) and computed and claimed == [[]]
    assert Store(store).versions("mixed") == [] and not any((store / ".staging").iterdir())
    src, spec = _bad_sex_source(tmp_path, 4_000, [])
    res = add(src, spec, store, key, slice_rows=1_000)
    assert res.version == "v1" and claimed[-1] == [] and res.rows_out == 4_000


NUMBER_SPEC = """
[dataset]
name = "numbers"
title = "numbers"

[columns.n]
action = "keep"
type = "int"

[columns.x]
action = "keep"
type = "float"

[columns.d]
action = "keep"
type = "date"
"""

INTS = ["5", "+5", "-5", " 5", "05", "", "  ", "9223372036854775807", "-0", "0"]
FLOATS = ["1.5", "+1.5", "-1.5", " 1.5", "1e3", "1E-3", ".5", "5.", "inf", "-inf", "NaN", "infinity", "", "0"]


@pytest.mark.parametrize("extra", ["", "7 "])  # "7 ": the typed read fails, the text path is used
def test_typed_csv_numbers_equal_the_text_path(env, tmp_path, monkeypatch, extra):
    from data_ingest import pipeline

    store, key = env
    rng = random.Random(3)
    rows = [(rng.choice(INTS), rng.choice(FLOATS), f"20{rng.randint(10, 24)}-0{rng.randint(1, 9)}-1{rng.randint(0, 9)}")
            for _ in range(500)] + [(extra, "2.5", "2020-01-01")]
    src = write(tmp_path / "n.csv", "n,x,d\n" + "\n".join(f'"{a}","{b}",{c}' for a, b, c in rows) + "\n")
    spec = write(tmp_path / "n.toml", NUMBER_SPEC)
    typed = add(src, spec, tmp_path / "typed", key)

    def text_only(src_, spec_):
        needed = [c.source for c in spec_.columns]
        return src_.lf.select(needed).collect()

    monkeypatch.setattr(pipeline, "_read_csv", text_only)
    text = add(src, spec, tmp_path / "text", key)
    a, b = pl.read_parquet(typed.path / "part-0.parquet"), pl.read_parquet(text.path / "part-0.parquet")
    assert a.schema == b.schema and a.equals(b, null_equal=True)
    assert a["n"].null_count() > 0 and a["x"].is_nan().sum() > 0


def test_typed_csv_bad_number_is_reported_by_row_and_column(env, tmp_path):
    store, key = env
    src = write(tmp_path / "n.csv", "n,x,d\n1,1.5,2020-01-01\n2,1.5x,2020-01-01\n3,1,2020-01-01\n")
    with pytest.raises(IngestError) as e:
        add(src, write(tmp_path / "n.toml", NUMBER_SPEC), store, key)
    assert "row 2 (line 3), column 'x': '1.5x' is not a float number" in str(e.value)


def test_slice_bounds_follow_row_groups():
    from data_ingest.pipeline import slice_bounds

    assert slice_bounds(10, 3) == [(0, 3), (3, 3), (6, 3), (9, 1)]
    assert slice_bounds(10, 3, [5, 5]) == [(0, 3), (3, 2), (5, 3), (8, 2)]
    assert slice_bounds(10, 4, [1] * 10) == [(0, 4), (4, 4), (8, 2)]
    assert slice_bounds(10, 4, [2, 6, 2]) == [(0, 2), (2, 4), (6, 2), (8, 2)]
    assert slice_bounds(10, 4, [3, 3]) == [(0, 4), (4, 4), (8, 2)]  # groups that do not add up: ignored
    groups = [123_457] * 81 + [10_000_000 - 123_457 * 81]
    bounds = slice_bounds(10_000_000, 1_000_000, groups)
    assert bounds[0] == (0, 8 * 123_457) and sum(n for _, n in bounds) == 10_000_000
    assert all(a + n == b for (a, n), (b, _) in zip(bounds, bounds[1:]))


def test_parquet_with_several_row_groups_is_sliced_on_them(env, tmp_path):
    import pyarrow.parquet as pq

    store, key = env
    _src, spec, df = _source(tmp_path, 5_000)
    src = tmp_path / "groups.parquet"
    pq.write_table(df.to_arrow(), src, row_group_size=700)
    res = add(src, spec, store, key, slice_rows=1_500)
    parts = sorted(res.path.glob("part-*.parquet"), key=lambda p: int(p.stem.split("-")[1]))
    assert [pq.read_metadata(p).num_rows for p in parts] == [1_400, 1_400, 1_400, 800]
    assert res.rows_out == 5_000
    one = add(src, spec, tmp_path / "one", key, slice_rows=5_000)
    assert pl.concat([pl.read_parquet(p) for p in parts]).equals(pl.read_parquet(one.path / "part-0.parquet"))


@pytest.mark.parametrize("engine", ["in-memory", "streaming"])
def test_year_and_year_month_tables_equal_the_calendar(engine):
    from datetime import date

    rng = random.Random(11)
    days = [rng.randint(-80_000, 90_000) for _ in range(20_000)]  # 1750 .. 2216: some outside the table
    dates = pl.Series("d", days).cast(pl.Int32).cast(pl.Date).to_list()
    dates[::97] = [None] * len(dates[::97])
    dates += [date(1800, 1, 1), date(2199, 12, 31), date(1799, 12, 31), date(2200, 1, 1), date(1, 1, 1),
              date(9999, 12, 31), date(2024, 2, 29)]
    for frame in (pl.DataFrame({"d": dates}), pl.DataFrame({"d": [x for x in dates if x and 1800 <= x.year < 2200]})):
        got = frame.lazy().select(rules.date_year_expr(pl.col("d")).alias("y"),
                                  rules.date_year_month_expr(pl.col("d")).alias("ym")).collect(engine=engine)
        assert got["y"].to_list() == frame["d"].dt.year().to_list() and got["y"].dtype == pl.Int32
        assert got["ym"].to_list() == frame["d"].dt.strftime("%Y-%m").to_list()


def test_file_sha256_is_the_plain_sha256_and_can_be_stopped(tmp_path):
    import hashlib
    import threading

    from data_ingest.sources import file_sha256

    path = tmp_path / "blob"
    data = random.Random(1).randbytes(9 * (1 << 20) + 123)
    path.write_bytes(data)
    assert file_sha256(path) == hashlib.sha256(data).hexdigest()
    stop = threading.Event()
    stop.set()
    assert file_sha256(path, stop) is None


def test_a_bad_file_is_reported_without_waiting_for_its_hash(env, tmp_path, monkeypatch):
    """The hash runs beside the checks of the file; an error stops it (the run ends quickly)."""
    import time

    from data_ingest import pipeline

    store, key = env
    stopped = []
    real = pipeline.file_sha256

    def slow(path, stop=None):
        for _ in range(200):  # up to 10 s, unless stopped
            if stop is not None and stop.is_set():
                stopped.append(True)
                return None
            time.sleep(0.05)
        return real(path)

    monkeypatch.setattr(pipeline, "file_sha256", slow)
    src = write(tmp_path / "bad.csv", "a,b\n1,2\n")
    t = time.perf_counter()
    with pytest.raises(IngestError):
        add(src, write(tmp_path / "s.toml", NUMBER_SPEC), store, key)
    assert time.perf_counter() - t < 5 and stopped == [True]
