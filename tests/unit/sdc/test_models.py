"""sdc.model and sdc.summary: real DuckDB over real Parquet; checks, statsmodels agreement, spec."""

import duckdb
import numpy as np
import polars as pl
import pytest

import sdc
from sdc.errors import SdcError


def parquet(tmp_path, df: pl.DataFrame, name="d.parquet") -> str:
    path = tmp_path / name
    df.write_parquet(path)
    return str(path)


def frame(n=400, seed=0):
    rng = np.random.default_rng(seed)
    g = rng.choice(["a", "b", "c"], n)
    x = rng.normal(size=n)
    y = 1 + 2 * x + 0.5 * (g == "b") + rng.normal(size=n)
    return pl.DataFrame({"pid": np.arange(n), "x": x, "g": g, "y": y, "yb": (y > 1.2).astype(np.int64),
                         "cnt": rng.poisson(np.exp(0.3 * x))})


def design(df, cols):
    X = np.column_stack([np.ones(df.height)] + [df[c].to_numpy() for c in cols])
    return X


# ---------------------------------------------------------------------------- residual df
@pytest.mark.parametrize("n, ok", [(12, True), (11, False)])
def test_residual_df_boundary(tmp_path, n, ok):
    # y ~ x: 2 coefficients, df_resid = n - 2; the policy needs 10
    df = frame(n, seed=n).select("pid", "x", "y")
    m = sdc.model(parquet(tmp_path, df), "y ~ x", unit="pid",
                  policy={"name": "t", "threshold": {"min_units": 1}, "models": {"min_residual_df": 10}})
    assert m.df_resid == n - 2 and m.ok is ok
    if not ok:
        assert [f["rule"] for f in m.failed] == ["residual_df"]
        assert m.files()["coefficients.csv"].decode().count("\n") == 1  # header only
        assert m.to_json()["coefficients"] == [] and m.to_json()["status"] == "refused"


def test_acro_policy_uses_acro_dof_threshold():
    import acro
    import yaml
    from pathlib import Path

    cfg = yaml.safe_load((Path(acro.__file__).parent / "default.yaml").read_text())
    assert sdc.load_policy("acro").min_residual_df == cfg["safe_dof_threshold"]


# ---------------------------------------------------------------------------- levels
def test_single_unit_categorical_level_refused(tmp_path):
    df = frame(300)
    df = df.with_columns(pl.when(pl.col("pid") == 7).then(pl.lit("z")).otherwise(pl.col("g")).alias("g"))
    m = sdc.model(parquet(tmp_path, df), "y ~ x + C(g)", unit="pid")
    assert not m.ok
    lv = [f for f in m.failed if f["rule"] == "level"]
    assert lv and "g=z" in lv[0]["reason"] and "fewer than 10 units" in lv[0]["reason"]
    assert m.to_json()["coefficients"] == []


@pytest.mark.parametrize("k, ok", [(10, True), (9, False)])
def test_level_threshold_boundary_counts_units(tmp_path, k, ok):
    df = frame(300)
    # level z has k units but 3 rows each: rows would pass, units decide
    z = pl.DataFrame({"pid": np.repeat(np.arange(1000, 1000 + k), 3), "x": np.linspace(-1, 1, 3 * k),
                      "g": ["z"] * (3 * k), "y": np.linspace(0, 2, 3 * k)})
    df = pl.concat([df.select("pid", "x", "g", "y"), z])
    m = sdc.model(parquet(tmp_path, df), "y ~ x + g", unit="pid")
    assert m.ok is ok, m.failed


def test_interaction_cells_need_units(tmp_path):
    df = frame(400).with_columns(pl.when(pl.col("x") > 0).then(pl.lit("hi")).otherwise(pl.lit("lo")).alias("h"))
    # make the cell (g=c, h=hi) tiny
    df = df.filter(~((pl.col("g") == "c") & (pl.col("h") == "hi")) | (pl.col("pid") < 20))
    m = sdc.model(parquet(tmp_path, df), "y ~ C(g):C(h)", unit="pid")
    n_cell = df.filter((pl.col("g") == "c") & (pl.col("h") == "hi")).height
    assert n_cell < 10
    assert not m.ok and any("g=c/h=hi" in f["reason"] for f in m.failed if f["rule"] == "level")


def test_saturated_model_refused(tmp_path):
    df = pl.DataFrame({"pid": range(5), "y": [1.0, 2.0, 4.0, 3.0, 5.0], "g": ["a", "b", "c", "d", "e"]})
    m = sdc.model(parquet(tmp_path, df), "y ~ C(g)", policy={"name": "t", "threshold": {"min_units": 1}})
    assert not m.ok and "saturated" in [f["rule"] for f in m.failed]


def test_dummy_for_a_single_unit_refused(tmp_path):
    df = frame(300).with_columns((pl.col("pid") == 5).cast(pl.Int64).alias("d"))
    m = sdc.model(parquet(tmp_path, df), "y ~ x + d", unit="pid")
    assert not m.ok and [f["rule"] for f in m.failed] == ["single_unit"]


# ---------------------------------------------------------------------------- fits match statsmodels
@pytest.mark.parametrize("family", ["ols", "logit", "probit", "poisson"])
def test_fits_match_statsmodels(tmp_path, family):
    import statsmodels.api as sm

    df = frame(500, seed=3)
    outcome = {"ols": "y", "logit": "yb", "probit": "yb", "poisson": "cnt"}[family]
    m = sdc.model(parquet(tmp_path, df), f"{outcome} ~ x", family=family, unit="pid")
    assert m.ok, m.failed
    X = design(df, ["x"])
    y = df[outcome].to_numpy().astype(float)
    cls = {"ols": sm.OLS, "logit": sm.Logit, "probit": sm.Probit, "poisson": sm.Poisson}[family]
    res = cls(y, X).fit() if family == "ols" else cls(y, X).fit(disp=0)
    est = [c["estimate"] for c in m.coefficients]
    se = [c["se"] for c in m.coefficients]
    np.testing.assert_allclose(est, res.params, rtol=1e-6)
    np.testing.assert_allclose(se, res.bse, rtol=1e-6)
    assert m.df_resid == res.df_resid and m.n == 500
    j = m.to_json()
    assert j["coefficients"][1]["estimate"] == float(f"{res.params[1]:.6g}")  # acro: 6 significant digits
    assert j["statistic"] == ("t" if family == "ols" else "z")


def test_policy_rounding_of_released_numbers(tmp_path):
    df = frame(300)
    m = sdc.model(parquet(tmp_path, df), "y ~ x", policy="essnet")
    est = m.coefficients[1]["estimate"]
    assert m.to_json()["coefficients"][1]["estimate"] == float(f"{est:.4g}")
    assert m.to_json()["significant_digits"] == 4


def test_model_spec_round_trip_identical_bytes(tmp_path):
    path = parquet(tmp_path, frame(300))
    con = duckdb.connect()
    con.execute(f"CREATE VIEW people AS SELECT * FROM read_parquet('{path}')")
    m = sdc.model("SELECT * FROM people", "y ~ x + C(g)", unit="pid", con=con)
    assert m.spec["kind"] == "model" and m.spec["source"] == {"sql": "SELECT * FROM people"}
    m2 = sdc.model_from_spec(m.spec, con)
    assert m.files() == m2.files()
    m3 = sdc.model_from_spec(m.spec, con, policy="essnet")
    assert m3.policy.name == "essnet"
    assert "<table" in m.to_html()


@pytest.mark.parametrize("formula, family, match", [
    ("y x", "ols", "formula must look like"),
    ("y ~ nope", "ols", "unknown column 'nope'"),
    ("y ~ x", "tobit", "unknown family"),
    ("y ~ x", "logit", "0/1 outcome"),
])
def test_bad_model_input_is_one_clear_line(tmp_path, formula, family, match):
    with pytest.raises(SdcError, match=match) as ei:
        sdc.model(parquet(tmp_path, frame(100)), formula, family=family)
    assert "\n" not in str(ei.value)


# ---------------------------------------------------------------------------- summary statistics
def test_sd_fails_only_its_own_cell(tmp_path):
    # ACRO 1.0.2 blanks the whole table when one std cell fails its DoF check
    rng = np.random.default_rng(1)
    g = ["a"] * 50 + ["b"] * 10 + ["c"] * 30
    df = pl.DataFrame({"pid": range(90), "g": g, "v": rng.normal(size=90) + 5})
    s = sdc.summary(parquet(tmp_path, df), "v", by="g", stats=["sd"], unit="pid")
    st = {c.key["g"]: c.status for c in s.cells}
    assert st == {"Total": "safe", "a": "safe", "b": "primary", "c": "safe"}  # b: 9 df < 10
    assert s.cell("sd", g="b").rules == ("dof",)


@pytest.mark.parametrize("n, ok", [(40, True), (39, False)])
def test_percentile_needs_units_each_side(tmp_path, n, ok):
    pol = {"name": "p", "threshold": {"min_units": 10},
           "statistics": {"allowed": ["count", "percentile"], "percentile_min_units_each_side": 10}}
    df = pl.DataFrame({"pid": range(n), "v": np.arange(n, dtype=float)})
    s = sdc.summary(parquet(tmp_path, df), "v", stats=["p25", "median"], policy=pol)
    assert (s.cell("p25").status == "safe") is ok and s.cell("median").status == "safe"


def test_min_max_as_mean_of_k_or_refused(tmp_path):
    df = pl.DataFrame({"pid": range(50), "v": np.arange(50, dtype=float)})
    src = parquet(tmp_path, df)
    s = sdc.summary(src, "v", stats=["min", "max"], policy="acro")  # acro.toml: mean of the 5 most extreme
    assert s.cell("min").value == pytest.approx(2.0) and s.cell("max").value == pytest.approx(47.0)
    r = sdc.summary(src, "v", stats=["min", "max"], policy="opensafely")
    assert r.cell("min").status == "primary" and r.to_json()["cells"][0]["value"] is None
    assert "refuses" in r.to_json()["failed"][0]["reason"]
