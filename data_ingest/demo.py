"""Synthetic linked demo sources, and the whole demo pipeline in one call (``ingest demo``).

Everything is generated with numpy from a fixed seed (no real person is in it):

- ``persons.csv`` -- the person register (the spine): BSN (passing the 11-test; about 1.5 %
  fail it and 1 % are missing), name and street (not in the spec: dropped and reported), birth
  date, sex (M/V), 6-character postcode;
- ``income.parquet`` -- income register 2022 for most adults: BSN stored as an integer,
  gross income (a long right tail, top-coded by the spec), main source of income (coded);
- ``admissions.sav`` -- hospital admissions (SPSS, with variable and value labels): BSN (some
  missing), birth date, sex (1/2), postcode, admission and discharge dates, ICD-10 diagnosis;
- ``covid_tests.csv`` -- COVID-19 tests from a laboratory that has no BSN: birth date, sex,
  postcode (with typos and removals), test date, result, test type -- linked probabilistically;
- ``vaccinations.parquet`` -- COVID-19 vaccinations: BSN, date, dose, vaccine;
- ``objections.txt`` -- a few people who objected to research use (some of them were tested by
  the laboratory, so their tests must be found by birth date, sex and postcode).

:func:`run_demo` creates the key if there is none, ingests every source with the specs in
``data_ingest/demo_specs/``, links, writes the demo projects' ``project.toml`` and publishes.
Every step is idempotent, so running it again changes nothing.
"""

from __future__ import annotations

import json
import os
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from .errors import IngestError
from .keys import init_key
from .pipeline import Reporter, add
from .store import Store

SPECS = Path(__file__).parent / "demo_specs"
SOURCES = {
    "persons": "persons.csv",
    "income": "income.parquet",
    "admissions": "admissions.sav",
    "covid_tests": "covid_tests.csv",
    "vaccinations": "vaccinations.parquet",
}
PROJECTS: dict[str, dict[str, Any]] = {
    "covid": {
        "title": "COVID-19 tests, vaccinations and hospital admissions (synthetic demo)",
        "members": ["researcher"], "checkers": ["checker", "checker2"],
        "datasets": ["persons", "covid_tests", "vaccinations", "admissions"], "policy": "acro",
    },
    "income": {
        "title": "Income by region and age (synthetic demo)",
        "members": ["researcher", "researcher2"], "checkers": ["checker", "checker2"],
        "datasets": ["persons", "income"], "policy": "acro",
    },
}

SURNAMES = ["de Jong", "Jansen", "de Vries", "van den Berg", "van Dijk", "Bakker", "Janssen", "Visser",
            "Smit", "Meijer", "de Boer", "Mulder", "de Groot", "Bos", "Vos", "Peters", "Hendriks"]
STREETS = ["Dorpsstraat", "Kerkstraat", "Schoolstraat", "Molenweg", "Stationsweg", "Julianastraat"]
ICD10 = {  # code: (label, weight)
    "U07.1": ("COVID-19, virus identified", 8), "J18.9": ("Pneumonia, unspecified", 10),
    "I21.9": ("Acute myocardial infarction", 7), "I50.9": ("Heart failure", 8),
    "I63.9": ("Cerebral infarction", 6), "C34.9": ("Malignant neoplasm of lung", 4),
    "S72.0": ("Fracture of neck of femur", 6), "K35.8": ("Acute appendicitis", 5),
    "N39.0": ("Urinary tract infection", 6), "E11.9": ("Type 2 diabetes", 3),
    "J44.1": ("COPD with acute exacerbation", 6), "O80": ("Single spontaneous delivery", 9),
    "K80.2": ("Gallstones", 5), "M17.1": ("Gonarthrosis", 4), "F32.9": ("Depressive episode", 2),
}


def bsn_array(rng: np.random.Generator, n: int) -> np.ndarray:
    """``n`` distinct 9-digit numbers passing the 11-test (as int64)."""
    out = np.empty(0, dtype=np.int64)
    weights = np.array([9, 8, 7, 6, 5, 4, 3, 2])
    while out.size < n:
        prefix = rng.integers(10_000_000, 99_999_999, size=2 * n)  # 8 digits, first non-zero
        digits = (prefix[:, None] // 10 ** np.arange(7, -1, -1)) % 10
        check = (digits @ weights) % 11
        ok = check <= 9
        cand = prefix[ok] * 10 + check[ok]
        out = np.unique(np.concatenate([out, cand]))
    return rng.permutation(out)[:n]


def _dates(rng, start: date, end: date, n: int) -> np.ndarray:
    a, b = np.datetime64(start, "D"), np.datetime64(end, "D")
    return a + rng.integers(0, int((b - a).astype(int)) + 1, size=n).astype("timedelta64[D]")


def generate(out: str | Path, persons: int = 20_000, seed: int = 7) -> Path:
    """Write the demo sources into ``out``; reuse them when a manifest says they match."""
    out = Path(out)
    manifest = out / "manifest.json"
    want = {"persons": persons, "seed": seed, "generator": 2}
    if manifest.exists() and json.loads(manifest.read_text()).get("params") == want and all(
            (out / f).exists() for f in SOURCES.values()):
        return out
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    n = persons

    # --- the person register ---
    bsn = bsn_array(rng, n)
    age = np.clip(rng.gamma(4.0, 11.0, n), 0, 100).astype(int)
    birth = np.datetime64("2023-01-01", "D") - (age * 365.25 + rng.integers(0, 365, n)).astype("timedelta64[D]")
    sex = rng.choice(["M", "V"], n)
    pc4 = rng.choice(np.arange(1011, 9999), size=max(1, n // 40))  # people cluster in postcodes
    pc = np.char.add(rng.choice(pc4, n).astype(str),
                     np.char.add(rng.choice(list("ABCEGHJKLMNPRTVWXZ"), n), rng.choice(list("ABCEGHJKLMNPRTVWXZ"), n)))
    bsn_txt = bsn.astype(str)
    status = rng.random(n)
    bsn_src = bsn_txt.copy().astype(object)
    bad = status < 0.015
    bsn_src[bad] = np.char.add(np.char.ljust(np.char.rjust((bsn[bad] // 10).astype(str), 8, "0"), 8),
                               ((bsn[bad] % 10 + 1) % 10).astype(str))  # a typo in the check digit
    bsn_src[(status >= 0.015) & (status < 0.025)] = None
    people = pl.DataFrame({
        "bsn": pl.Series(bsn_src, dtype=pl.String),
        "naam": rng.choice(SURNAMES, n), "straat": np.char.add(np.char.add(rng.choice(STREETS, n), " "),
                                                                rng.integers(1, 200, n).astype(str)),
        "geboortedatum": birth, "geslacht": sex, "postcode": pc,
    })
    people.write_csv(out / "persons.csv")
    truth = pl.DataFrame({"bsn": bsn_txt, "birth": birth, "sex": sex, "pc": pc, "age": age})

    # --- income 2022 (adults, most of them) ---
    adults = truth.filter((pl.col("age") >= 18) & pl.Series(rng.random(n) < 0.85))
    m = adults.height
    src_code = rng.choice([1, 2, 3, 4], m, p=[0.62, 0.1, 0.1, 0.18])
    income = np.round(rng.lognormal(10.4, 0.6, m) * np.where(src_code == 2, 1.3, 1.0), 0)
    inc_bsn = adults["bsn"].cast(pl.Int64).to_numpy().copy()
    typo = rng.random(m) < 0.005
    inc_bsn[typo] = inc_bsn[typo] + 1  # fails the 11-test
    pl.DataFrame({"bsn": inc_bsn, "jaar": np.full(m, 2022), "bruto_inkomen": income,
                  "inkomensbron": src_code}).write_parquet(out / "income.parquet")

    # --- hospital admissions (SPSS) ---
    p_adm = np.clip(truth["age"].to_numpy() / 250, 0.02, 0.35)
    who = np.flatnonzero(rng.random(n) < p_adm)
    k = rng.choice([1, 1, 1, 2, 3], who.size)
    idx = np.repeat(who, k)
    a = idx.size
    adm = _dates(rng, date(2020, 3, 1), date(2022, 12, 31), a)
    codes = list(ICD10)
    w = np.array([ICD10[c][1] for c in codes], dtype=float)
    diag = rng.choice(codes, a, p=w / w.sum())
    t = truth[idx]
    adm_bsn = t["bsn"].to_numpy().astype(object)
    adm_bsn[rng.random(a) < 0.03] = ""
    import pandas as pd
    import pyreadstat

    adm_df = pd.DataFrame({
        "bsn": adm_bsn.astype(str), "gebdat": pd.to_datetime(t["birth"].to_numpy().astype("datetime64[ns]")),
        "geslacht": np.where(t["sex"].to_numpy() == "M", 1.0, 2.0), "postcode": t["pc"].to_numpy(),
        "opname": pd.to_datetime(adm.astype("datetime64[ns]")),
        "ontslag": pd.to_datetime((adm + rng.integers(0, 15, a).astype("timedelta64[D]")).astype("datetime64[ns]")),
        "diagnose": diag, "ziekenhuis": rng.choice(["ZH01", "ZH02", "ZH03", "ZH04"], a),
    })
    pyreadstat.write_sav(
        adm_df, str(out / "admissions.sav"), file_label="Ziekenhuisopnamen (synthetisch)",
        column_labels={"bsn": "Burgerservicenummer", "gebdat": "Geboortedatum", "geslacht": "Geslacht",
                       "postcode": "Postcode", "opname": "Opnamedatum", "ontslag": "Ontslagdatum",
                       "diagnose": "Hoofddiagnose (ICD-10)", "ziekenhuis": "Ziekenhuis"},
        variable_value_labels={"geslacht": {1: "man", 2: "vrouw"}})

    # --- COVID-19 tests from a laboratory without BSN ---
    p_test = 0.25
    who = np.flatnonzero(rng.random(n) < p_test)
    tested = who.copy()
    k = rng.choice([1, 1, 2, 3, 4], who.size)
    idx = np.repeat(who, k)
    c = idx.size
    t = truth[idx]
    tb = t["birth"].to_numpy().copy()
    r = rng.random(c)
    tb[r < 0.02] = tb[r < 0.02] + rng.choice([-9, -1, 1, 9], int((r < 0.02).sum())).astype("timedelta64[D]")
    tpc = t["pc"].to_numpy().copy()
    moved = rng.random(c) < 0.05
    tpc[moved] = rng.choice(pc, int(moved.sum()))
    tsex = t["sex"].to_numpy().astype(object)
    tsex[rng.random(c) < 0.01] = None
    pl.DataFrame({
        "geboortedatum": tb, "geslacht": pl.Series(tsex, dtype=pl.String), "postcode": tpc,
        "testdatum": _dates(rng, date(2020, 6, 1), date(2022, 6, 30), c),
        "uitslag": rng.choice(["POS", "NEG"], c, p=[0.18, 0.82]),
        "testtype": rng.choice(["PCR", "ANTIGEEN"], c, p=[0.7, 0.3]),
    }).write_csv(out / "covid_tests.csv")

    # --- vaccinations ---
    eligible = np.flatnonzero((truth["age"].to_numpy() >= 12) & (rng.random(n) < 0.78))
    doses = rng.choice([1, 2, 3, 4], eligible.size, p=[0.08, 0.3, 0.42, 0.2])
    idx = np.repeat(eligible, doses)
    dose_no = np.concatenate([np.arange(1, d + 1) for d in doses]) if doses.size else np.empty(0, int)
    first = _dates(rng, date(2021, 1, 15), date(2021, 8, 31), eligible.size)
    vdate = np.repeat(first, doses) + ((dose_no - 1) * 120 + rng.integers(0, 30, idx.size)).astype("timedelta64[D]")
    vbsn = truth["bsn"].to_numpy()[idx].astype(object)
    vbsn[rng.random(idx.size) < 0.01] = None
    pl.DataFrame({
        "bsn": pl.Series(vbsn, dtype=pl.String), "vaccinatiedatum": vdate, "dosis": dose_no,
        "vaccin": np.where(dose_no <= 2, rng.choice(["PFZ", "MOD", "AZ", "JAN"], idx.size, p=[0.6, 0.15, 0.2, 0.05]),
                           rng.choice(["PFZ", "MOD"], idx.size, p=[0.7, 0.3])),
    }).write_parquet(out / "vaccinations.parquet")

    # --- objections ---
    valid = np.flatnonzero(status >= 0.025)
    # A few objectors were tested for COVID-19 by the laboratory that has no BSN: their tests must
    # be removed by their quasi-identifiers.
    tested_valid = np.intersect1d(valid, tested)
    some = rng.choice(tested_valid, min(4, tested_valid.size), replace=False)
    rest = rng.choice(np.setdiff1d(valid, some), 12 - some.size, replace=False)
    objectors = np.concatenate([some, rest])
    (out / "objections.txt").write_text("bsn\n" + "\n".join(bsn_txt[objectors]) + "\n")

    manifest.write_text(json.dumps({"params": want, "files": SOURCES}, indent=2))
    return out


def project_toml(name: str, conf: dict[str, Any]) -> str:
    def q(s):
        return json.dumps(s)

    return (f"name = {q(name)}\ntitle = {q(conf['title'])}\n"
            f"members = [{', '.join(q(m) for m in conf['members'])}]\n"
            f"checkers = [{', '.join(q(c) for c in conf['checkers'])}]\n"
            f"datasets = [{', '.join(q(d) for d in conf['datasets'])}]\n"
            f"policy = {q(conf['policy'])}\n")


def write_projects(store: Store) -> list[str]:
    """Write the demo projects' project.toml (an existing one is left alone)."""
    written = []
    for name, conf in PROJECTS.items():
        d = store.project_dir(name)
        d.mkdir(parents=True, exist_ok=True)
        p = d / "project.toml"
        if not p.exists():
            tmp = p.with_name(".project.toml.tmp")
            tmp.write_text(project_toml(name, conf))
            os.replace(tmp, p)
            written.append(name)
    return written


def run_demo(store: str | Path, key_file: str | Path, sources: str | Path | None = None,
             persons: int = 20_000, seed: int = 7, reporter: Reporter | None = None) -> dict[str, Any]:
    """Generate (or reuse) the sources, then keys, add, link and publish. Idempotent."""
    from .linkage import link
    from .publish import publish

    rep = reporter or Reporter()
    store = Store(store)
    key_file = Path(key_file)
    sources = Path(sources) if sources else store.root.absolute().parent / "demo-sources"
    summary: dict[str, Any] = {"store": str(store.root), "sources": str(sources), "added": [], "published": []}
    with rep.stage(f"generating demo sources ({persons:,} persons, seed {seed})"):
        generate(sources, persons, seed)
    if not key_file.exists():
        summary["key_created"] = init_key(key_file, store.root)
    store.ensure()
    for name, file in SOURCES.items():
        res = add(sources / file, SPECS / f"{name}.toml", store, key_file,
                  objections=sources / "objections.txt" if name == "persons" else None, reporter=rep)
        summary["added"].append(res)
    summary["link"] = link(store, reporter=rep)
    summary["projects_written"] = write_projects(store)
    for name, conf in PROJECTS.items():
        summary["published"] += publish(store, conf["datasets"], name, key_file, reporter=rep)
    return summary


def check_demo_specs() -> None:
    """Every shipped spec parses (used by the tests)."""
    from .spec import load_spec

    for name in SOURCES:
        spec = load_spec(SPECS / f"{name}.toml")
        if spec.dataset != name:
            raise IngestError(f"spec {name}.toml names dataset {spec.dataset}")
