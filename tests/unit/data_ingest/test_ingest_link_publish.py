"""Linkage and publication, on the synthetic demo (small): real Splink, DuckDB and Parquet."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import duckdb
import polars as pl
import pytest

from data_ingest import demo
from data_ingest.errors import IngestError
from data_ingest.keys import load_key
from data_ingest.metadata import read_footer
from data_ingest.publish import publish
from data_ingest.rules import kind_key, normalise_bsn, project_key, pseudonym
from data_ingest.store import Store


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("demo")
    store, key = root / "store", root / "keys" / "master.key"
    summary = demo.run_demo(store, key, root / "sources", persons=2000, seed=11)
    return store, key, root / "sources", summary


def project_view(store: Path, project: str) -> duckdb.DuckDBPyConnection:
    """What a workspace sees: one DuckDB view per /data/<dataset>/*.parquet."""
    con = duckdb.connect()
    for d in sorted((store / "projects" / project / "data").iterdir()):
        con.execute(f"CREATE VIEW {d.name} AS SELECT * FROM read_parquet('{d}/*.parquet')")
    return con


def test_demo_projects_and_files(demo_run):
    store, _key, _src, s = demo_run
    for name, conf in demo.PROJECTS.items():
        text = (store / "projects" / name / "project.toml").read_text()
        assert f'name = "{name}"' in text and 'policy = "acro"' in text
        published = sorted(p.name for p in (store / "projects" / name / "data").iterdir())
        assert published == sorted(conf["datasets"])
    assert 'members = ["researcher"]' in (store / "projects" / "covid" / "project.toml").read_text()
    assert 'members = ["researcher", "researcher2"]' in (store / "projects" / "income" / "project.toml").read_text()
    assert {r.dataset for r in s["added"]} == set(demo.SOURCES)


def test_published_files_are_read_only(demo_run):
    store = demo_run[0]
    data = store / "projects" / "covid" / "data"
    for root, dirs, files in os.walk(data):
        for d in dirs:
            assert stat.S_IMODE(Path(root, d).stat().st_mode) == 0o555
        for f in files:
            assert stat.S_IMODE(Path(root, f).stat().st_mode) == 0o444
    assert not any(p.name.startswith("_") for p in data.rglob("*"))  # no linkage keys, no record ids


def test_project_pseudonyms_differ_and_cannot_be_joined(demo_run):
    store, key, _src, _s = demo_run
    covid = pl.read_parquet(store / "projects" / "covid" / "data" / "persons" / "*.parquet")
    income = pl.read_parquet(store / "projects" / "income" / "data" / "persons" / "*.parquet")
    store_ids = pl.read_parquet(Store(store).data_files("persons", "v1"))
    a, b, c = (set(x["person_id"].drop_nulls()) for x in (covid, income, store_ids))
    assert len(a) == len(b) == len(c) > 1500
    assert not (a & b) and not (a & c) and not (b & c)
    # but the same person gets the same pseudonym within a project: a join works there
    con = project_view(store, "covid")
    linked = con.sql("SELECT count(*) FROM vaccinations v JOIN persons p USING (person_id)").fetchall()[0][0]
    assert linked > 0.9 * con.sql("SELECT count(*) FROM vaccinations WHERE person_id IS NOT NULL").fetchall()[0][0]
    # and the project pseudonym is HMAC(project key, store pseudonym)
    master = load_key(key)
    sp = store_ids.filter(pl.col("person_id").is_not_null())["person_id"][0]
    assert pseudonym(project_key(master, "covid"), sp) in a


def test_objectors_are_absent_everywhere(demo_run):
    store, key, src, _s = demo_run
    master = load_key(key)
    objectors = [normalise_bsn(x) for x in (src / "objections.txt").read_text().split()[1:]]
    assert len(objectors) == 12
    store_p = {pseudonym(kind_key(master, "bsn"), b) for b in objectors}
    for name in demo.SOURCES:
        ids = set(pl.read_parquet(Store(store).data_files(name, "v1"))["person_id"].drop_nulls())
        assert not ids & store_p, name
    for project in demo.PROJECTS:
        proj_p = {pseudonym(project_key(master, project), p) for p in store_p}
        for d in (store / "projects" / project / "data").iterdir():
            ids = set(pl.read_parquet(d / "*.parquet")["person_id"].drop_nulls())
            assert ids and not ids & proj_p, d
    # the laboratory's tests (no BSN) of objectors are found by birth date, sex and postcode
    people = pl.read_csv(src / "persons.csv", infer_schema=False).filter(pl.col("bsn").is_in(objectors))
    tests = pl.read_csv(src / "covid_tests.csv", infer_schema=False)
    exact = tests.join(people, on=["geboortedatum", "geslacht", "postcode"]).height
    md = Store(store).metadata("covid_tests", "v1")
    assert exact > 0 and md["provenance"]["objector_records_removed_by_quasi_identifiers"] == exact
    assert md["number_of_records"] == tests.height - exact
    # and their raw BSNs are in no file of the store
    blobs = b"".join(p.read_bytes() for p in store.rglob("*") if p.is_file())
    assert not any(b.encode() in blobs for b in objectors)


def test_linkage_report(demo_run):
    store, _key, _src, s = demo_run
    r = s["link"].report
    sources = {x["dataset"].split("@")[0]: x for x in r["sources"]}
    assert sources["persons"]["spine"] and sources["persons"]["invalid"] > 0
    assert sources["covid_tests"]["missing"] == sources["covid_tests"]["records"]  # no BSN at all
    pairs = {(p["a"], p["b"], p["method"].split()[0]): p for p in r["pairs"]}
    assert pairs[("income", "persons", "deterministic")]["pct_records_a_linked"] > 90
    prob = {p["dataset"].split("@")[0]: p for p in r["probabilistic"]}
    assert prob["covid_tests"]["linked"] > 0.8 * prob["covid_tests"]["records_without_valid_id"]
    assert 0 <= prob["covid_tests"]["records_with_tied_best_candidates_not_linked"] \
        <= prob["covid_tests"]["records_with_several_candidates_above_threshold"]
    assert not any((store / ".staging").iterdir())  # the spill folder and the staged run are gone
    # sex's m is fixed (the demo never records the other sex: EM would learn m = 0 and veto links)
    sex = {lvl["level"]: lvl["m"] for lvl in prob["covid_tests"]["m_u"]["sex"]}
    assert sex == {"exact": 0.98, "else": 0.02}
    ev = prob["admissions"]["evaluation"]
    assert ev["test_records"] > 100 and ev["precision"] >= 0.95 and ev["recall"] >= 0.8
    bias = {b["dataset"]: b for b in r["bias"]}
    assert set(bias["covid_tests"]["by"]) == {"age_band", "sex", "region (first postcode digit)"}
    dup = {d["dataset"]: d for d in r["duplicates"]}
    assert dup["vaccinations"]["units_with_several_records"] > 0 and dup["persons"]["units_with_several_records"] == 0
    assert (s["link"].path / "report.md").read_text().startswith("# Linkage report")
    # published: probabilistic links carry the spine's pseudonym and their status
    con = project_view(store, "covid")
    n = con.sql("SELECT count(*) FROM covid_tests t JOIN persons p USING (person_id) "
                "WHERE t.person_id_status = 'probabilistic'").fetchall()[0][0]
    assert n == prob["covid_tests"]["linked"]


def test_metadata_beside_and_in_the_footer(demo_run):
    store = demo_run[0]
    d = store / "projects" / "covid" / "data" / "admissions"
    md = json.loads((d / "metadata.json").read_text())
    foot = read_footer(d / "part-0.parquet")
    assert foot == md
    assert md["unit_id"]["column"] == "person_id" and md["unit_of_observation"] == "person"
    assert md["publication"]["project"] == "covid" and md["provenance"]["key_id"].startswith("sha256:")
    diag = next(v for v in md["variables"] if v["name"] == "diagnosis")
    assert diag["value_labels"]["U07.1"].startswith("COVID-19")
    assert md["number_of_records"] == pl.read_parquet(d / "*.parquet").height


def test_rerunning_the_demo_changes_nothing(demo_run):
    store, key, src, s = demo_run
    before = {p: p.stat().st_mtime_ns for p in store.rglob("*") if p.is_file()}
    again = demo.run_demo(store, key, src, persons=2000, seed=11)
    assert all(r.reused for r in again["added"]) and again["link"].reused
    assert all(r.reused for r in again["published"])
    after = {p: p.stat().st_mtime_ns for p in store.rglob("*") if p.is_file()}
    assert after == before


def test_publish_refuses_unknown_project_and_unlisted_dataset(demo_run):
    store, key, _src, _s = demo_run
    with pytest.raises(IngestError, match="does not exist"):
        publish(store, ["persons"], "nope", key)
    with pytest.raises(IngestError, match="does not list dataset 'income'"):
        publish(store, ["income"], "covid", key)
    with pytest.raises(IngestError, match="no version v9"):
        publish(store, ["persons@v9"], "covid", key)
    assert not (store / "projects" / "covid" / "data" / "income").exists()


def test_birth_date_distance_guard_keeps_every_pair_one_edit_apart():
    """linkage puts a cheap test (two of year, month, day equal) before the birth dates'
    Damerau-Levenshtein distance: it must hold for every pair of dates one edit apart, so the
    comparison level of every pair is the same as with the distance alone."""
    from datetime import date, timedelta

    from data_ingest.linkage import _TWO_OF_YMD_EQUAL

    base = [date(1, 1, 1), date(5, 3, 1), date(999, 12, 31), date(1000, 1, 10), date(1900, 10, 1),
            date(1950, 11, 30), date(1969, 7, 21), date(2000, 2, 29), date(2012, 12, 21), date(9999, 12, 31)]
    base += [date(1920, 1, 1) + timedelta(days=d) for d in range(0, 36500, 997)]
    pairs = []
    for d in base:
        s = d.isoformat()
        edits = {s[:i] + s[i + 1] + s[i] + s[i + 2:] for i in range(len(s) - 1)}  # transpositions
        for i in range(len(s) + 1):
            edits.add(s[:i] + s[i + 1:])  # deletions
            for c in "0123456789-":
                edits.add(s[:i] + c + s[i + 1:])  # substitutions
                edits.add(s[:i] + c + s[i:])  # insertions
        for e in edits:
            try:
                pairs.append((d, date.fromisoformat(e)))
            except ValueError:
                pass
        pairs += [(d, b) for b in base]  # and pairs far apart
    df = pl.DataFrame(pairs, schema={"birth_date_l": pl.Date, "birth_date_r": pl.Date}, orient="row")
    con = duckdb.connect()
    con.register("pairs", df.to_arrow())
    dl = "damerau_levenshtein(CAST(birth_date_l AS VARCHAR), CAST(birth_date_r AS VARCHAR)) <= 1"
    one_edit, dropped, guarded = con.sql(
        f"SELECT count(*) FILTER ({dl}), count(*) FILTER ({dl} AND NOT ({_TWO_OF_YMD_EQUAL})), "
        f"count(*) FILTER ({_TWO_OF_YMD_EQUAL}) FROM pairs").fetchall()[0]
    assert one_edit > 1000 and dropped == 0
    assert guarded < len(pairs)  # and the guard does exclude pairs


def test_tied_best_candidates_are_not_linked():
    """A record whose best match weight is shared by two spine persons (the same keys) is
    ambiguous: it stays unlinked and is counted; a clear best candidate is taken even when
    others are above the threshold too."""
    from data_ingest.linkage import best_candidates

    above = pl.DataFrame({
        "_rid":              [1, 1, 2, 2, 2, 3, 4, 4],
        "_spine_rid":        [10, 11, 20, 21, 22, 30, 41, 40],
        "match_probability": [0.99, 0.99, 0.95, 0.999, 0.97, 0.91, 0.96, 0.96],
        "match_weight":      [12.5, 12.5, 8.0, 14.0, 9.0, 3.3, 7.25, 7.25 + 1e-12],
    })
    chosen, tied = best_candidates(above)
    assert chosen.select("_rid", "_spine_rid").rows() == [(2, 21), (3, 30)]
    assert chosen.filter(pl.col("_rid") == 2)["match_weight"].item() == 14.0
    assert tied["_rid"].to_list() == [1, 4]  # 4: equal up to rounding
    empty_chosen, empty_tied = best_candidates(above.clear())
    assert empty_chosen.height == 0 and empty_tied.height == 0
