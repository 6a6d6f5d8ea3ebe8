"""Helpers for researchers inside the workspace container.

``connect()`` opens DuckDB with one view per dataset published to this project (``/data``)::

    from tw_workspace import connect, datasets
    con = connect()
    con.sql("select sex, count(*) from persons group by all")
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

DATA_DIR = Path(os.environ.get("WORKSPACE_DATA", "/data"))
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def datasets(data_dir: Path | str = DATA_DIR) -> dict[str, dict]:
    """The datasets of this project: name -> metadata (empty dict when none was published)."""
    out: dict[str, dict] = {}
    root = Path(data_dir)
    if not root.is_dir():
        return out
    for d in sorted(root.iterdir()):
        if d.is_dir() and _NAME.match(d.name) and any(d.glob("*.parquet")):
            meta = d / "metadata.json"
            try:
                out[d.name] = json.loads(meta.read_text()) if meta.is_file() else {}
            except (OSError, ValueError):
                out[d.name] = {}
    return out


def connect(data_dir: Path | str = DATA_DIR, database: str = ":memory:", **config):
    """A DuckDB connection with a view per dataset over ``/data/<dataset>/*.parquet``."""
    import duckdb

    con = duckdb.connect(database, config=config)
    for name in datasets(data_dir):
        glob = str(Path(data_dir) / name / "*.parquet").replace("'", "''")
        con.execute(f'CREATE OR REPLACE VIEW "{name}" AS SELECT * FROM read_parquet(\'{glob}\')')
    return con


__all__ = ["connect", "datasets", "DATA_DIR"]
