"""``ingest add``: real files in, real Parquet out, in a temporary store."""

from __future__ import annotations

import json
import os
from pathlib import Path

import polars as pl
import pyarrow.parquet as pq
import pytest

from data_ingest import pipeline
from data_ingest.errors import IngestError
from data_ingest.keys import load_key
from data_ingest.metadata import read_footer
from data_ingest.pipeline import add
from data_ingest.rules import kind_key, pseudonym
from data_ingest.store import Store

from ingest_helpers import PERSON_SPEC, write


def visible(store: Path) -> list[str]:
    """Everything a reader could see: dataset versions with files, outside the staging area."""
    out = []
    for root, _dirs, files in os.walk(store):
        if ".staging" in Path(root).parts:
            continue
        out += [str(Path(root, f).relative_to(store)) for f in files]
    return sorted(out)


def staging_empty(store: Path) -> bool:
    s = store / ".staging"
    return not s.exists() or not any(s.iterdir())


def test_add_pseudonymises_generalises_and_describes(env, people):
    store, key = env
    src, spec = people
    res = add(src, spec, store, key)
    assert (res.version, res.reused, res.rows_in, res.rows_out) == ("v1", False, 4, 4)
    assert res.dropped_unnamed == ["name"]
    assert res.status["person_id"] == {"valid": 2, "invalid": 1, "missing": 1}
    assert res.units == 2

    df = pl.read_parquet(res.path / "part-0.parquet")
    assert df.columns == ["person_id", "person_id_status", "birth_year", "sex", "postcode", "income", "_rid"]
    k = kind_key(load_key(key), "bsn")
    assert df["person_id"].to_list() == [pseudonym(k, "111222333"), pseudonym(k, "123456782"), None, None]
    assert df["person_id_status"].to_list() == ["valid", "valid", "missing", "invalid"]
    assert df["birth_year"].to_list() == [1970, 1980, 1990, 2001]
    assert df["postcode"].to_list() == ["1234", "2345", "3456", "4567"]
    assert df["income"].to_list() == [50000.0, 70000.0, 100000.0, None]  # top-coded
    assert "name" not in df.columns

    md = json.loads((res.path / "metadata.json").read_text())
    assert md["identifier"] == "people@v1" and md["unit_of_observation"] == "person"
    assert md["unit_id"] == {"column": "person_id", "kind": "bsn", "pseudonymised": True}
    assert md["number_of_records"] == 4 and md["number_of_units"] == 2
    assert md["temporal_coverage"] == {"start": "1970-05-01", "end": "2001-03-03"}
    assert md["provenance"]["key_id"].startswith("sha256:")
    assert md["deidentification"]["removed_unnamed_columns"] == ["name"]
    sex = next(v for v in md["variables"] if v["name"] == "sex")
    assert sex["value_labels"] == {"M": "male", "V": "female"}
    foot = read_footer(res.path / "part-0.parquet")
    assert foot["identifier"] == "people@v1" and foot["variables"] == md["variables"]
    assert pq.read_schema(res.path / "part-0.parquet").field("sex").metadata[b"label"] == b"sex"
    # linkage keys (full birth date, 6-character postcode) are kept aside, for ingest link only
    keys = pl.read_parquet(res.path / "_linkage" / "keys-0.parquet")
    assert keys["postcode"].to_list()[1] == "2345CD" and keys["sex"].to_list()[:2] == ["male", "female"]
    # read-only and immutable
    assert oct((res.path / "part-0.parquet").stat().st_mode & 0o777) == "0o444"
    assert oct(res.path.stat().st_mode & 0o777) == "0o555"


def test_the_key_is_nowhere_in_the_store(env, people):
    store, key = env
    add(people[0], people[1], store, key)
    secret = load_key(key).encode()
    for root, _d, files in os.walk(store):
        for f in files:
            assert secret not in Path(root, f).read_bytes(), f


def test_idempotent_and_new_version_on_change(env, people, tmp_path):
    store, key = env
    src, spec = people
    first = add(src, spec, store, key)
    before = visible(store)
    again = add(src, spec, store, key)
    assert again.reused and again.version == "v1" and visible(store) == before
    changed = write(tmp_path / "people2.csv", src.read_text() + "123456782,X,1950-01-01,V,9999ZZ,1\n")
    assert add(changed, spec, store, key).version == "v2"
    assert Store(store).versions("people") == ["v1", "v2"]
    assert (first.path / "part-0.parquet").exists()  # the old version is untouched


def test_objectors_never_reach_the_store(env, people, tmp_path):
    store, key = env
    src, spec = people
    objections = write(tmp_path / "objections.txt", "bsn\n123456782\n")
    res = add(src, spec, store, key, objections=objections)
    assert res.rows_in == 4 and res.rows_out == 3 and res.objectors_removed == 1
    df = pl.read_parquet(res.path / "part-0.parquet")
    gone = pseudonym(kind_key(load_key(key), "bsn"), "123456782")
    assert gone not in df["person_id"].to_list()
    assert 1980 not in df["birth_year"].to_list()
    keys = pl.read_parquet(res.path / "_linkage" / "keys-0.parquet")
    assert gone not in keys["pid"].to_list() and keys.height == 3
    # the register holds pseudonyms only, and applies to later sources too
    register = pl.read_parquet(store / "objections" / "bsn.parquet")
    assert register["pseudonym"].to_list() == [gone]
    assert b"123456782" not in (store / "objections" / "bsn.parquet").read_bytes()
    other = write(tmp_path / "other.csv", "bsn,birth,sex,postcode,income\n123456782,1980-01-31,V,2345CD,1\n"
                  "111222333,1970-05-01,M,1234AB,2\n")
    spec2 = write(tmp_path / "other.toml", PERSON_SPEC.replace('name = "people"', 'name = "other"'))
    assert add(other, spec2, store, key).rows_out == 1


def test_parquet_source_with_integer_bsn(env, tmp_path):
    store, key = env
    src = tmp_path / "inc.parquet"
    pl.DataFrame({"bsn": [12345672, 111222333, 5], "amount": [1.5, 2.5, 3.5]}).write_parquet(src)
    spec = write(tmp_path / "inc.toml", """
        [dataset]
        name = "inc"
        unit = "person"
        unit_id = "pid"
        [columns.bsn]
        action = "pseudonymise"
        kind = "bsn"
        as = "pid"
        [columns.amount]
        action = "keep"
        """)
    res = add(src, spec, store, key)
    assert res.status["pid"] == {"valid": 2, "invalid": 1, "missing": 0}
    df = pl.read_parquet(res.path / "part-0.parquet")
    assert df["pid"][0] == pseudonym(kind_key(load_key(key), "bsn"), "012345672")


def test_spss_source_keeps_its_labels(env, tmp_path):
    pd = pytest.importorskip("pandas")
    pyreadstat = pytest.importorskip("pyreadstat")
    store, key = env
    src = tmp_path / "s.sav"
    pyreadstat.write_sav(pd.DataFrame({"bsn": ["111222333", ""], "sex": [1.0, 2.0]}), str(src),
                         column_labels={"sex": "Geslacht"}, variable_value_labels={"sex": {1: "man", 2: "vrouw"}})
    spec = write(tmp_path / "s.toml", """
        [dataset]
        name = "s"
        unit = "person"
        unit_id = "pid"
        [columns.bsn]
        action = "pseudonymise"
        kind = "bsn"
        as = "pid"
        [columns.sex]
        action = "keep"
        type = "str"
        codes = ["1", "2"]
        """)
    res = add(src, spec, store, key)
    df = pl.read_parquet(res.path / "part-0.parquet")
    assert df["sex"].to_list() == ["1", "2"] and df["pid_status"].to_list() == ["valid", "missing"]
    md = json.loads((res.path / "metadata.json").read_text())
    sex = next(v for v in md["variables"] if v["name"] == "sex")
    assert sex["title"] == "Geslacht" and sex["value_labels"] == {"1": "man", "2": "vrouw"}


# --- bad input: one clear message naming file, row and column; nothing written ----------------


BAD = [
    ("wrong delimiter", "people.csv", PERSON_SPEC,
     "bsn;name;birth;sex;postcode;income\n111222333;Jan;1970-05-01;M;1234AB;1\n",
     ["missing column", "';'-delimited", "people.csv"]),
    ("value outside its codes", "people.csv", PERSON_SPEC,
     "bsn,birth,sex,postcode,income\n111222333,1970-05-01,M,1234AB,1\n123456782,1980-01-31,X,2345CD,2\n",
     ["row 2 (line 3)", "column 'sex'", "'X' is not one of the allowed codes"]),
    ("not a date", "people.csv", PERSON_SPEC,
     "bsn,birth,sex,postcode,income\n111222333,01-05-1970,M,1234AB,1\n",
     ["row 1 (line 2)", "column 'birth'", "not a date"]),
    ("not a number", "people.csv", PERSON_SPEC,
     "bsn,birth,sex,postcode,income\n111222333,1970-05-01,M,1234AB,1\n111222333,1970-05-01,M,1234AB,lots\n",
     ["row 2", "column 'income'", "'lots' is not a float"]),
    ("bad postcode", "people.csv", PERSON_SPEC,
     "bsn,birth,sex,postcode,income\n111222333,1970-05-01,M,12AB,1\n",
     ["row 1", "column 'postcode'", "6-character postcode"]),
    ("missing column", "people.csv", PERSON_SPEC,
     "bsn,birth,sex,income\n111222333,1970-05-01,M,1\n", ["missing column(s) named in the spec: postcode"]),
    ("empty file", "people.csv", PERSON_SPEC, "", ["the file is empty"]),
    ("header only", "people.csv", PERSON_SPEC, "bsn,birth,sex,postcode,income\n", ["no data rows"]),
    ("required value missing", "people.csv", PERSON_SPEC,
     "bsn,birth,sex,postcode,income\n111222333,1970-05-01,,1234AB,1\n", ["row 1", "column 'sex'", "required"]),
    ("ragged row", "people.csv", PERSON_SPEC,
     "bsn,birth,sex,postcode,income\n111222333,1970-05-01,M,1234AB,1\n1,2,3,4,5,6,7\n", ["row 2", "fields"]),
    ("parquet named .csv", "people.csv", PERSON_SPEC, None, ["is not a CSV text file", "parquet"]),
    ("csv named .parquet", "people.parquet", PERSON_SPEC.replace("[columns.bsn]", '[source]\nformat = "parquet"\n[columns.bsn]'),
     "bsn,birth\n1,2\n", ["is not a parquet file"]),
    ("spss named .sav that is text", "people.sav", PERSON_SPEC, "just text\n", ["is not a spss file"]),
]


@pytest.mark.parametrize("case, name, spec_text, content, expect", BAD, ids=[b[0] for b in BAD])
def test_bad_input_stops_with_one_line_and_writes_nothing(env, tmp_path, case, name, spec_text, content, expect):
    store, key = env
    path = tmp_path / name
    if content is None:
        pl.DataFrame({"a": [1]}).write_parquet(path)
    else:
        path.write_text(content)
    spec = write(tmp_path / "spec.toml", spec_text)
    with pytest.raises(IngestError) as e:
        add(path, spec, store, key)
    msg = e.value.one_line()
    assert "\n" not in msg
    for part in expect:
        assert part in msg, (case, msg)
    assert Store(store).datasets() == [] and not (store / "datasets" / "people").exists() or \
        Store(store).versions("people") == []
    assert staging_empty(store)


def test_bad_encoding_names_row_line_and_column(env, tmp_path):
    store, key = env
    path = tmp_path / "people.csv"
    path.write_bytes(b"bsn,birth,sex,postcode,income\n111222333,1970-05-01,M,1234AB,1\n"
                     b"123456782,1980-01-31,V,2345CD,\xe9\xe9n\n")
    spec = write(tmp_path / "spec.toml", PERSON_SPEC)
    with pytest.raises(IngestError) as e:
        add(path, spec, store, key)
    msg = e.value.one_line()
    assert "row 2 (line 3)" in msg and "column 'income'" in msg and "UTF-8" in msg
    # and with the right encoding declared it is read (then fails on the value, as it should)
    spec2 = write(tmp_path / "spec2.toml", PERSON_SPEC.replace("[columns.bsn]", '[source]\nencoding = "latin-1"\n[columns.bsn]'))
    with pytest.raises(IngestError, match="'één' is not a float"):
        add(path, spec2, store, key)
    assert Store(store).versions("people") == [] and staging_empty(store)


def test_spec_errors_name_the_spec_and_column(env, people, tmp_path):
    store, key = env
    bad = write(tmp_path / "bad.toml", PERSON_SPEC.replace('to = "pc4"', 'to = "pc3"'))
    with pytest.raises(IngestError) as e:
        add(people[0], bad, store, key)
    assert "bad.toml" in str(e.value) and "column 'postcode'" in str(e.value) and "generalise needs to" in str(e.value)


def test_interrupted_run_leaves_nothing(env, tmp_path, monkeypatch):
    """A failure while writing (here: the writer raises on the second part) leaves no version,
    no claimed folder and no staging folder behind; the next run succeeds as v1."""
    store, key = env
    rows = "\n".join(f"111222333,1970-05-01,M,1234AB,{i}" for i in range(10))
    src = write(tmp_path / "people.csv", "bsn,birth,sex,postcode,income\n" + rows + "\n")
    spec = write(tmp_path / "spec.toml", PERSON_SPEC)
    real = pipeline._write_part
    calls = []

    def failing(*a, **k):
        calls.append(1)
        if len(calls) == 2:
            raise OSError("disk full")
        return real(*a, **k)

    monkeypatch.setattr(pipeline, "_write_part", failing)
    with pytest.raises(OSError):
        add(src, spec, store, key, slice_rows=3)
    assert len(calls) >= 2  # two slices are written at a time: the other one may have been written too
    assert Store(store).versions("people") == []
    assert not (store / "datasets" / "people" / "v1").exists()
    assert staging_empty(store)
    monkeypatch.setattr(pipeline, "_write_part", real)
    res = add(src, spec, store, key, slice_rows=3)
    assert res.version == "v1" and res.rows_out == 10
    assert sorted(p.name for p in res.path.glob("part-*.parquet")) == [f"part-{i}.parquet" for i in range(4)]
    assert pl.read_parquet(res.path / "_linkage" / "*.parquet").height == 10


def test_bad_value_in_a_later_slice_gives_its_row(env, tmp_path):
    store, key = env
    rows = [f"111222333,1970-05-01,M,1234AB,{i}" for i in range(10)]
    rows[7] = "111222333,1970-05-01,Q,1234AB,7"
    src = write(tmp_path / "people.csv", "bsn,birth,sex,postcode,income\n" + "\n".join(rows) + "\n")
    with pytest.raises(IngestError) as e:
        add(src, write(tmp_path / "s.toml", PERSON_SPEC), store, key, slice_rows=3)
    assert "row 8 (line 9)" in str(e.value) and "'Q'" in str(e.value)
    assert Store(store).versions("people") == [] and staging_empty(store)


def test_on_invalid_null_counts_instead_of_stopping(env, tmp_path):
    store, key = env
    src = write(tmp_path / "people.csv", "bsn,birth,sex,postcode,income\n111222333,1970-05-01,M,12AB,1\n")
    spec = write(tmp_path / "s.toml", PERSON_SPEC.replace('to = "pc4"', 'to = "pc4"\non_invalid = "null"'))
    res = add(src, spec, store, key)
    assert res.nulled == {"postcode": 1}
    assert pl.read_parquet(res.path / "part-0.parquet")["postcode"].to_list() == [None]


def test_publish_replaces_an_earlier_version_read_only(env, people, tmp_path):
    from data_ingest.publish import publish

    store, key = env
    src, spec = people
    add(src, spec, store, key)
    (store / "projects" / "p1").mkdir(parents=True)
    write(store / "projects" / "p1" / "project.toml", 'name = "p1"\ndatasets = ["people"]\n')
    first = publish(store, ["people"], "p1", key)[0]
    assert (first.version, first.records, first.units) == ("v1", 4, 2)
    assert publish(store, ["people@v1"], "p1", key)[0].reused
    changed = write(tmp_path / "people2.csv", src.read_text() + "123456782,X,1950-01-01,V,9999ZZ,1\n")
    add(changed, spec, store, key)
    second = publish(store, ["people"], "p1", key)[0]
    assert (second.version, second.reused, second.records) == ("v2", False, 5)
    d = store / "projects" / "p1" / "data" / "people"
    assert sorted(p.name for p in d.iterdir()) == ["metadata.json", "part-0.parquet"]
    assert json.loads((d / "metadata.json").read_text())["publication"]["dataset"] == "people@v2"
    assert pl.read_parquet(d / "part-0.parquet").height == 5
    assert oct(d.stat().st_mode & 0o777) == "0o555"
    assert not any((store / ".staging").iterdir())


def test_stata_source_with_bands_empty_and_year_month(env, tmp_path):
    pd = pytest.importorskip("pandas")
    pyreadstat = pytest.importorskip("pyreadstat")
    store, key = env
    src = tmp_path / "s.dta"
    pyreadstat.write_dta(pd.DataFrame({
        "hh": ["A1", "B2", "C3"], "age": [4.0, 40.0, 81.0], "notes": ["x", "y", "z"],
        "visit": pd.to_datetime(["2021-03-04", "2022-12-31", "2020-01-01"]),
    }), str(src))
    spec = write(tmp_path / "s.toml", """
        [dataset]
        name = "hh"
        unit = "household"
        unit_id = "hh_id"
        temporal = "visit"
        [columns.hh]
        action = "pseudonymise"
        kind = "id"
        as = "hh_id"
        [columns.age]
        action = "generalise"
        to = "bands"
        bands = [0, 18, 65, 80]
        [columns.notes]
        action = "empty"
        [columns.visit]
        action = "generalise"
        to = "year-month"
        """)
    res = add(src, spec, store, key)
    df = pl.read_parquet(res.path / "part-0.parquet")
    assert df["age"].to_list() == ["0-17", "18-64", "80+"]
    assert df["notes"].to_list() == [None, None, None]
    assert df["visit"].to_list() == ["2021-03", "2022-12", "2020-01"]
    assert df["hh_id_status"].to_list() == ["valid"] * 3 and df["hh_id"].n_unique() == 3
    md = json.loads((res.path / "metadata.json").read_text())
    assert md["unit_of_observation"] == "household" and md["unit_id"]["kind"] == "id"
    assert md["temporal_coverage"] == {"start": "2020-01-01", "end": "2022-12-31"}
