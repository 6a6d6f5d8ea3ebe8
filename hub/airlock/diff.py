"""The difference between a researcher's local preview of a table and the airlock's own result.

Pure: two table JSONs (sdc's stable format) in, a short report out. The checker sees it beside
the output; what is released is always the airlock's result.
"""

from __future__ import annotations

import json


def _cells(doc: dict) -> dict[str, dict]:
    return {json.dumps(c.get("key"), sort_keys=True): c for c in doc.get("cells") or []}


def table_diff(preview: dict | None, trusted: dict, limit: int = 50) -> dict:
    """``{"same": bool, "reason": str, "differences": [...], "count": n}``."""
    if not preview:
        return {"same": False, "reason": "no preview was sent", "differences": [], "count": 0}
    if not isinstance(preview, dict) or not isinstance(preview.get("cells"), list):
        return {"same": False, "reason": "the preview is not a table", "differences": [],
                "count": 0}
    diffs = []
    for field in ("dimensions", "stat"):
        if preview.get(field) != trusted.get(field):
            diffs.append({"field": field, "preview": preview.get(field),
                          "airlock": trusted.get(field)})
    pol_p = (preview.get("policy") or {}).get("name")
    pol_t = (trusted.get("policy") or {}).get("name")
    if pol_p != pol_t:
        diffs.append({"field": "policy", "preview": pol_p, "airlock": pol_t})
    a, b = _cells(preview), _cells(trusted)
    for key in sorted(set(a) | set(b)):
        pa, tb = a.get(key), b.get(key)
        if pa is None or tb is None:
            diffs.append({"cell": json.loads(key), "preview": "absent" if pa is None else "present",
                          "airlock": "absent" if tb is None else "present"})
            continue
        for f in ("value", "status"):
            if pa.get(f) != tb.get(f):
                diffs.append({"cell": json.loads(key), "field": f, "preview": pa.get(f),
                              "airlock": tb.get(f)})
    return {
        "same": not diffs,
        "reason": "the preview matches the airlock's recomputation" if not diffs else
                  f"{len(diffs)} difference(s) between the preview and the airlock's result",
        "differences": diffs[:limit],
        "count": len(diffs),
    }
