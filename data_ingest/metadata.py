"""Dataset descriptions in the spirit of HealthDCAT-AP (DCAT-AP's health extension).

The record is a JSON object kept as ``metadata.json`` beside the data (the master copy) and, as
JSON text, in each Parquet file's key/value footer under :data:`FOOTER_KEY`. The variables
(CSVW-like: name, title, datatype, description, plus a value-label list per variable, as CBS
documentation reports keep them) are under ``variables``; ``unit_of_observation`` and
``unit_id`` say what ``sdc`` counts units by.
"""

from __future__ import annotations

import json
from typing import Any

import polars as pl

from . import __version__
from .rules import LINK_STATUSES, PSEUDONYM_HEX
from .spec import Column, Spec

FOOTER_KEY = "healthdcat:dataset"
FOOTER_VARIABLES = "data_ingest:variables"
CONTEXT = {
    "dcat": "http://www.w3.org/ns/dcat#",
    "dct": "http://purl.org/dc/terms/",
    "healthdcatap": "http://healthdataportal.eu/ns/health#",
    "csvw": "http://www.w3.org/ns/csvw#",
    "dpv": "https://w3id.org/dpv#",
}

PSEUDONYM_METHOD = (f"HMAC-SHA256 of the normalised identifier under a per-kind key derived from the "
                    f"master key; leftmost {PSEUDONYM_HEX * 4} bits, lowercase hex")


def datatype(dtype: pl.DataType) -> str:
    """An XSD-style name for a polars type (CSVW datatype)."""
    if dtype == pl.String or dtype == pl.Categorical:
        return "string"
    if dtype.is_integer():
        return "integer"
    if dtype.is_float():
        return "double"
    if dtype == pl.Date:
        return "date"
    if dtype == pl.Datetime:
        return "dateTime"
    if dtype == pl.Boolean:
        return "boolean"
    return str(dtype)


def _generalisation(c: Column) -> str | None:
    if c.action != "generalise":
        return None
    if c.to == "bands":
        return "bands with lower bounds " + ", ".join(f"{b:g}" for b in (c.bands or ()))
    if c.to == "topcode":
        parts = []
        if c.top is not None:
            parts.append(f"top-coded at {c.top:g}")
        if c.bottom is not None:
            parts.append(f"bottom-coded at {c.bottom:g}")
        return ", ".join(parts)
    return {"year": "date to year", "year-month": "date to year-month",
            "pc4": "6-character postcode to its 4 digits"}[c.to]


def variables(spec: Spec, schema: dict[str, pl.DataType], source_labels: dict[str, str],
              source_value_labels: dict[str, dict[str, str]]) -> list[dict[str, Any]]:
    """One description per output column, in output order."""
    out: list[dict[str, Any]] = []
    by_name = {c.name: c for c in spec.kept}
    for name, dtype in schema.items():
        if name.startswith("_"):
            continue
        c = by_name.get(name)
        v: dict[str, Any] = {"name": name, "datatype": datatype(dtype)}
        if c is None and name == spec.unit_id:  # created for linkage
            v.update(title=f"{spec.unit} (pseudonym)", role="unit_id", pseudonym_kind=spec.unit_id_kind,
                     description="Empty in the source (no identifier); filled by probabilistic linkage "
                                 "when published.")
        elif c is None and name.endswith("_status"):
            base = name[: -len("_status")]
            v.update(title=f"link status of {base}", role="link_status",
                     value_labels={"valid": "identifier valid, pseudonymised",
                                   "invalid": "identifier failed its checks (e.g. BSN 11-test); no pseudonym",
                                   "missing": "no identifier in the source",
                                   "probabilistic": "linked probabilistically by ingest link"},
                     codes=list(LINK_STATUSES))
        elif c is not None:
            v["title"] = c.label or source_labels.get(c.source) or name
            if c.description:
                v["description"] = c.description
            if c.unit:
                v["unit"] = c.unit
            vl = c.value_labels or (source_value_labels.get(c.source) if c.action in ("keep",) else None)
            if vl:
                v["value_labels"] = vl
            if c.codes:
                v["codes"] = list(c.codes)
            v["action"] = c.action
            v["source_column"] = c.source
            g = _generalisation(c)
            if g:
                v["generalisation"] = g
            if c.action == "pseudonymise":
                v["pseudonym_kind"] = c.kind
                v["pseudonym_method"] = PSEUDONYM_METHOD
                if name == spec.unit_id:
                    v["role"] = "unit_id"
            if c.action == "empty":
                v["description"] = "emptied at ingest (all values removed)"
        out.append(v)
    return out


def dataset_record(spec: Spec, version: str | None, variables_: list[dict[str, Any]],
                   provenance: dict[str, Any], stats: dict[str, Any] | None = None,
                   deidentification: dict[str, Any] | None = None) -> dict[str, Any]:
    md: dict[str, Any] = {
        "@context": CONTEXT,
        "@type": "dcat:Dataset",
        "identifier": f"{spec.dataset}@{version}" if version else spec.dataset,
        "dataset": spec.dataset,
        "version": version,
        "title": spec.title,
        "description": spec.description,
        "publisher": spec.publisher,
        "keyword": list(spec.keywords),
        "health_category": spec.health_category,
        "access_rights": "non-public",
        "applicable_legislation": ["GDPR (EU) 2016/679", "EHDS (EU) 2025/327"],
        "has_personal_data": True,
        "has_structured_data": True,
        "spatial_coverage": spec.spatial,
        "unit_of_observation": spec.unit,
        "unit_id": ({"column": spec.unit_id, "kind": spec.unit_id_kind, "pseudonymised": True}
                    if spec.unit_id else None),
        "variables": variables_,
        "distribution": {"format": "application/vnd.apache.parquet", "files": "part-*.parquet"},
        "provenance": provenance,
    }
    if deidentification:
        md["deidentification"] = deidentification
    if stats:
        md.update(stats)
    md["software"] = f"data_ingest {__version__}"
    return md


def footer(md: dict[str, Any]) -> dict[str, str]:
    """Parquet key/value metadata for a record."""
    return {FOOTER_KEY: json.dumps(md, default=str, separators=(",", ":")),
            FOOTER_VARIABLES: json.dumps(md.get("variables", []), default=str, separators=(",", ":"))}


def read_footer(path) -> dict[str, Any] | None:
    """The record in a Parquet file's footer (None when there is none)."""
    import pyarrow.parquet as pq

    kv = pq.read_metadata(path).metadata or {}
    raw = kv.get(FOOTER_KEY.encode())
    return json.loads(raw) if raw else None


def write_parquet(df: pl.DataFrame, path, md: dict[str, Any], compression: str = "zstd",
                  string_views: bool = False, compress_dictionary_columns: bool = True) -> None:
    """Write a frame with the record in the footer and each variable's label (and value labels)
    as Arrow field metadata. Pseudonym columns (random hex: incompressible) are stored without
    compression or dictionary, which saves time for nothing lost.

    ``compress_dictionary_columns=False`` (inside the store, where lz4 is used): a column with
    few distinct values (judged on its first rows) is dictionary-encoded and not compressed, as
    its pages hold little more than run-length and bit-packed codes, which lz4 does not shrink;
    a column with many distinct values is compressed and not dictionary-encoded."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    # string_view hands polars' strings over without a copy (used inside the store); published
    # files use plain strings, which every Parquet reader knows.
    t = df.to_arrow(compat_level=pl.CompatLevel.newest()) if string_views else df.to_arrow()
    by_name = {v["name"]: v for v in md.get("variables", [])}
    fields = []
    for f in t.schema:
        v = by_name.get(f.name, {})
        meta = {"label": v.get("title", f.name)}
        if v.get("value_labels"):
            meta["value_labels"] = json.dumps(v["value_labels"])
        if v.get("description"):
            meta["description"] = v["description"]
        fields.append(f.with_metadata(meta))
    t = t.cast(pa.schema(fields, metadata=footer(md)))
    random = {n for n, v in by_name.items() if v.get("pseudonym_kind")}
    # Floating-point columns (amounts, measurements) rarely repeat: building a dictionary for
    # them costs more time than it saves space.
    no_dict = random | {f.name for f in t.schema if pa.types.is_floating(f.type)}
    codec = "none" if compression == "uncompressed" else compression
    plain = set()
    if not compress_dictionary_columns:
        sample = df.head(SAMPLE_ROWS)
        many = {n for n in df.columns if n not in no_dict and sample[n].n_unique() > sample.height // 2}
        no_dict |= many
        plain = {n for n in df.columns if n not in no_dict}
    pq.write_table(t, path, compression={n: ("none" if n in random or n in plain else codec) for n in t.column_names},
                   use_dictionary=[n for n in t.column_names if n not in no_dict], write_statistics=False)


SAMPLE_ROWS = 20_000  # rows that decide whether a column has few distinct values (see write_parquet)
