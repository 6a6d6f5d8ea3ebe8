"""``ingest publish``: a dataset version, re-keyed for one project, read-only in its data folder.

Every pseudonym column is replaced by HMAC-SHA256(project key, store pseudonym), the project key
being derived from the master key and the project name, so two projects' files share no
identifier values and cannot be joined. Records linked probabilistically by the newest linkage
run get the spine's pseudonym (status ``probabilistic``); objectors are removed again. The result
is written aside and renamed into ``<store>/projects/<project>/data/<dataset>/`` with files 0444
and folders 0555, with the description as ``metadata.json`` and in the Parquet footer (also per
column: label and value labels as field metadata).
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import polars as pl

from . import __version__
from . import objections as obj
from .errors import IngestError
from .keys import default_key_file, load_key
from .linkage import latest_links
from .metadata import write_parquet
from .pipeline import Reporter
from .rules import STATUS_PROBABILISTIC, key_id, project_key, pseudonym_expr
from .store import Store, make_readonly, remove_tree, write_json


@dataclass
class PublishResult:
    project: str
    dataset: str
    version: str
    reused: bool
    records: int
    units: int | None
    objectors_removed: int
    probabilistic: int
    path: Path


def publish(store: str | Path | Store, refs: list[str], project: str, key_file: str | Path | None = None,
            reporter: Reporter | None = None) -> list[PublishResult]:
    rep = reporter or Reporter()
    store = store if isinstance(store, Store) else Store(store)
    conf = store.read_project(project)
    listed = conf.get("datasets", [])
    resolved = [store.resolve(r) for r in refs]
    for name, _ in resolved:
        if name not in listed:
            raise IngestError(f"project '{project}' does not list dataset '{name}' "
                              f"(its project.toml has datasets = {listed})")
    master = load_key(Path(key_file) if key_file else default_key_file(store.root), store.root)
    pkey = project_key(master, project)
    store.ensure()
    out = []
    for name, version in resolved:
        with rep.stage(f"publishing {name}@{version} to {project}"):
            out.append(_publish_one(store, name, version, project, master, pkey))
    return out


def _publish_one(store: Store, name: str, version: str, project: str, master: str, pkey: str) -> PublishResult:
    md = store.metadata(name, version)
    uid = (md.get("unit_id") or {}).get("column")
    kind = (md.get("unit_id") or {}).get("kind")
    run_id, plinks = latest_links(store, name, version)
    objectors = obj.registered(store, kind) if kind else pl.Series("pseudonym", [], pl.String)
    fp = hashlib.sha256("\n".join([
        f"{name}@{version}", md["provenance"]["fingerprint"], str(run_id), obj.digest(objectors),
        key_id(master), project, __version__]).encode()).hexdigest()
    target_parent = store.project_dir(project) / "data"
    target = target_parent / name
    if (target / "metadata.json").exists():
        old = json.loads((target / "metadata.json").read_text())
        if old.get("publication", {}).get("fingerprint") == fp:
            return PublishResult(project, name, version, True, old.get("number_of_records", 0),
                                 old.get("number_of_units"), 0, old.get("publication", {}).get("probabilistic_links", 0),
                                 target)

    lf = pl.scan_parquet(store.data_files(name, version))
    cols = lf.collect_schema().names()
    n_prob = 0
    if uid and plinks is not None and plinks.height and "_rid" in cols:
        n_prob = plinks.height
        lf = (lf.join(plinks.lazy().select("_rid", pl.col("pid").alias("__plink")), on="_rid", how="left")
              .with_columns(
                  pl.when(pl.col("__plink").is_not_null()).then(pl.lit(STATUS_PROBABILISTIC))
                  .otherwise(pl.col(f"{uid}_status")).alias(f"{uid}_status"),
                  pl.coalesce(uid, "__plink").alias(uid))
              .drop("__plink"))
    n_before = lf.select(pl.len()).collect().item()
    if uid and objectors.len():
        lf = lf.filter(~pl.col(uid).is_in(objectors.implode()).fill_null(False))
    pseud = [v["name"] for v in md["variables"] if v.get("pseudonym_kind")]
    lf = lf.with_columns([pseudonym_expr(pl.col(c), pkey).alias(c) for c in pseud])
    lf = lf.select([c for c in cols if not c.startswith("_")])
    table = lf.collect(engine="streaming")
    records = table.height
    units = table[uid].drop_nulls().n_unique() if uid else None
    status = {}
    for c in table.columns:
        if c.endswith("_status"):
            status[c[: -len("_status")]] = {k: int(v) for k, v in table[c].value_counts().iter_rows()}

    pmd = dict(md)
    pmd.update(
        identifier=f"{project}/{name}", project=project, number_of_records=records,
        number_of_units=units, link_status=status,
        publication={
            "project": project, "dataset": f"{name}@{version}", "linkage_run": run_id,
            "probabilistic_links": n_prob, "objector_records_removed": n_before - records,
            "pseudonyms": "HMAC-SHA256(project key, store pseudonym), 128 bits hex; project key = "
                          "HMAC-SHA256(master key, 'project:' + project)",
            "project_key_id": key_id(pkey), "published": datetime.now(UTC).isoformat(timespec="seconds"),
            "software": f"data_ingest {__version__}", "fingerprint": fp,
        },
    )
    target_parent.mkdir(parents=True, exist_ok=True)
    with store.staging(f"publish-{project}-{name}") as stage:
        write_parquet(table, stage / "part-0.parquet", pmd, compression="zstd")
        write_json(stage / "metadata.json", pmd)
        make_readonly(stage)
        os.chmod(stage, 0o755)  # renaming a folder needs write access to it (for its '..')
        with store.staging(f"old-{project}-{name}") as trash:
            if target.exists():
                os.chmod(target, 0o755)
                os.rename(target, trash / name)
            os.rename(stage, target)
            os.chmod(target, 0o555)
            remove_tree(trash / name)
    return PublishResult(project, name, version, False, records, units, n_before - records, n_prob, target)
