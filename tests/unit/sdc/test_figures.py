"""sdc.figure: real DuckDB over real Parquet; every kind passes and fails, drawn from checked cells."""

import duckdb
import numpy as np
import polars as pl
import pytest

import sdc
from sdc.errors import SdcError, SourceError
from sdc.figures import FigureSpecError, merge_bins, nice_edges, pool_survival


def parquet(tmp_path, df: pl.DataFrame, name="d.parquet") -> str:
    path = tmp_path / name
    df.write_parquet(path)
    return str(path)


def values_frame(values) -> pl.DataFrame:
    values = np.asarray(values, dtype=float)
    return pl.DataFrame({"pid": np.arange(len(values)), "x": values})


def hist_counts(f):
    return [(c["key"]["bin"], c["values"]["count"], c["status"]) for c in f.cells]


# ---------------------------------------------------------------------------- pure helpers
def test_nice_edges_are_round_and_cover_the_range():
    e = nice_edges(3.7, 96.2, 10)
    assert e[0] <= 3.7 and e[-1] >= 96.2
    assert np.allclose(np.diff(e), 10.0)
    assert all(float(x).is_integer() for x in e)


def test_merge_bins_merges_failing_with_smaller_neighbour():
    n = np.array([3, 20, 4, 30, 15])
    groups = merge_bins(n, lambda c: c < 10)
    merged = [int(n[a:b + 1].sum()) for a, b in groups]
    assert all(m >= 10 for m in merged) and sum(merged) == n.sum()
    # 3 joins 20 (its only neighbour); then 4 joins the smaller of 23 and 30
    assert groups == [(0, 2), (3, 3), (4, 4)]


def test_pool_survival_pools_until_k_left_and_merges_the_tail():
    left = np.array([3, 3, 3, 3, 12, 1, 0, 2])
    pools = pool_survival(left, left, 10)
    sums = [int(left[a:b + 1].sum()) for a, b in pools]
    assert all(s >= 10 for s in sums) and sum(sums) == left.sum()
    assert pools[-1][1] == len(left) - 1


# ---------------------------------------------------------------------------- histogram
def test_histogram_last_bin_counts_the_maximum(tmp_path):
    # 0..99 ten times: 1000 units; explicit edges ending exactly at the maximum
    vals = np.tile(np.arange(100), 10)
    src = parquet(tmp_path, values_frame(vals))
    f = sdc.figure(src, "histogram", x="x", unit="pid", edges=[0, 10, 20, 30, 40, 50, 60, 70, 80, 90, 99])
    counts = [c["values"]["count"] for c in f.cells]
    assert sum(counts) == 1000  # nothing falls out, the maximum included
    assert counts[-1] == 100  # 90..99 (10 values x 10)
    assert f.status == "pass" and f.ok


def test_histogram_edges_never_show_the_raw_extremes(tmp_path):
    rng = np.random.default_rng(5)
    vals = np.concatenate([rng.normal(100, 15, 5000), [1234.567, -987.654]])  # two outliers
    src = parquet(tmp_path, values_frame(vals))
    f = sdc.figure(src, "histogram", x="x", unit="pid", bins=10)
    edges = f.to_json()["options"]["edges"]
    assert vals.min() not in edges and vals.max() not in edges
    assert all(abs(e - round(e)) < 1e-9 for e in edges)  # round numbers
    assert edges[-1] < 1234 and edges[0] > -987  # the outliers sit in open-ended outer bins
    cells = f.to_json()["cells"]
    assert cells[0]["key"]["lower"] is None and cells[-1]["key"]["upper"] is None
    assert sum(c["n_units"] for c in cells if c["n_units"] is not None) == len(vals)


@pytest.mark.parametrize("n_small, fails", [(9, True), (10, False)])
def test_histogram_threshold_boundary_merge(tmp_path, n_small, fails):
    # 100 units in [0, 10), n_small in [10, 20), 100 in [20, 30)
    vals = [5.0] * 100 + [15.0] * n_small + [25.0] * 100
    src = parquet(tmp_path, values_frame(vals))
    f = sdc.figure(src, "histogram", x="x", unit="pid", edges=[0, 10, 20, 30])
    if fails:
        assert f.summary["merged"] == 1 and f.status == "protected"
        assert len(f.cells) == 2 and all(c["status"] == "safe" for c in f.cells)
        assert [m["rules"] for m in f.failed if m["status"] == "merged"] == [["threshold"]]
        # the failing bin's count is nowhere in the released aggregate
        assert n_small not in [c["values"]["count"] for c in f.cells]
    else:
        assert f.summary["merged"] == 0 and [c["values"]["count"] for c in f.cells] == [100, 10, 100]


def test_a_figure_with_a_failing_bin_is_never_drawn_with_it(tmp_path):
    vals = [5.0] * 100 + [15.0] * 3 + [25.0] * 100 + [35.0] * 50
    src = parquet(tmp_path, values_frame(vals))
    edges = [0, 10, 20, 30, 40]
    merged = sdc.figure(src, "histogram", x="x", unit="pid", edges=edges)
    merged.png()
    drawn = merged._drawn  # the bars the PNG was drawn from
    assert all(h >= 10 for _, _, h in drawn)
    assert (10.0, 20.0, 3) not in drawn and not any(a == 10.0 and b == 20.0 for a, b, _ in drawn)
    assert sum(h for _, _, h in drawn) == len(vals)  # merged, not dropped

    sup = sdc.figure(src, "histogram", x="x", unit="pid", edges=edges, on_fail="suppress")
    png = sup.png()
    assert png.startswith(b"\x89PNG")
    drawn = sup._drawn
    assert not any(a == 10.0 and b == 20.0 for a, b, _ in drawn)
    assert 3 not in [h for _, _, h in drawn]
    csv = sup.files()["figure.csv"].decode()
    assert '"[10, 20)",10.0,20.0,\n' in csv  # the count is empty in the released CSV
    # a secondary bin protects it against "total minus the others"
    assert sup.summary["secondary"] >= 1
    assert sup.to_json()["cells"][1]["value"] is None


def test_histogram_zero_bins_follow_the_policy(tmp_path):
    vals = [5.0] * 50 + [25.0] * 50  # the [10, 20) bin is empty
    src = parquet(tmp_path, values_frame(vals))
    f = sdc.figure(src, "histogram", x="x", unit="pid", edges=[0, 10, 20, 30], on_fail="suppress")
    assert f.cells[1]["status"] == "primary" and "zeros" in f.cells[1]["rules"]  # acro: zeros disclosive
    pol = {"name": "z", "threshold": {"min_units": 10}, "zeros": {"disclosive": False}}
    g = sdc.figure(src, "histogram", x="x", unit="pid", edges=[0, 10, 20, 30], on_fail="suppress", policy=pol)
    assert g.cells[1]["status"] == "safe" and g.to_json()["cells"][1]["value"] == 0


def test_histogram_counts_units_not_rows(tmp_path):
    df = pl.DataFrame({"pid": [1] * 30 + list(range(100, 150)), "x": [5.0] * 30 + [25.0] * 50})
    f = sdc.figure(parquet(tmp_path, df), "histogram", x="x", unit="pid", edges=[0, 10, 20, 30],
                   on_fail="suppress")
    assert f.cells[0]["n_units"] == 1 and f.cells[0]["status"] == "primary"


# ---------------------------------------------------------------------------- bar / line
def test_bar_and_grouped_bar_are_tables_drawn(tmp_path):
    df = pl.DataFrame({"pid": range(60), "g": ["a"] * 30 + ["b"] * 21 + ["c"] * 9,
                       "s": (["F", "M"] * 30)})
    src = parquet(tmp_path, df)
    f = sdc.figure(src, "bar", x="g", unit="pid")
    st = {c["key"]["g"]: c["status"] for c in f.cells}
    assert st["c"] == "primary" and st["a"] == "safe"
    assert f.summary["secondary"] >= 1  # "c" cannot be recovered from the total
    f.png()
    assert all(v >= 10 for _, _, v in f._drawn) and len(f._drawn) == 3 - 1 - f.summary["secondary"]
    g = sdc.figure(src, "grouped_bar", x="g", by="s", unit="pid")
    assert {(c["key"]["g"], c["key"]["s"]) for c in g.cells} == {(a, b) for a in "abc" for b in "FM"}
    assert g.files()["figure.csv"].decode().splitlines()[0] == "g,s,value"


def test_line_over_time_each_point_a_cell(tmp_path):
    years = [2000] * 20 + [2001] * 10 + [2002] * 9 + [2003] * 25
    df = pl.DataFrame({"pid": range(len(years)), "year": years, "v": np.arange(len(years), dtype=float)})
    src = parquet(tmp_path, df)
    f = sdc.figure(src, "line", x="year", y="v", stat="mean", unit="pid")
    st = {c["key"]["year"]: c["status"] for c in f.cells}
    assert st["2001"] in ("safe", "secondary") and st["2002"] == "primary"
    f.png()
    assert "2002" not in [x for x, _, _ in f._drawn]


# ---------------------------------------------------------------------------- box plot
@pytest.mark.parametrize("n, ok", [(200, True), (199, False)])
def test_box_plot_whiskers_need_units_beyond_them(tmp_path, n, ok):
    # p5 needs n * 0.05 >= 10 units below it: 200 passes, 199 fails
    rng = np.random.default_rng(n)
    df = pl.DataFrame({"pid": range(n + 300), "g": ["a"] * n + ["b"] * 300, "v": rng.normal(size=n + 300)})
    f = sdc.figure(parquet(tmp_path, df), "box", y="v", by="g", unit="pid")
    a = {c["key"]["stat"]: c for c in f.cells if c["key"]["group"] == "a"}
    assert (a["p5"]["status"] == "safe") is ok and (a["p95"]["status"] == "safe") is ok
    assert a["median"]["status"] == "safe"
    f.png()
    drawn = {s["label"]: s for s in f._drawn}
    raw = df.filter(pl.col("g") == "a")["v"]
    assert drawn["a"]["whislo"] > raw.min() and drawn["a"]["whishi"] < raw.max()  # never the extremes
    assert drawn["a"]["fliers"] == []
    if not ok:  # the failing whisker is not drawn: it falls back to the box
        assert drawn["a"]["whislo"] == drawn["a"]["q1"]


def test_box_plot_refused_by_a_policy_without_percentiles(tmp_path):
    df = pl.DataFrame({"pid": range(50), "v": np.arange(50.0)})
    with pytest.raises(FigureSpecError, match="does not allow medians"):
        sdc.figure(parquet(tmp_path, df), "box", y="v", policy="essnet")


# ---------------------------------------------------------------------------- binned scatter
def test_raw_scatter_is_refused_with_a_reason(tmp_path):
    df = pl.DataFrame({"pid": range(50), "x": np.arange(50.0), "y": np.arange(50.0)})
    with pytest.raises(FigureSpecError, match="raw scatter plot is refused.*binned_scatter"):
        sdc.figure(parquet(tmp_path, df), "scatter", x="x", y="y")


def test_binned_scatter_drops_small_rectangles(tmp_path):
    rng = np.random.default_rng(3)
    x = np.concatenate([rng.uniform(0, 10, 400), [95.0] * 3])
    y = np.concatenate([rng.uniform(0, 10, 400), [95.0] * 3])
    df = pl.DataFrame({"pid": range(len(x)), "x": x, "y": y})
    f = sdc.figure(parquet(tmp_path, df), "hexbin", x="x", y="y", unit="pid", bins=2, x_range=[0, 10],
                   y_range=[0, 10])
    f.png()
    grid = f._drawn
    drawn = grid[~np.isnan(grid)]
    assert (drawn >= 10).all()
    for c in f.cells:
        if c["status"] != "safe":
            assert np.isnan(grid[c["key"]["y_bin"], c["key"]["x_bin"]])


# ---------------------------------------------------------------------------- Kaplan-Meier
def km_frame(n=300, seed=0, groups=("a",)):
    rng = np.random.default_rng(seed)
    t = rng.integers(0, 100, n).astype(float)
    e = rng.integers(0, 2, n)
    g = rng.choice(list(groups), n)
    return pl.DataFrame({"pid": range(n), "t": t, "e": e, "g": g})


def test_km_steps_pooled_until_k_left_and_curve_from_released_counts(tmp_path):
    df = km_frame()
    f = sdc.figure(parquet(tmp_path, df), "km", x="t", y="e", unit="pid", step=1)
    rows = [c for c in f.cells if c["status"] == "safe"]
    assert all(c["values"]["events"] + c["values"]["censored"] >= 10 for c in rows)
    assert sum(c["values"]["events"] + c["values"]["censored"] for c in rows) == len(df)
    # survival recomputed from released at-risk and events only
    s = 1.0
    for c in rows:
        s *= 1 - c["values"]["events"] / c["values"]["at_risk"]
        assert c["values"]["survival"] == pytest.approx(s)
    # exact KM at the pooled times agrees closely with the pooled estimate
    import statsmodels.api as sm

    km = sm.SurvfuncRight(df["t"].to_numpy(), df["e"].to_numpy())
    last = rows[-2]
    exact = km.surv_prob[km.surv_times < last["key"]["t_end"]][-1]
    assert abs(exact - last["values"]["survival"]) < 0.05


def test_km_small_group_gets_no_curve_and_policy_k(tmp_path):
    df = pl.concat([km_frame(200, 1, ("a",)), km_frame(9, 2, ("b",)).with_columns(pl.col("pid") + 1000)])
    src = parquet(tmp_path, df)
    f = sdc.figure(src, "km", x="t", y="e", by="g", unit="pid", step=1)
    b = [c for c in f.cells if c["key"]["group"] == "b"]
    assert len(b) == 1 and b[0]["status"] == "primary"
    assert f.to_json()["cells"][-1]["values"]["events"] is None
    pol = {"name": "k20", "threshold": {"min_units": 10}, "figures": {"survival_min_left": 20}}
    g = sdc.figure(src, "km", x="t", y="e", unit="pid", step=1, policy=pol)
    assert all(c["values"]["events"] + c["values"]["censored"] >= 20 for c in g.cells if c["status"] == "safe")


def test_km_rejects_bad_event_column(tmp_path):
    df = km_frame().with_columns(pl.lit(2).alias("e"))
    with pytest.raises(SourceError, match="1 \\(event\\) or 0"):
        sdc.figure(parquet(tmp_path, df), "km", x="t", y="e")


# ---------------------------------------------------------------------------- outputs, spec
def test_png_is_deterministic_and_spec_round_trip_gives_identical_bytes(tmp_path):
    rng = np.random.default_rng(9)
    df = pl.DataFrame({"pid": range(3000), "x": rng.normal(size=3000), "g": rng.choice(["a", "b"], 3000),
                       "t": rng.integers(0, 50, 3000).astype(float), "e": rng.integers(0, 2, 3000)})
    path = parquet(tmp_path, df)
    con = duckdb.connect()
    con.execute(f"CREATE VIEW people AS SELECT * FROM read_parquet('{path}')")
    for kind, kw in [("histogram", {"x": "x", "bins": 12}), ("bar", {"x": "g"}), ("box", {"y": "x", "by": "g"}),
                     ("binned_scatter", {"x": "x", "y": "t", "bins": 5}), ("km", {"x": "t", "y": "e", "by": "g"})]:
        f = sdc.figure("SELECT * FROM people", kind, unit="pid", con=con, **kw)
        assert f.spec["kind"] == "figure" and f.spec["source"] == {"sql": "SELECT * FROM people"}
        g = sdc.figure_from_spec(f.spec, con)
        assert f.files() == g.files(), kind
        j = f.to_json()
        assert j["ok"] is True and j["kind"] == "figure" and "policy" in j and "summary" in j
        assert "data:image/png;base64," in f.to_html()


def test_to_json_without_reveal_has_no_suppressed_numbers(tmp_path):
    vals = [5.0] * 100 + [15.0] * 3 + [25.0] * 100
    f = sdc.figure(parquet(tmp_path, values_frame(vals)), "histogram", x="x", edges=[0, 10, 20, 30],
                   on_fail="suppress")
    j = f.to_json()
    for c in j["cells"]:
        if c["status"] != "safe":
            assert c["value"] is None and c["n_units"] is None
    assert "3 units" not in str(j) and "3 units" in str(f.to_json(reveal=True))


@pytest.mark.parametrize("kwargs, match", [
    ({"kind": "pie", "x": "x"}, "pie"),
    ({"kind": "violin", "x": "x"}, "unknown figure kind"),
    ({"kind": "histogram", "x": "nope"}, "unknown column 'nope'"),
    ({"kind": "histogram", "x": "x", "colour": "red"}, "unknown option 'colour'"),
    ({"kind": "histogram", "x": "x", "on_fail": "drop"}, "on_fail"),
    ({"kind": "histogram", "x": "x", "bins": 0}, "bins must be"),
    ({"kind": "km", "x": "x"}, "needs x \\(time\\) and y"),
])
def test_bad_figure_input_is_one_clear_line(tmp_path, kwargs, match):
    src = parquet(tmp_path, values_frame(np.arange(50)))
    with pytest.raises(SdcError, match=match) as ei:
        sdc.figure(src, **kwargs)
    assert "\n" not in str(ei.value)
