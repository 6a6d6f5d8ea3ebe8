"""The sdc command line, run as a real subprocess: outputs, and one-line errors for bad input."""

import json
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest

SDC = str(Path(sys.executable).with_name("sdc"))


def run(*args, cwd=None):
    return subprocess.run([SDC, *args], capture_output=True, text=True, cwd=cwd, timeout=120)


@pytest.fixture
def data(tmp_path):
    df = pl.DataFrame({
        "mun": ["m1"] * 30 + ["m2"] * 25 + ["m3"] * 4,
        "reg": ["R1"] * 55 + ["R2"] * 4,
        "sex": (["F", "M"] * 30)[:59],
        "pid": list(range(59)),
        "inc": [float(i * 3 % 17 + 1) for i in range(59)],
        "name": ["x"] * 59,
    })
    path = tmp_path / "people.parquet"
    df.write_parquet(path)
    return path


def one_line_error(r, code=2):
    assert r.returncode == code, (r.returncode, r.stdout, r.stderr)
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    assert lines[0].startswith("sdc: error: ")
    assert "Traceback" not in r.stderr
    return lines[0]


def test_table_json_matches_python_api(data):
    import sdc

    r = run("table", str(data), "--rows", "mun", "--cols", "sex", "--hierarchy", "mun:reg",
            "--value", "inc", "--stat", "sum", "--unit", "pid", "--policy", "acro")
    assert r.returncode == 0, r.stderr
    j = json.loads(r.stdout)
    t = sdc.table(str(data), rows="mun", cols="sex", hierarchy={"mun": "reg"}, value="inc", stat="sum",
                  unit="pid", policy="acro")
    assert j["cells"] == t.to_json()["cells"]
    assert j["dimensions"] == ["reg", "mun", "sex"] and j["audit"]["protected"] is True


def test_formats_and_output_files(data, tmp_path):
    r = run("table", str(data), "--rows", "mun", "--format", "csv")
    assert r.returncode == 0 and r.stdout.splitlines()[0] == "mun,count"
    out = tmp_path / "t.xlsx"
    r = run("table", str(data), "--rows", "mun", "-o", str(out))
    assert r.returncode == 0 and out.stat().st_size > 0 and out.read_bytes()[:2] == b"PK"
    out = tmp_path / "t.html"
    assert run("table", str(data), "--rows", "mun", "-o", str(out)).returncode == 0
    assert "sdc-primary" in out.read_text()
    r = run("table", str(data), "--rows", "mun", "--reveal")
    cells = json.loads(r.stdout)["cells"]
    assert any(c["value"] is None and c["true_value"] == 4 for c in cells)


def test_sql_source_and_policy_file(data, tmp_path):
    pol = tmp_path / "p.toml"
    pol.write_text('name = "five"\n[threshold]\nmin_units = 3\n')
    r = run("table", f"SELECT * FROM read_parquet('{data}')", "--rows", "mun", "--policy", str(pol))
    assert r.returncode == 0, r.stderr
    j = json.loads(r.stdout)
    assert j["policy"]["name"] == "five" and j["summary"]["primary"] == 0


def test_policies_lists_numbers():
    r = run("policies")
    assert r.returncode == 0
    assert "acro" in r.stdout and "min units 10" in r.stdout and "dominance (2, 0.9)" in r.stdout
    assert "opensafely" in r.stdout and "rounding to 5" in r.stdout
    j = json.loads(run("policies", "--json").stdout)
    assert {p["name"] for p in j} >= {"acro", "opensafely"}


@pytest.mark.parametrize(
    "args, expect",
    [
        (["table", "{data}", "--rows", "nope"], "unknown column 'nope'"),
        (["table", "{tmp}/missing.parquet", "--rows", "mun"], "file not found"),
        (["table", "{data}", "--rows", "mun", "--value", "name", "--stat", "sum"], "must be numeric"),
        (["table", "{data}", "--rows", "mun", "--policy", "nope"], "unknown policy 'nope'"),
        (["table", "{data}", "--rows", "mun", "--policy", "{tmp}/bad.toml"], "not valid TOML"),
        (["table", "{data}", "--rows", "mun", "--stat", "p90", "--value", "inc"], "does not allow stat 'p90'"),
        (["table", "{data}", "--rows", "mun", "--stat", "min", "--value", "inc", "--policy", "essnet"],
         "does not allow stat 'min'"),
        (["table", "{data}", "--rows", "mun", "--hierarchy", "mun"], "CHILD:PARENT"),
        (["table", "{data}", "--rows", "sex", "--hierarchy", "sex:reg"], "'sex' is not nested in 'reg'"),
        (["table", "{data}"], "required: --rows"),
        (["table", "{data}", "--rows", "mun", "--format", "pdf"], "invalid choice"),
        (["table", "{data}", "--rows", "mun", "--format", "xlsx"], "needs -o FILE"),
        (["table", "SELECT * FROM nowhere", "--rows", "mun"], "nowhere"),
        (["table", "{data}", "--rows", "mun", "-o", "{tmp}/no/such/dir/t.json"], "No such file"),
        (["bogus"], "invalid choice"),
    ],
)
def test_bad_input_exits_with_one_line(data, tmp_path, args, expect):
    (tmp_path / "bad.toml").write_text('name = "x"\n[threshold\n')
    args = [a.format(data=data, tmp=tmp_path) for a in args]
    line = one_line_error(run(*args))
    assert expect in line


def test_figure_and_model_match_the_python_api(data, tmp_path):
    import sdc

    r = run("figure", str(data), "histogram", "--x", "inc", "--option", "bins=4", "--option", "range=[0,20]")
    assert r.returncode == 0, r.stderr
    got = json.loads(r.stdout)
    want = sdc.figure(str(data), "histogram", x="inc", bins=4, range=[0, 20]).to_json()
    assert got["cells"] == want["cells"] and got["status"] == want["status"]
    png = tmp_path / "h.png"
    r = run("figure", str(data), "bar", "--x", "mun", "--unit", "pid", "-o", str(png))
    assert r.returncode == 0, r.stderr
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert png.read_bytes() == sdc.figure(str(data), "bar", x="mun", unit="pid").png()
    r = run("model", str(data), "inc ~ C(sex)", "--format", "csv")
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines()[0].startswith("term,estimate")
    assert "C(sex)[T.M]" in r.stdout
    r = run("model", str(data), "inc ~ C(sex)", "--unit", "pid")
    assert json.loads(r.stdout)["coefficients"] == sdc.model(str(data), "inc ~ C(sex)", unit="pid").to_json()["coefficients"]


@pytest.mark.parametrize("args, expect", [
    (["figure", "DATA", "scatter", "--x", "inc", "--y", "pid"], "raw scatter plot is refused"),
    (["figure", "DATA", "histogram", "--x", "inc", "--format", "png"], "needs -o FILE"),
    (["figure", "DATA", "histogram", "--x", "inc", "--option", "bins"], "expected KEY=VALUE"),
    (["figure", "DATA", "histogram", "--x", "inc", "--option", "colour=red"], "unknown option 'colour'"),
    (["figure", "DATA", "histogram", "--x", "nope"], "nope"),
    (["model", "DATA", "nope ~ sex"], "outcome of 'nope ~ sex'"),
    (["model", "DATA", "inc ~ C(sex)", "--format", "csv", "--reveal"], "--reveal only applies"),
])
def test_figure_and_model_bad_input(data, args, expect):
    line = one_line_error(run(*[str(data) if a == "DATA" else a for a in args]))
    assert expect in line
