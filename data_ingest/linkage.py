"""``ingest link``: deterministic linkage on pseudonyms, probabilistic linkage to the spine, and
a linkage report.

- **Deterministic.** Datasets whose unit ids have the same kind (e.g. ``bsn``) share store
  pseudonyms, so they link by an equi-join; the report gives match rates per pair.
- **Probabilistic.** Records without a valid identifier (a source that has none, or a BSN that
  failed the 11-test or is missing) are linked to the *spine* (the dataset whose spec says
  ``spine = true``, normally the person register) on the linkage keys kept at ingest (birth date,
  sex, 6-character postcode) with Splink's Fellegi-Sunter model on DuckDB: u-probabilities from
  random pairs, m-probabilities by EM, one best match per record above a threshold.
  Its quality is measured on a sample of records that *do* have a valid identifier: they are
  linked as if they had none, and the result is compared with their true pseudonym
  (precision and recall, in place of a clerical review sample).
- **Report** (GUILD-style): input counts; valid / missing / invalid identifiers per source;
  match rates per pair and method; duplicates; linked vs unlinked by age band, sex and region.

A run is stored in ``<store>/linkage/<run-id>/`` (links.parquet, report.json, report.md). The
run id is a hash of the dataset versions and settings, so re-running is a no-op.
``ingest publish`` gives probabilistically linked records the spine's pseudonym, with link
status ``probabilistic``.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any, NamedTuple

import duckdb
import polars as pl

from . import __version__
from .errors import IngestError
from .pipeline import LINKAGE_KEYS, Reporter
from .rules import STATUS_VALID
from .store import Store, make_readonly, remove_tree, write_json

AGE_BANDS = [0, 18, 30, 45, 65, 80]


@dataclass
class LinkResult:
    run_id: str
    reused: bool
    path: Path
    report: dict[str, Any]


def _ds_info(store: Store, name: str, version: str) -> dict[str, Any]:
    md = store.metadata(name, version)
    d = store.version_dir(name, version)
    uid = md.get("unit_id") or {}
    return {
        "dataset": name, "version": version, "dir": d, "files": [str(p) for p in store.data_files(name, version)],
        "unit_id": uid.get("column"), "kind": uid.get("kind"),
        "spine": bool(md.get("provenance", {}).get("spec", {}).get("dataset", {}).get("spine", False)),
        "keys": sorted(d.glob(LINKAGE_KEYS)) or None,
        "records": md.get("number_of_records"), "units": md.get("number_of_units"),
        "status": (md.get("link_status") or {}).get(uid.get("column"), {}) if uid else {},
    }


def link(store: str | Path | Store, datasets: list[str] | None = None, threshold: float = 0.9,
         reporter: Reporter | None = None, eval_sample: int = 2000) -> LinkResult:
    rep = reporter or Reporter()
    store = store if isinstance(store, Store) else Store(store)
    refs = datasets or store.datasets()
    if not refs:
        raise IngestError(f"no datasets in the store {store.root} to link")
    infos = [_ds_info(store, *store.resolve(r)) for r in refs]
    infos = [i for i in infos if i["unit_id"]]
    if not infos:
        raise IngestError("none of these datasets has a unit id to link on")
    ident = json.dumps({"datasets": sorted(f"{i['dataset']}@{i['version']}" for i in infos),
                        "threshold": threshold, "eval_sample": eval_sample, "software": __version__})
    run_id = "run-" + hashlib.sha256(ident.encode()).hexdigest()[:12]
    run_dir = store.linkage_dir / run_id
    if (run_dir / "report.json").exists():
        return LinkResult(run_id, True, run_dir, json.loads((run_dir / "report.json").read_text()))

    store.ensure()
    # DuckDB (ours and Splink's) spills to disk above its memory limit: into the store's staging
    # area, never into the folder the command runs in; removed at the end.
    with store.staging("linkage-spill") as spill:
        report, all_links = _link_all(infos, run_id, threshold, eval_sample, rep, spill)

    with store.staging("linkage") as stage:
        all_links.select("dataset", "version", "_rid", "pid", "match_probability", "match_weight") \
            .write_parquet(stage / "links.parquet")
        write_json(stage / "report.json", report)
        (stage / "report.md").write_text(report_markdown(report), encoding="utf-8")
        if run_dir.exists():  # an earlier run died half-way through the rename: impossible, but tidy
            remove_tree(run_dir)
        (stage).rename(run_dir)
        make_readonly(run_dir)
    return LinkResult(run_id, False, run_dir, report)


def _link_all(infos, run_id, threshold, eval_sample, rep, spill: Path) -> tuple[dict[str, Any], pl.DataFrame]:
    """Counts, deterministic and probabilistic linkage and bias: the report and the links."""
    con = duckdb.connect(config={"temp_directory": str(spill)})
    con.execute("SET threads TO 2")
    for i in infos:
        con.execute(f"CREATE VIEW \"{i['dataset']}\" AS SELECT * FROM read_parquet({i['files']!r})")

    report: dict[str, Any] = {
        "run_id": run_id, "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "software": f"data_ingest {__version__}, duckdb {duckdb.__version__}",
        "threshold_match_probability": threshold,
        "sources": [], "pairs": [], "duplicates": [], "probabilistic": [], "bias": [],
    }
    with rep.stage("counting sources and identifiers"):
        for i in infos:
            st = i["status"]
            n = i["records"] or 0
            report["sources"].append({
                "dataset": f"{i['dataset']}@{i['version']}", "records": n, "units": i["units"],
                "id_kind": i["kind"], "spine": i["spine"],
                "valid": st.get("valid", 0), "invalid": st.get("invalid", 0), "missing": st.get("missing", 0),
                "pct_valid": _pct(st.get("valid", 0), n),
            })
            dup = con.execute(f"""
                SELECT count(*) AS units, coalesce(sum(n), 0) AS records, coalesce(max(n), 0) AS most
                FROM (SELECT count(*) AS n FROM "{i['dataset']}" WHERE "{i['unit_id']}" IS NOT NULL
                      GROUP BY "{i['unit_id']}" HAVING count(*) > 1)""").fetchall()[0]
            report["duplicates"].append({"dataset": i["dataset"], "units_with_several_records": dup[0],
                                         "records_involved": int(dup[1]), "most_records_per_unit": dup[2],
                                         "note": "duplicates in the spine are registration errors"
                                         if i["spine"] else "several records per unit is expected for events"})

    with rep.stage("deterministic linkage on pseudonyms"):
        for a_i, a in enumerate(infos):
            for b in infos[a_i + 1:]:
                if a["kind"] != b["kind"] or not a["status"].get("valid") or not b["status"].get("valid"):
                    continue  # nothing to join on
                ua, ub = a["unit_id"], b["unit_id"]
                row = con.execute(f"""
                    WITH ka AS (SELECT DISTINCT "{ua}" AS k FROM "{a['dataset']}" WHERE "{ua}_status" = 'valid'),
                         kb AS (SELECT DISTINCT "{ub}" AS k FROM "{b['dataset']}" WHERE "{ub}_status" = 'valid')
                    SELECT (SELECT count(*) FROM ka), (SELECT count(*) FROM kb),
                           (SELECT count(*) FROM ka JOIN kb USING (k)),
                           (SELECT count(*) FROM "{a['dataset']}" WHERE "{ua}" IN (SELECT k FROM kb)),
                           (SELECT count(*) FROM "{b['dataset']}" WHERE "{ub}" IN (SELECT k FROM ka))
                """).fetchall()[0]
                units_a, units_b, common, rec_a, rec_b = row
                report["pairs"].append({
                    "a": a["dataset"], "b": b["dataset"], "method": "deterministic (pseudonym)",
                    "units_a": units_a, "units_b": units_b, "units_in_both": common,
                    "pct_units_a_in_b": _pct(common, units_a), "pct_units_b_in_a": _pct(common, units_b),
                    "records_a_linked": rec_a, "pct_records_a_linked": _pct(rec_a, a["records"]),
                    "records_b_linked": rec_b, "pct_records_b_linked": _pct(rec_b, b["records"]),
                })

    links = []
    spines = {}
    for i in infos:
        if i["spine"]:
            spines.setdefault(i["kind"], i)
    for i in infos:
        spine = spines.get(i["kind"])
        if spine is None or spine is i or i["keys"] is None or spine["keys"] is None:
            continue
        res = probabilistic(i, spine, threshold, eval_sample, reporter=rep, spill=spill)
        if res is None:
            continue
        summary, found = res
        report["probabilistic"].append(summary)
        if found.height:
            links.append(found.with_columns(pl.lit(i["dataset"]).alias("dataset"),
                                            pl.lit(i["version"]).alias("version")))
        report["pairs"].append({
            "a": i["dataset"], "b": spine["dataset"], "method": "probabilistic (Fellegi-Sunter, Splink)",
            "records_a_linked": summary["linked"], "records_a_considered": summary["records_without_valid_id"],
            "pct_records_a_linked": _pct(summary["linked"], summary["records_without_valid_id"]),
        })

    all_links = (pl.concat(links) if links else pl.DataFrame(
        schema={"_rid": pl.Int64, "pid": pl.String, "match_probability": pl.Float64,
                "match_weight": pl.Float64, "dataset": pl.String, "version": pl.String}))

    with rep.stage("linked vs unlinked by age band, sex and region"):
        for i in infos:
            spine = spines.get(i["kind"])
            if spine is None:
                continue
            b = bias(con, i, spine, all_links.filter(pl.col("dataset") == i["dataset"]), infos)
            if b:
                report["bias"].append(b)
    con.close()
    return report, all_links


def _pct(a, b) -> float | None:
    return round(100.0 * a / b, 2) if b else None


# --- probabilistic linkage ------------------------------------------------------------------------

ROLES = ("birth_date", "sex", "postcode")
TIE_TOLERANCE = 1e-9  # match weights this close are a tie (the same pattern of agreement)


# Two dates one edit apart as text (YYYY-MM-DD) differ in one of year, month and day only: an
# edit that touched a '-' would not give a date. So the cheap test on the parts is implied by the
# Damerau-Levenshtein test and goes first: the same level for every pair, and the string distance
# (about 1 µs a pair) is computed for few pairs instead of every candidate pair with another date
# (about 10 M of the 50 M pairs scored for 1 M records).
_TWO_OF_YMD_EQUAL = ("(CAST(year(birth_date_l) = year(birth_date_r) AS INTEGER) "
                     "+ CAST(month(birth_date_l) = month(birth_date_r) AS INTEGER) "
                     "+ CAST(day(birth_date_l) = day(birth_date_r) AS INTEGER)) >= 2")


def _comparisons(roles: list[str]) -> list[dict[str, Any]]:
    comps = []
    if "birth_date" in roles:
        comps.append({"output_column_name": "birth_date", "comparison_levels": [
            {"sql_condition": "birth_date_l IS NULL OR birth_date_r IS NULL", "label_for_charts": "null",
             "is_null_level": True},
            {"sql_condition": "birth_date_l = birth_date_r", "label_for_charts": "exact", "m_probability": 0.9},
            {"sql_condition": f"{_TWO_OF_YMD_EQUAL} AND "
                              "damerau_levenshtein(CAST(birth_date_l AS VARCHAR), CAST(birth_date_r AS VARCHAR)) <= 1",
             "label_for_charts": "one character apart", "m_probability": 0.04},
            {"sql_condition": "year(birth_date_l) = year(birth_date_r) AND month(birth_date_l) = day(birth_date_r) "
                              "AND day(birth_date_l) = month(birth_date_r)", "label_for_charts": "day and month swapped",
             "m_probability": 0.01},
            {"sql_condition": "abs(date_diff('day', birth_date_l, birth_date_r)) <= 366",
             "label_for_charts": "within a year", "m_probability": 0.03},
            {"sql_condition": "ELSE", "label_for_charts": "else", "m_probability": 0.02},
        ]})
    if "sex" in roles:
        # m is fixed, not trained: sources where sex never differs between a record and its person
        # teach EM m ≈ 0 for "differs", and then one recording error (or a change of registered
        # sex) would veto the link whatever else agrees (weight -84 instead of about -5).
        comps.append({"output_column_name": "sex", "comparison_levels": [
            {"sql_condition": "sex_l IS NULL OR sex_r IS NULL", "label_for_charts": "null", "is_null_level": True},
            {"sql_condition": "sex_l = sex_r", "label_for_charts": "exact", "m_probability": 0.98,
             "fix_m_probability": True},
            {"sql_condition": "ELSE", "label_for_charts": "else", "m_probability": 0.02, "fix_m_probability": True},
        ]})
    if "postcode" in roles:
        comps.append({"output_column_name": "postcode", "comparison_levels": [
            {"sql_condition": "postcode_l IS NULL OR postcode_r IS NULL", "label_for_charts": "null",
             "is_null_level": True},
            {"sql_condition": "postcode_l = postcode_r", "label_for_charts": "exact", "m_probability": 0.85},
            {"sql_condition": "substr(postcode_l, 1, 4) = substr(postcode_r, 1, 4)", "label_for_charts": "same PC4",
             "m_probability": 0.05},
            {"sql_condition": "substr(postcode_l, 1, 2) = substr(postcode_r, 1, 2)", "label_for_charts": "same PC2",
             "m_probability": 0.04},
            {"sql_condition": "ELSE", "label_for_charts": "else", "m_probability": 0.06},
        ]})
    return comps


def probabilistic(ds: dict[str, Any], spine: dict[str, Any], threshold: float, eval_sample: int,
                  seed: int = 20240101, reporter: Reporter | None = None,
                  spill: Path | None = None) -> tuple[dict[str, Any], pl.DataFrame] | None:
    """Link ``ds``'s records without a valid id to the spine; returns (summary, links).

    Each step is a stage of ``reporter`` (on 1 M records to a 1 M spine the EM blocked on birth
    date and the scoring of about 50 M candidate pairs take most of the time). DuckDB spills into
    ``spill`` when given."""
    rep = reporter or Reporter()
    what = f"probabilistic linkage of {ds['dataset']} to {spine['dataset']}"
    with rep.stage(f"{what}: reading linkage keys"):
        inp = _prepare(ds, spine, eval_sample, seed)
    if inp is None:
        return None
    left, right, roles = inp.left, inp.right, inp.roles

    from splink import DuckDBAPI, Linker, SettingsCreator, block_on

    logging.getLogger("splink").setLevel(logging.ERROR)
    cols = ["unique_id", *roles]
    l_tab = left.with_columns(pl.col("_rid").alias("unique_id")).select(cols).to_arrow()
    r_tab = right.with_columns(pl.col("_rid").alias("unique_id")).select(cols).to_arrow()
    db = DuckDBAPI(duckdb.connect(config={"temp_directory": str(spill)}) if spill else ":memory:")
    sdf_l = db.register(l_tab, dataset_display_name="records")
    sdf_r = db.register(r_tab, dataset_display_name="spine")
    blocking = [block_on(r) for r in roles if r != "sex"]
    if "birth_date" in roles and "postcode" in roles:
        blocking.append("substr(l.postcode, 1, 4) = substr(r.postcode, 1, 4) AND year(l.birth_date) = year(r.birth_date)")
    settings = SettingsCreator(link_type="link_only", comparisons=_comparisons(roles),
                               blocking_rules_to_generate_predictions=blocking,
                               retain_matching_columns=False)
    linker = Linker([sdf_l, sdf_r], settings, log_level=None)
    with rep.stage(f"{what}: λ and u from random pairs"):
        det = [block_on(*roles)]
        linker.training.estimate_probability_two_random_records_match(det, recall=0.8)
        linker.training.estimate_u_using_random_sampling(max_pairs=3e5, seed=seed, num_chunks=1)
    em_notes = []
    for r in roles:
        if r == "sex":
            continue
        with rep.stage(f"{what}: m by EM, blocked on {r}"):
            try:
                # No comparison has term-frequency adjustments, so EM on the counts of each
                # agreement pattern is the same computation as on every pair (Splink's default
                # re-scores all pairs in each iteration: 7x slower on 1 M records).
                linker.training.estimate_parameters_using_expectation_maximisation(
                    block_on(r), record_sample_proportion=1.0, estimate_without_term_frequencies=True)
                em_notes.append(f"EM on block_on({r}): estimated")
            except (ValueError, ZeroDivisionError) as e:  # e.g. a level no match ever shows (m = 0)
                em_notes.append(f"EM on block_on({r}) failed ({str(e).splitlines()[0][:80]}); prior m kept")
            _drop_splink_tables(linker, db)
    with rep.stage(f"{what}: scoring candidate pairs"):
        pred = linker.inference.predict(threshold_match_probability=min(threshold, 0.5))
        p = pl.from_arrow(pred.as_duckdbpyrelation().to_arrow_table())
        _drop_splink_tables(linker, db)
    with rep.stage(f"{what}: best match per record"):
        result = _best_matches(ds, spine, threshold, p, inp, blocking, linker, em_notes)
    db.duckdb_con.close()
    return result


def _drop_splink_tables(linker, db) -> None:
    """Free the pairs Splink keeps in DuckDB after a step (the EM blocked on birth date holds
    40 M pairs twice for 1 M records): its cache is invalidated first, so nothing refers to them."""
    linker.table_management.invalidate_cache()
    con = db.duckdb_con
    for (name,) in con.execute("SELECT table_name FROM duckdb_tables() WHERE starts_with(table_name, '__splink__')"
                               ).fetchall():
        con.execute(f'DROP TABLE IF EXISTS "{name}"')


class _Inputs(NamedTuple):
    left: pl.DataFrame  # the records to link (todo) and the test records, with a flag "_test"
    right: pl.DataFrame  # the spine's records with a valid id
    todo: pl.DataFrame  # records without a valid id
    test: pl.DataFrame  # records with a valid id whose person is in the spine
    roles: list[str]  # the linkage keys both sides have


def _prepare(ds, spine, eval_sample, seed) -> _Inputs | None:
    left_all = pl.read_parquet(ds["keys"])
    right = pl.read_parquet(spine["keys"]).filter(pl.col("status") == STATUS_VALID)
    roles = [r for r in ROLES if r in left_all.columns and r in right.columns]
    todo = left_all.filter(pl.col("status") != STATUS_VALID)
    if len(roles) < 2 or right.height == 0 or (todo.height == 0 and eval_sample == 0):
        return None
    # Records with a valid id whose person is in the spine: a test set with a known answer.
    known = left_all.filter((pl.col("status") == STATUS_VALID) & pl.col("pid").is_in(right["pid"].implode()))
    test = known.sample(n=min(eval_sample, known.height), seed=seed) if eval_sample and known.height else known.clear()
    left = pl.concat([todo.with_columns(pl.lit(False).alias("_test")),
                      test.with_columns(pl.lit(True).alias("_test"))])
    if left.height == 0:
        return None
    return _Inputs(left, right, todo, test, roles)


def best_candidates(above: pl.DataFrame) -> tuple[pl.DataFrame, pl.DataFrame]:
    """The best candidate per record (``_rid``) among pairs above the threshold (``_spine_rid``,
    ``match_probability``, ``match_weight``), and the records left unlinked because several
    candidates share the best weight (spine persons with the same keys: the record is ambiguous,
    and giving it to one of them would be a guess)."""
    top = (above.group_by("_rid")
           .agg(pl.col("_spine_rid", "match_probability", "match_weight").get(pl.col("match_weight").arg_max()),
                (pl.col("match_weight") >= pl.col("match_weight").max() - TIE_TOLERANCE).sum().alias("_best"))
           .sort("_rid"))
    return (top.filter(pl.col("_best") == 1).drop("_best"),
            top.filter(pl.col("_best") > 1).select("_rid"))


def _best_matches(ds, spine, threshold, p, inp: _Inputs, blocking, linker, em_notes):
    left, right, todo, test, roles = inp
    # Splink orders the pair by source dataset name: find which side is the spine.
    if p.height:
        left_is_l = p["source_dataset_l"][0] == "records"
        lid, rid = ("unique_id_l", "unique_id_r") if left_is_l else ("unique_id_r", "unique_id_l")
        p = p.select(pl.col(lid).cast(pl.Int64).alias("_rid"), pl.col(rid).cast(pl.Int64).alias("_spine_rid"),
                     "match_probability", "match_weight")
    else:
        p = pl.DataFrame(schema={"_rid": pl.Int64, "_spine_rid": pl.Int64, "match_probability": pl.Float64,
                                 "match_weight": pl.Float64})
    above = p.filter(pl.col("match_probability") >= threshold)
    multi = above.group_by("_rid").agg(pl.len().alias("k")).filter(pl.col("k") > 1).height
    chosen, tied_rids = best_candidates(above)
    best = (chosen.join(right.select(pl.col("_rid").alias("_spine_rid"), "pid"), on="_spine_rid")
            .join(left.select("_rid", "_test", pl.col("pid").alias("_true_pid")), on="_rid"))
    tied = tied_rids.join(left.filter(~pl.col("_test")).select("_rid"), on="_rid").height
    found = best.filter(~pl.col("_test")).select("_rid", "pid", "match_probability", "match_weight")
    t = best.filter(pl.col("_test"))
    correct = t.filter(pl.col("pid") == pl.col("_true_pid")).height
    weights = p["match_weight"]
    hist = (p.with_columns(pl.col("match_weight").clip(-20, 30).floor().alias("w"))
            .group_by("w").agg(pl.len().alias("pairs")).sort("w"))
    summary = {
        "dataset": f"{ds['dataset']}@{ds['version']}", "spine": f"{spine['dataset']}@{spine['version']}",
        "keys": roles, "blocking_rules": [str(b) if isinstance(b, str) else b.get_blocking_rule("duckdb").blocking_rule_sql
                                          for b in blocking],
        "records_without_valid_id": todo.height, "linked": found.height,
        "records_with_several_candidates_above_threshold": multi,
        "records_with_tied_best_candidates_not_linked": tied,
        "pairs_scored": p.height,
        "match_weight_median": float(weights.median()) if p.height else None,
        "match_weight_histogram": {str(int(w)): n for w, n in hist.iter_rows()},
        "m_u": _m_u(linker),
        "training": em_notes,
        "evaluation": {
            "method": "records with a valid identifier, linked as if they had none, compared with their pseudonym",
            "test_records": test.height, "linked": t.height, "correct": correct,
            "precision": round(correct / t.height, 4) if t.height else None,
            "recall": round(correct / test.height, 4) if test.height else None,
        },
    }
    return summary, found


def _m_u(linker) -> dict[str, Any]:
    out = {}
    try:
        for comp in linker._settings_obj.comparisons:
            levels = []
            for lvl in comp.comparison_levels:
                if lvl.is_null_level:
                    continue
                levels.append({"level": lvl.label_for_charts,
                               "m": None if lvl.m_probability is None else round(float(lvl.m_probability), 5),
                               "u": None if lvl.u_probability is None else round(float(lvl.u_probability), 6)})
            out[comp.output_column_name] = levels
    except Exception:  # the model description is a courtesy; never fail a run on it
        pass
    return out


# --- bias -------------------------------------------------------------------------------------------


def bias(con, ds: dict[str, Any], spine: dict[str, Any], plinks: pl.DataFrame, infos) -> dict[str, Any] | None:
    """Linked vs unlinked records by age band, sex and region (first two postcode digits).

    For the spine: persons found in at least one other source vs not. For other sources: records
    linked to the spine (deterministically or probabilistically) vs not. Needs linkage keys.
    """
    if ds["keys"] is None:
        return None
    keys = pl.read_parquet(ds["keys"])
    if ds is spine:
        others = [i for i in infos if i is not spine and i["kind"] == spine["kind"]]
        if not others:
            return None
        found = pl.concat([con.sql(
            f"SELECT DISTINCT \"{o['unit_id']}\" AS pid FROM \"{o['dataset']}\" WHERE \"{o['unit_id']}\" IS NOT NULL"
        ).pl() for o in others] + ([plinks.select("pid")] if plinks.height else [])).unique()
        linked = keys["pid"].is_in(found["pid"].implode())
        what = "persons in the spine found in at least one other source"
    else:
        spine_pids = con.sql(
            f"SELECT DISTINCT \"{spine['unit_id']}\" AS pid FROM \"{spine['dataset']}\" WHERE \"{spine['unit_id']}\" IS NOT NULL").pl()
        linked = keys["pid"].is_in(spine_pids["pid"].implode()) | keys["_rid"].is_in(plinks["_rid"].implode())
        what = f"records linked to the spine {spine['dataset']}"
    keys = keys.with_columns(linked.alias("linked"))
    from .rules import bands_expr
    year = date.today().year
    groups = {}
    if "birth_date" in keys.columns:
        keys = keys.with_columns(bands_expr(pl.lit(year) - pl.col("birth_date").dt.year(), AGE_BANDS).alias("age_band"))
        groups["age_band"] = "age_band"
    if "sex" in keys.columns:
        groups["sex"] = "sex"
    if "postcode" in keys.columns:
        keys = keys.with_columns(pl.col("postcode").str.slice(0, 1).alias("region"))
        groups["region (first postcode digit)"] = "region"
    out = {"dataset": ds["dataset"], "linked_means": what, "records": keys.height,
           "linked": int(keys["linked"].sum()), "pct_linked": _pct(int(keys["linked"].sum()), keys.height),
           "by": {}}
    for label, col in groups.items():
        t = (keys.group_by(col).agg(pl.len().alias("records"), pl.col("linked").sum().alias("linked"))
             .with_columns((100 * pl.col("linked") / pl.col("records")).round(2).alias("pct_linked"))
             .sort(col, nulls_last=True))
        out["by"][label] = t.to_dicts()
    return out


# --- report text -------------------------------------------------------------------------------------


def report_markdown(r: dict[str, Any]) -> str:
    lines = [f"# Linkage report {r['run_id']}", "", f"Created {r['created']} with {r['software']}.", "",
             "## Sources", "", "| dataset | records | units | id kind | valid | invalid | missing | % valid |",
             "|---|---:|---:|---|---:|---:|---:|---:|"]
    for s in r["sources"]:
        lines.append(f"| {s['dataset']}{' (spine)' if s['spine'] else ''} | {s['records']} | {s['units']} | "
                     f"{s['id_kind']} | {s['valid']} | {s['invalid']} | {s['missing']} | {s['pct_valid']} |")
    lines += ["", "## Match rates per pair and method", "",
              "| a | b | method | records of a linked | % of a | units a in b (%) | units b in a (%) |",
              "|---|---|---|---:|---:|---:|---:|"]
    for p in r["pairs"]:
        lines.append(f"| {p['a']} | {p['b']} | {p['method']} | {p.get('records_a_linked')} | "
                     f"{p.get('pct_records_a_linked')} | {p.get('pct_units_a_in_b', '')} | {p.get('pct_units_b_in_a', '')} |")
    lines += ["", "## Duplicates", "", "| dataset | units with several records | records | most per unit |",
              "|---|---:|---:|---:|"]
    for d in r["duplicates"]:
        lines.append(f"| {d['dataset']} | {d['units_with_several_records']} | {d['records_involved']} | "
                     f"{d['most_records_per_unit']} |")
    if r["probabilistic"]:
        lines += ["", f"## Probabilistic linkage (threshold match probability {r['threshold_match_probability']})", ""]
        for p in r["probabilistic"]:
            e = p["evaluation"]
            lines += [f"- **{p['dataset']} → {p['spine']}** on {', '.join(p['keys'])}: {p['linked']} of "
                      f"{p['records_without_valid_id']} records without a valid id linked; "
                      f"{p['records_with_several_candidates_above_threshold']} had several candidates, "
                      f"{p.get('records_with_tied_best_candidates_not_linked', 0)} of them tied best ones (not linked); "
                      f"{p['pairs_scored']} pairs scored.",
                      f"  Evaluation on {e['test_records']} records with a known id: precision {e['precision']}, "
                      f"recall {e['recall']}."]
    if r["bias"]:
        lines += ["", "## Linked vs unlinked (bias)", ""]
        for b in r["bias"]:
            lines += [f"### {b['dataset']}: {b['linked_means']}", "",
                      f"{b['linked']} of {b['records']} linked ({b['pct_linked']}%).", ""]
            for label, rows in b["by"].items():
                col = next(k for k in rows[0] if k not in ("records", "linked", "pct_linked")) if rows else label
                lines += [f"| {label} | records | linked | % linked |", "|---|---:|---:|---:|"]
                lines += [f"| {row[col]} | {row['records']} | {row['linked']} | {row['pct_linked']} |" for row in rows]
                lines.append("")
    return "\n".join(lines) + "\n"


def latest_links(store: Store, dataset: str, version: str) -> tuple[str | None, pl.DataFrame | None]:
    """The newest linkage run that covered this dataset version, and its links for it."""
    best = None
    if store.linkage_dir.exists():
        for d in store.linkage_dir.iterdir():
            rp = d / "report.json"
            if not rp.exists():
                continue
            r = json.loads(rp.read_text())
            if any(s["dataset"] == f"{dataset}@{version}" for s in r["sources"]):
                if best is None or r["created"] > best[0]:
                    best = (r["created"], d)
    if best is None:
        return None, None
    links = pl.read_parquet(best[1] / "links.parquet").filter(
        (pl.col("dataset") == dataset) & (pl.col("version") == version))
    return best[1].name, links
