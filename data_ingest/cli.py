"""The ``ingest`` command line: a thin shell around the Python API.

Errors a data manager can act on are printed as one line (``ingest: error: FILE, row R,
column 'C': what is wrong``) with exit status 2; nothing is written. Progress goes to stderr
(only on a terminal), summaries to stdout.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from contextlib import contextmanager
from pathlib import Path

from . import __version__
from .errors import IngestError


def _console(stderr: bool = False):
    from rich.console import Console

    c = Console(stderr=stderr, highlight=False, soft_wrap=True)
    if not c.is_terminal:  # piped or logged: wide enough for the tables
        c = Console(stderr=stderr, highlight=False, soft_wrap=True, width=160)
    return c


class RichReporter:
    """Progress bars for each stage of a command (stderr, only on a terminal)."""

    def __init__(self):
        from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

        err = _console(stderr=True)
        self.progress = Progress(SpinnerColumn(finished_text="[green]✓"), TextColumn("{task.description}"),
                                 BarColumn(), TimeElapsedColumn(), console=err, disable=not err.is_terminal)

    def __enter__(self):
        self.progress.start()
        return self

    def __exit__(self, *exc):
        self.progress.stop()

    @contextmanager
    def stage(self, text: str, total: int | None = None):
        task = self.progress.add_task(text, total=total)
        yield lambda n=1: self.progress.advance(task, n)
        self.progress.update(task, total=total or 1, completed=total or 1)

    def info(self, text: str) -> None:
        self.progress.console.print(text)


# --- commands ----------------------------------------------------------------------------------


def cmd_keys_init(a) -> int:
    from .keys import default_key_file, init_key

    path = Path(a.key_file) if a.key_file else default_key_file(a.store)
    kid = init_key(path, a.store)
    print(f"created key file {path} (mode 0600), key id {kid}")
    print("keep it out of the store, out of backups that leave the trusted zone, and out of version control")
    return 0


def cmd_keys_id(a) -> int:
    from .keys import default_key_file, load_key
    from .kdf import key_id

    path = Path(a.key_file) if a.key_file else default_key_file(a.store)
    print(key_id(load_key(path, a.store)))
    return 0


def _print_add(res, out) -> None:
    from rich.table import Table

    if res.reused:
        out.print(f"[bold]{res.dataset}@{res.version}[/] already holds this input (same source, spec, key and "
                  f"objections): nothing written")
        return
    t = Table(title=f"{res.dataset}@{res.version}", show_header=False, box=None)
    t.add_row("rows in", f"{res.rows_in:,}")
    t.add_row("rows out", f"{res.rows_out:,}")
    t.add_row("objector records removed", f"{res.objectors_removed:,}")
    if res.units is not None:
        t.add_row("units (distinct valid ids)", f"{res.units:,}")
    for col, counts in res.status.items():
        t.add_row(f"{col}: valid / invalid / missing",
                  " / ".join(f"{counts.get(k, 0):,}" for k in ("valid", "invalid", "missing")))
    for col, n in res.nulled.items():
        t.add_row(f"{col}: invalid values set to null", f"{n:,}")
    if res.dropped_unnamed:
        t.add_row("columns not in the spec (dropped)", ", ".join(res.dropped_unnamed))
    if res.dropped:
        t.add_row("columns dropped by the spec", ", ".join(res.dropped))
    if res.status:
        from .native import status

        t.add_row("pseudonyms computed by", status())
    t.add_row("time", f"{res.seconds:.2f} s ({res.rows_per_second:,.0f} rows/s)")
    t.add_row("written to", str(res.path))
    out.print(t)


def cmd_add(a) -> int:
    from .pipeline import add

    with RichReporter() as rep:
        res = add(a.source, a.spec, a.store, a.key_file, objections=a.objections, reporter=rep,
                  compression=a.compression)
    _print_add(res, _console())
    return 0


def cmd_objections_add(a) -> int:
    from . import objections as obj
    from .keys import default_key_file, load_key
    from .store import Store

    store = Store(a.store)
    store.ensure()
    master = load_key(Path(a.key_file) if a.key_file else default_key_file(a.store), a.store)
    df = obj.read_objection_file(a.file, a.kind, master)
    added = obj.register(store, a.kind, df)
    invalid = int((~df["valid"]).sum())
    print(f"{df.height} objection(s) read, {added} new in the register"
          + (f"; {invalid} fail the {a.kind} checks (kept, they match only identical invalid ids)" if invalid else ""))
    print("they apply to every later `ingest add` and `ingest publish`")
    return 0


def _print_link(res, out) -> None:
    from rich.table import Table

    r = res.report
    out.print(f"[bold]linkage run {res.run_id}[/]" + (" (already done: same inputs)" if res.reused else ""))
    t = Table(title="sources")
    for c in ("dataset", "records", "units", "valid", "invalid", "missing", "% valid"):
        t.add_column(c, justify="left" if c == "dataset" else "right")
    for s in r["sources"]:
        t.add_row(s["dataset"] + (" (spine)" if s["spine"] else ""), f"{s['records']:,}", f"{s['units'] or 0:,}",
                  f"{s['valid']:,}", f"{s['invalid']:,}", f"{s['missing']:,}", str(s["pct_valid"]))
    out.print(t)
    t = Table(title="match rates")
    for c in ("a", "b", "method", "records of a linked", "% of a", "% units a in b", "% units b in a"):
        t.add_column(c)
    for p in r["pairs"]:
        t.add_row(p["a"], p["b"], p["method"], f"{p.get('records_a_linked', 0):,}", str(p.get("pct_records_a_linked")),
                  str(p.get("pct_units_a_in_b", "")), str(p.get("pct_units_b_in_a", "")))
    out.print(t)
    for p in r["probabilistic"]:
        e = p["evaluation"]
        ev = (f"evaluated on {e['test_records']:,} records with a known id: precision {e['precision']}, "
              f"recall {e['recall']}" if e["test_records"] else "no records with a known id to evaluate on")
        tied = p.get("records_with_tied_best_candidates_not_linked", 0)
        out.print(f"probabilistic {p['dataset']} → {p['spine']}: {p['linked']:,} of {p['records_without_valid_id']:,} "
                  f"linked" + (f" ({tied:,} ambiguous: tied best candidates, not linked)" if tied else "") + f"; {ev}")
    for d in r["duplicates"]:
        if d["units_with_several_records"] and "spine" in d["note"]:
            out.print(f"[yellow]duplicates in the spine {d['dataset']}: {d['units_with_several_records']} units[/]")
    for b in r["bias"]:
        worst = []
        for label, rows in b["by"].items():
            for row in rows:
                if row["records"] >= 20:
                    key = next(k for k in row if k not in ("records", "linked", "pct_linked"))
                    worst.append((row["pct_linked"], f"{label}={row[key]}"))
        worst.sort()
        lo = ", ".join(f"{g} {p}%" for p, g in worst[:3])
        out.print(f"{b['dataset']}: {b['pct_linked']}% linked overall; lowest: {lo}")
    out.print(f"report: {res.path / 'report.md'}")


def cmd_link(a) -> int:
    from .linkage import link

    with RichReporter() as rep:
        res = link(a.store, a.datasets or None, threshold=a.threshold, reporter=rep)
    _print_link(res, _console())
    return 0


def cmd_publish(a) -> int:
    from rich.table import Table

    from .publish import publish

    with RichReporter() as rep:
        results = publish(a.store, a.datasets, a.project, a.key_file, reporter=rep)
    t = Table(title=f"published to project {a.project}")
    for c in ("dataset", "records", "units", "probabilistic links", "objectors removed", "", "folder"):
        t.add_column(c)
    for r in results:
        t.add_row(f"{r.dataset}@{r.version}", f"{r.records:,}", f"{r.units or 0:,}", f"{r.probabilistic:,}",
                  f"{r.objectors_removed:,}", "unchanged" if r.reused else "written", str(r.path))
    _console().print(t)
    return 0


def cmd_catalog(a) -> int:
    from rich.table import Table

    from .store import Store

    rows = Store(a.store).catalog()
    if a.dataset:
        rows = [r for r in rows if r["dataset"] == a.dataset]
    if a.json:
        print(json.dumps(rows, indent=2, default=str))
        return 0
    if not rows:
        print(f"the store {a.store} holds no datasets")
        return 0
    t = Table(title=f"catalogue of {a.store}")
    for c in ("dataset", "title", "unit (id)", "records", "units", "temporal coverage", "created", "published to"):
        t.add_column(c, justify="right" if c in ("records", "units") else "left")
    for r in rows:
        tc = r.get("temporal_coverage") or {}
        t.add_row(r["identifier"], r["title"], f"{r['unit_of_observation']} ({(r.get('unit_id') or {}).get('column', '-')})",
                  f"{r.get('number_of_records', 0):,}", f"{r.get('number_of_units') or 0:,}",
                  f"{tc.get('start', '')} .. {tc.get('end', '')}" if tc else "",
                  r["provenance"].get("created", "")[:10], ", ".join(r.get("published_to", [])))
    _console().print(t)
    if a.dataset:
        for r in rows:
            v = Table(title=f"variables of {r['identifier']}")
            for c in ("name", "type", "label", "action", "value labels"):
                v.add_column(c)
            for var in r["variables"]:
                vl = var.get("value_labels") or {}
                v.add_row(var["name"], var["datatype"], var.get("title", ""), var.get("action", var.get("role", "")),
                          ", ".join(f"{k}={x}" for k, x in list(vl.items())[:6]) + (" ..." if len(vl) > 6 else ""))
            _console().print(v)
    return 0


def cmd_demo(a) -> int:
    from .demo import run_demo
    from .keys import default_key_file

    key_file = Path(a.key_file) if a.key_file else default_key_file(a.store)
    with RichReporter() as rep:
        s = run_demo(a.store, key_file, a.sources, persons=a.persons, seed=a.seed, reporter=rep)
    out = _console()
    if s.get("key_created"):
        out.print(f"created key file {key_file}, key id {s['key_created']}")
    for r in s["added"]:
        what = "unchanged" if r.reused else f"{r.rows_out:,} records ({r.objectors_removed} objector records removed)"
        out.print(f"add     {r.dataset}@{r.version}: {what}")
    lk = s["link"]
    out.print(f"link    {lk.run_id}" + (" (unchanged)" if lk.reused else "") + f": report {lk.path / 'report.md'}")
    for r in s["published"]:
        out.print(f"publish {r.project}/{r.dataset} from {r.dataset}@{r.version}: "
                  + ("unchanged" if r.reused else f"{r.records:,} records, {r.probabilistic:,} linked probabilistically"))
    return 0


# --- parser ------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    from .store import default_store

    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--store", default=str(default_store()),
                        help="the store folder (default $WORKSPACE_STORE or var/store)")
    common.add_argument("--key-file", default=None,
                        help="the master key file (default $INGEST_KEY_FILE or keys/master.key beside the store)")
    p = argparse.ArgumentParser(prog="ingest", description="Pseudonymise, link and publish data for research projects.")
    p.add_argument("--version", action="version", version=f"data_ingest {__version__}")
    sub = p.add_subparsers(dest="command", required=True)

    keys = sub.add_parser("keys", help="the pseudonymisation key").add_subparsers(dest="keys_command", required=True)
    k = keys.add_parser("init", parents=[common], help="create the master key file (refuses to overwrite)")
    k.set_defaults(func=cmd_keys_init)
    k = keys.add_parser("id", parents=[common], help="show the key's public id")
    k.set_defaults(func=cmd_keys_id)

    s = sub.add_parser("add", parents=[common], help="ingest a source file as a new dataset version")
    s.add_argument("source", help="CSV, Parquet, SPSS (.sav) or Stata (.dta) file")
    s.add_argument("--spec", required=True, help="the spec (TOML): dataset, unit and an action per column")
    s.add_argument("--objections", help="a list of identifiers of people who objected (one per line)")
    s.add_argument("--compression", default="lz4", choices=["lz4", "zstd", "snappy", "uncompressed"],
                   help="Parquet compression in the store (default lz4)")
    s.set_defaults(func=cmd_add)

    o = sub.add_parser("objections", help="the objection register").add_subparsers(dest="obj_command", required=True)
    s = o.add_parser("add", parents=[common], help="register objections (applied to later add and publish)")
    s.add_argument("file")
    s.add_argument("--kind", default="bsn", choices=["bsn", "id"])
    s.set_defaults(func=cmd_objections_add)

    s = sub.add_parser("link", parents=[common], help="link datasets and write a linkage report")
    s.add_argument("datasets", nargs="*", help="DATASET[@VERSION] (default: the newest version of all)")
    s.add_argument("--threshold", type=float, default=0.9, help="match probability to accept a link (default 0.9)")
    s.set_defaults(func=cmd_link)

    s = sub.add_parser("publish", parents=[common], help="publish datasets to a project, with project pseudonyms")
    s.add_argument("datasets", nargs="+", metavar="DATASET[@VERSION]")
    s.add_argument("--project", required=True)
    s.set_defaults(func=cmd_publish)

    s = sub.add_parser("catalog", parents=[common], help="list datasets, versions and their metadata")
    s.add_argument("dataset", nargs="?")
    s.add_argument("--json", action="store_true", help="print the full metadata as JSON")
    s.set_defaults(func=cmd_catalog)

    s = sub.add_parser("demo", parents=[common], help="generate synthetic sources and run the whole pipeline")
    s.add_argument("--sources", help="where to write the demo sources (default demo-sources beside the store)")
    s.add_argument("--persons", type=int, default=20_000)
    s.add_argument("--seed", type=int, default=7)
    s.set_defaults(func=cmd_demo)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except IngestError as e:
        print(f"ingest: error: {e.one_line()}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("ingest: interrupted; nothing was written", file=sys.stderr)
        return 130
    except Exception as e:  # noqa: BLE001 - never a traceback for the data manager
        if os.environ.get("INGEST_DEBUG"):
            raise
        msg = " ".join(str(e).split())[:300]
        print(f"ingest: internal error: {type(e).__name__}: {msg} (nothing was written; INGEST_DEBUG=1 shows "
              "a traceback)", file=sys.stderr)
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
