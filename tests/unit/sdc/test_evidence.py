"""sdc.evidence: DuckDB evidence against a brute-force oracle, over real Parquet files."""

import duckdb
import numpy as np
import polars as pl
import pyarrow.parquet as pq
import pytest

from sdc.errors import SourceError, TableSpecError
from sdc.evidence import TOTAL, DimSpec, compute_evidence, resolve_source

DIMS = [DimSpec("mun", ("reg", "mun")), DimSpec("sex", ("sex",))]


def make_rows(seed=0, n=400, units=120, spread_units=False):
    rng = np.random.default_rng(seed)
    unit = rng.integers(0, units, n)
    # a unit lives in one municipality unless spread_units
    mun_of_unit = rng.integers(0, 7, units)
    mun = rng.integers(0, 7, n) if spread_units else mun_of_unit[unit]
    sex_of_unit = rng.choice(["F", "M"], units)
    return pl.DataFrame({
        "pid": unit,
        "mun": [f"m{m}" for m in mun],
        "reg": [f"R{m // 3}" for m in mun],
        "sex": sex_of_unit[unit],
        "inc": np.round(rng.lognormal(3, 1, n), 2),
    })


def rows_of(df: pl.DataFrame, key: dict) -> pl.DataFrame:
    """The rows of one cell (a margin's TOTAL matches everything)."""
    for col, lab in key.items():
        if lab != TOTAL:
            df = df.filter(pl.col(col).cast(pl.Utf8) == lab)
    return df


def oracle(df: pl.DataFrame, ev, unit: str | None, k: int):
    """Per cell, from the rows: filter, sum per unit, then n/total/top-k -- a loop over cells."""
    out = {}
    for i, key in enumerate(ev.key_dicts()):
        sub = rows_of(df, key)
        if unit:
            per = sub.group_by(unit).agg(pl.col("inc").sum())["inc"].to_numpy()
        else:
            per = sub["inc"].to_numpy()
        per = np.sort(per)[::-1]
        top = np.zeros(k)
        top[: min(k, per.size)] = per[:k]
        out[i] = (per.size, per.sum(), top)
    return out


@pytest.mark.parametrize("unit", [None, "pid"])
def test_evidence_matches_oracle_on_parquet(tmp_path, unit):
    df = make_rows()
    path = tmp_path / "d.parquet"
    df.write_parquet(path)
    ev = compute_evidence(resolve_source(str(path)), DIMS, value="inc", stat="sum", unit=unit, top_k=3)
    assert ev.path == "inner-cells" and ev.additive
    want = oracle(df, ev, unit, 3)
    for i, (n, total, top) in want.items():
        assert ev.n_units[i] == n, ev.key_dicts()[i]
        assert ev.total[i] == pytest.approx(total)
        np.testing.assert_allclose(ev.top[i], top)
    # margins and subtotals are cells: reg and grand totals exist and add up
    assert ev.structure.is_additive(ev.total)
    assert ev.n_units[0] == (df["pid"].n_unique() if unit else df.height)


@pytest.mark.parametrize("unit", [None, "pid"])
def test_margins_from_inner_cells_match_oracle_with_negatives(tmp_path, unit):
    """Margins are rolled up from the inner cells in numpy: top-k over children (negatives and
    cells with fewer than k units included), counts, sums, negatives, min and max."""
    rng = np.random.default_rng(7)
    df = make_rows(seed=3, n=300, units=90)
    inc = df["inc"].to_numpy().copy()
    inc[rng.random(inc.size) < 0.3] *= -1
    df = df.with_columns(pl.Series("inc", inc), pl.Series("age", np.where(df["pid"].to_numpy() % 3 == 0, "o", "y")))
    path = tmp_path / "neg.parquet"
    df.write_parquet(path)
    dims = DIMS + [DimSpec("age", ("age",))]
    ev = compute_evidence(resolve_source(str(path)), dims, value="inc", stat="sum", unit=unit, top_k=4)
    assert ev.path == "inner-cells"
    want = oracle(df, ev, unit, 4)
    for i, (n, total, top) in want.items():
        assert ev.n_units[i] == n, ev.key_dicts()[i]
        assert ev.total[i] == pytest.approx(total)
        np.testing.assert_allclose(ev.top[i], top, err_msg=str(ev.key_dicts()[i]))
    for stat, fn in (("min", np.min), ("max", np.max)):
        e2 = compute_evidence(resolve_source(str(path)), dims, value="inc", stat=stat, unit=None)
        for i, key in enumerate(e2.key_dicts()):
            sub = rows_of(df, key)
            if sub.height:
                assert e2.value[i] == pytest.approx(fn(sub["inc"].to_numpy())), key
            else:
                assert np.isnan(e2.value[i])
            assert e2.n_negative[i] == int((sub["inc"] < 0).sum())


def test_rows_are_summed_per_unit_first(tmp_path):
    # unit 1 has three rows of 5 in one cell: one unit of 15, not three of 5
    df = pl.DataFrame({"g": ["a"] * 4, "pid": [1, 1, 1, 2], "v": [5.0, 5.0, 5.0, 1.0]})
    path = tmp_path / "u.parquet"
    df.write_parquet(path)
    ev = compute_evidence(resolve_source(str(path)), [DimSpec("g", ("g",))], value="v", stat="sum", unit="pid", top_k=2)
    i = ev.key_dicts().index({"g": "a"})
    assert ev.n_units[i] == 2 and ev.total[i] == 16
    assert ev.top[i].tolist() == [15.0, 1.0]
    ev_rows = compute_evidence(resolve_source(str(path)), [DimSpec("g", ("g",))], value="v", stat="sum", unit=None, top_k=2)
    assert ev_rows.n_units[i] == 4


def test_units_spanning_cells_use_the_exact_path(tmp_path):
    df = make_rows(seed=3, spread_units=True)
    path = tmp_path / "s.parquet"
    df.write_parquet(path)
    ev = compute_evidence(resolve_source(str(path)), DIMS, value="inc", stat="sum", unit="pid", top_k=2)
    assert ev.path == "grouping-sets" and not ev.additive
    want = oracle(df, ev, "pid", 2)
    for i, (n, total, top) in want.items():
        assert ev.n_units[i] == n
        assert ev.total[i] == pytest.approx(total)
        np.testing.assert_allclose(ev.top[i], top)
    with pytest.raises(TableSpecError, match="not additive"):
        compute_evidence(resolve_source(str(path)), DIMS, value=None, stat="count", unit="pid")


def test_all_source_kinds_give_the_same_evidence(tmp_path):
    df = make_rows(seed=5)
    (tmp_path / "parts").mkdir()
    df.head(200).write_parquet(tmp_path / "parts" / "a.parquet")
    df.tail(200).write_parquet(tmp_path / "parts" / "b.parquet")
    con = duckdb.connect()
    con.register("people", df.to_arrow())
    sources = [
        resolve_source(str(tmp_path / "parts" / "*.parquet")),
        resolve_source(str(tmp_path / "parts")),
        resolve_source("SELECT * FROM people", con),
        resolve_source(df.to_arrow()),
        resolve_source(df),
        resolve_source(df.lazy()),
        resolve_source(con.sql("SELECT * FROM people")),
    ]
    evs = [compute_evidence(s, DIMS, value="inc", stat="mean", unit="pid", top_k=2) for s in sources]
    for e in evs[1:]:
        assert e.key_dicts() == evs[0].key_dicts()
        np.testing.assert_array_equal(e.n_units, evs[0].n_units)
        np.testing.assert_allclose(e.total, evs[0].total)
        np.testing.assert_allclose(e.value, evs[0].value, equal_nan=True)


def test_median_and_min_max_match_numpy(tmp_path):
    df = make_rows(seed=7)
    path = tmp_path / "m.parquet"
    df.write_parquet(path)
    src = resolve_source(str(path))
    ev = compute_evidence(src, DIMS, value="inc", stat="median", unit=None, quantile=0.5)
    evmax = compute_evidence(src, DIMS, value="inc", stat="max", unit=None)
    for i, key in enumerate(ev.key_dicts()):
        sub = rows_of(df, key)
        if sub.height:
            assert ev.value[i] == pytest.approx(np.median(sub["inc"].to_numpy()))
            assert evmax.value[i] == pytest.approx(sub["inc"].max())


def test_negative_missing_and_nan_flags(tmp_path):
    df = pl.DataFrame({"g": ["a", "a", "a", "b", "b"], "pid": [1, 2, 3, 4, 5],
                       "v": [1.0, -2.0, None, float("nan"), 3.0]})
    path = tmp_path / "f.parquet"
    df.write_parquet(path)
    ev = compute_evidence(resolve_source(str(path)), [DimSpec("g", ("g",))], value="v", stat="sum", unit="pid")
    keys = ev.key_dicts()
    a, b, tot = keys.index({"g": "a"}), keys.index({"g": "b"}), keys.index({"g": TOTAL})
    assert (ev.n_negative[a], ev.n_missing[a], ev.n_units[a]) == (1, 1, 2)
    assert (ev.n_negative[b], ev.n_missing[b], ev.n_units[b]) == (0, 1, 1)  # NaN is missing
    assert ev.total[tot] == pytest.approx(2.0) and ev.n_missing[tot] == 2


def test_hierarchy_not_nested_names_the_values(tmp_path):
    df = pl.DataFrame({"mun": ["m1", "m1", "m2", "m3", "m3"], "reg": ["R1", "R2", "R1", "R2", "R3"]})
    path = tmp_path / "h.parquet"
    df.write_parquet(path)
    with pytest.raises(TableSpecError, match=r"'mun' is not nested in 'reg': 'm1' under 'R1', 'R2'; 'm3' under 'R2', 'R3'"):
        compute_evidence(resolve_source(str(path)), [DimSpec("mun", ("reg", "mun"))], value=None, stat="count", unit=None)


def test_reserved_total_and_null_dimension_values(tmp_path):
    p1 = tmp_path / "t.parquet"
    pl.DataFrame({"g": ["a", "Total"]}).write_parquet(p1)
    with pytest.raises(SourceError, match="value 'Total'"):
        compute_evidence(resolve_source(str(p1)), [DimSpec("g", ("g",))], value=None, stat="count", unit=None)
    p2 = tmp_path / "n.parquet"
    pl.DataFrame({"g": ["a", None]}).write_parquet(p2)
    with pytest.raises(SourceError, match="missing values"):
        compute_evidence(resolve_source(str(p2)), [DimSpec("g", ("g",))], value=None, stat="count", unit=None)


def test_integer_dimensions_sort_numerically(tmp_path):
    path = tmp_path / "i.parquet"
    pq.write_table(pl.DataFrame({"age": [10, 2, 1, 10, 2]}).to_arrow(), path)
    ev = compute_evidence(resolve_source(str(path)), [DimSpec("age", ("age",))], value=None, stat="count", unit=None)
    assert ev.structure.dimensions[0].codes == [TOTAL, "1", "2", "10"]
    assert ev.n_units.tolist() == [5, 1, 2, 2]


def test_source_errors(tmp_path):
    with pytest.raises(SourceError, match="file not found"):
        resolve_source(str(tmp_path / "missing.parquet"))
    with pytest.raises(SourceError, match="no files match"):
        resolve_source(str(tmp_path / "*.parquet"))
    with pytest.raises(SourceError, match="unsupported source type"):
        resolve_source(123)
    bad = tmp_path / "bad.parquet"
    bad.write_text("not parquet")
    with pytest.raises(SourceError):
        compute_evidence(resolve_source(str(bad)), [DimSpec("g", ("g",))], value=None, stat="count", unit=None)


def test_missing_unit_ids_are_refused_with_the_count(tmp_path):
    """Rows without a unit id would silently merge into one 'unit': refused, naming how many."""
    df = pl.DataFrame({"pid": [1, 2, None, 4, None], "g": ["a", "a", "b", "b", "b"], "v": [1.0, 2, 3, 4, 5]})
    path = tmp_path / "nullunit.parquet"
    df.write_parquet(path)
    with pytest.raises(SourceError, match=r"unit column 'pid' is missing \(NULL\) in 2 rows"):
        compute_evidence(resolve_source(str(path)), [DimSpec("g", ("g",))], value="v", stat="sum", unit="pid")
    ok = compute_evidence(resolve_source(f"SELECT * FROM '{path}' WHERE pid IS NOT NULL"),
                          [DimSpec("g", ("g",))], value="v", stat="sum", unit="pid")
    assert ok.n_units[0] == 3
