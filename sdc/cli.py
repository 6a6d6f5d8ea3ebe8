"""The ``sdc`` command line: a thin shell around :func:`sdc.table`, :func:`sdc.figure`,
:func:`sdc.model` and the policies.

    sdc table DATA --rows A[,B] [--cols C[,D]] [--value V --stat sum|mean|count|median|pNN|min|max]
              [--unit ID] [--hierarchy CHILD:PARENT]... [--policy NAME|FILE.toml]
              [--format json|csv|html|xlsx] [-o FILE] [--reveal]
    sdc figure DATA KIND [--x X] [--y Y] [--by B] [--unit ID] [--option KEY=VALUE]...
               [--policy NAME|FILE.toml] [--format json|csv|png|html] [-o FILE] [--reveal]
    sdc model DATA FORMULA [--family ols|logit|probit|poisson] [--unit ID]
              [--policy NAME|FILE.toml] [--format json|csv|html] [-o FILE] [--reveal]
    sdc policies [--json]

DATA is a Parquet file, folder or glob, a CSV file, or a SQL query (``"SELECT ... FROM
'x.parquet'"``, run by an in-memory DuckDB).  Bad input exits with status 2 and one line on
stderr (``sdc: error: ...``); set ``SDC_DEBUG=1`` to get the traceback of an internal error.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Sequence

__all__ = ["main", "build_parser"]


class _OneLineError(Exception):
    pass


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line, not usage + message."""

    def error(self, message: str):  # type: ignore[override]
        raise _OneLineError(f"{message} (see '{self.prog} --help')")


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="sdc", description="Statistical disclosure control: checked tables and policies.")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    t = sub.add_parser("table", help="compute a table with all margins and check it against a policy",
                       description="Compute a table with all margins and check it against a policy.")
    t.add_argument("data", metavar="DATA", help="Parquet file/folder/glob, CSV file, or a SQL query")
    t.add_argument("--rows", required=True, help="row dimension column(s), comma separated")
    t.add_argument("--cols", default="", help="column dimension column(s), comma separated")
    t.add_argument("--value", default=None, help="value column (for sum, mean, median, pNN, min, max)")
    t.add_argument("--stat", default=None, help="count (default without --value), sum, mean (default with "
                   "--value), median, pNN, min, max")
    t.add_argument("--hierarchy", action="append", default=[], metavar="CHILD:PARENT",
                   help="CHILD is nested in PARENT (repeatable); subtotals become cells")
    _common(t, "table", unit_help="unit id column: rows are summed per unit first")

    f = sub.add_parser("figure", help="draw a figure from checked aggregates",
                       description="Draw a figure from checked aggregates (histogram, bar, line, box, "
                                   "binned_scatter, km).  A raw scatter plot is refused.")
    f.add_argument("data", metavar="DATA", help="Parquet file/folder/glob, CSV file, or a SQL query")
    f.add_argument("kind", metavar="KIND", help="histogram, bar, line, box, binned_scatter or km")
    f.add_argument("--x", default=None, help="x column (km: time)")
    f.add_argument("--y", default=None, help="y column (km: event 0/1)")
    f.add_argument("--by", default=None, help="group column")
    f.add_argument("--option", action="append", default=[], metavar="KEY=VALUE",
                   help="kind option, e.g. bins=20 or range=[0,100] (VALUE is JSON, else text; repeatable)")
    _common(f, "figure")

    m = sub.add_parser("model", help="fit a regression model and check it",
                       description="Fit a regression model (formula like 'y ~ x + C(group)') and check it.")
    m.add_argument("data", metavar="DATA", help="Parquet file/folder/glob, CSV file, or a SQL query")
    m.add_argument("formula", metavar="FORMULA", help="e.g. 'income ~ age + C(sex)'")
    m.add_argument("--family", default="ols", choices=["ols", "logit", "probit", "poisson"])
    _common(m, "model")

    pp = sub.add_parser("policies", help="list the shipped policies with their numbers",
                        description="List the shipped policies with their numbers.")
    pp.add_argument("--json", action="store_true", help="print the policies as JSON")
    return p


# Output formats per command; the binary ones need -o FILE.
FORMATS = {"table": ("json", "csv", "html", "xlsx"), "figure": ("json", "csv", "png", "html"),
           "model": ("json", "csv", "html")}
BINARY_FORMATS = ("xlsx", "png")


def _common(p: argparse.ArgumentParser, command: str,
            unit_help: str = "unit id column: rules count units, not rows") -> None:
    """The options every checked output has: unit, policy, format, output file, reveal."""
    p.add_argument("--unit", default=None, help=unit_help)
    p.add_argument("--policy", default="acro", help="shipped policy name or a .toml file (default: acro)")
    p.add_argument("--format", default=None, choices=FORMATS[command],
                   help="output format (default: from -o's suffix, else json)")
    p.add_argument("-o", "--output", default=None, metavar="FILE", help="write to FILE instead of stdout")
    p.add_argument("--reveal", action="store_true",
                   help="JSON only: add the true values of what is withheld (for a checker's eyes only)")


def _format(a: argparse.Namespace) -> str:
    from sdc.errors import SdcError

    fmt = a.format
    if fmt is None:
        suffix = os.path.splitext(a.output or "")[1].lstrip(".").lower()
        fmt = suffix if suffix in FORMATS[a.command] else "json"
    if fmt in BINARY_FORMATS and not a.output:
        raise SdcError(f"--format {fmt} needs -o FILE ({fmt.upper()} is binary)")
    if a.reveal and fmt != "json":
        raise SdcError("--reveal only applies to --format json")
    return fmt


def _emit(a: argparse.Namespace, out: str | bytes) -> int:
    if isinstance(out, bytes):
        with open(a.output, "wb") as fh:
            fh.write(out)
    elif a.output:
        with open(a.output, "w", encoding="utf-8") as fh:
            fh.write(out)
    else:
        sys.stdout.write(out)
    return 0


def _option_value(text: str):
    try:
        return json.loads(text)
    except ValueError:
        return text


def _cmd_figure(a: argparse.Namespace) -> int:
    from sdc.errors import SdcError
    from sdc.figures import figure

    fmt = _format(a)
    opts = {}
    for o in a.option:
        key, eq, val = o.partition("=")
        if not eq or not key.strip():
            raise SdcError(f"--option {o!r}: expected KEY=VALUE")
        opts[key.strip()] = _option_value(val)
    f = figure(a.data, a.kind, x=a.x, y=a.y, by=a.by, unit=a.unit, policy=a.policy, **opts)
    out = {"json": lambda: json.dumps(f.to_json(reveal=a.reveal), indent=1) + "\n", "csv": f.to_csv,
           "png": f.png, "html": lambda: f.to_html() + "\n"}[fmt]()
    return _emit(a, out)


def _cmd_model(a: argparse.Namespace) -> int:
    from sdc.models import model

    fmt = _format(a)
    mo = model(a.data, a.formula, family=a.family, unit=a.unit, policy=a.policy)
    out = {"json": lambda: json.dumps(mo.to_json(reveal=a.reveal), indent=1) + "\n", "csv": mo.to_csv,
           "html": lambda: mo.to_html() + "\n"}[fmt]()
    return _emit(a, out)


def _cmd_table(a: argparse.Namespace) -> int:
    from sdc.errors import SdcError
    from sdc.table import table

    fmt = _format(a)
    stat = a.stat or ("mean" if a.value else "count")
    t = table(a.data, rows=a.rows, cols=a.cols or (), value=a.value, stat=stat, unit=a.unit,
              hierarchy=a.hierarchy or None, policy=a.policy)
    if fmt == "xlsx":
        t.to_xlsx(a.output)
        return 0
    text = {"json": lambda: t.to_json_str(reveal=a.reveal) + "\n", "csv": t.to_csv,
            "html": lambda: t.to_html(full_page=True) + "\n"}[fmt]()
    return _emit(a, text)


def _cmd_policies(a: argparse.Namespace) -> int:
    from sdc.policy import list_policies

    pols = list_policies()
    if a.json:
        sys.stdout.write(json.dumps([p.to_json() | {"source": p.source} for p in pols], indent=1) + "\n")
        return 0
    for p in pols:
        sys.stdout.write(f"{p.name}\n  {p.title}\n  {p.summary()}\n  source: {p.source}\n")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point (``sdc = "sdc.cli:main"``); returns the exit status."""
    import duckdb

    from sdc.errors import SdcError

    parser = build_parser()
    try:
        a = parser.parse_args(argv)
        if a.command is None:
            parser.print_help()
            return 2
        return {"table": _cmd_table, "figure": _cmd_figure, "model": _cmd_model,
                "policies": _cmd_policies}[a.command](a)
    except (_OneLineError, SdcError) as e:
        return _fail(str(e))
    except duckdb.Error as e:
        return _fail(f"DuckDB: {_first_line(e)}")
    except (OSError, UnicodeError) as e:
        return _fail(f"{e.strerror or e}: {e.filename}" if getattr(e, "filename", None) else str(e))
    except KeyboardInterrupt:
        return 130
    except SystemExit as e:  # --help
        return int(e.code or 0)
    except Exception as e:  # noqa: BLE001 - the contract: never a traceback
        if os.environ.get("SDC_DEBUG"):
            raise
        return _fail(f"internal error ({type(e).__name__}): {_first_line(e)}; rerun with SDC_DEBUG=1", code=3)


def _first_line(e: BaseException) -> str:
    lines = str(e).strip().splitlines()
    return lines[0] if lines else type(e).__name__


def _fail(msg: str, code: int = 2) -> int:
    msg = " ".join(msg.split())  # one line, whatever the message contained
    sys.stderr.write(f"sdc: error: {msg}\n")
    return code


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
