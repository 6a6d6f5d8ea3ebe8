"""Opening source files: format detection by content, and clear messages for bad files.

A source is opened as a polars LazyFrame. CSV is read with every column as text (the spec's
types are applied and checked by the pipeline, so a bad value can be reported by row and
column); Parquet is scanned lazily; SPSS and Stata files go through pyreadstat, which also gives
their variable and value labels.
"""

from __future__ import annotations

import codecs
import csv
import hashlib
import io
from dataclasses import dataclass, field
from pathlib import Path

import polars as pl

from .errors import IngestError

EXTENSIONS = {
    ".csv": "csv", ".txt": "csv", ".tsv": "csv",
    ".parquet": "parquet", ".pq": "parquet",
    ".sav": "spss", ".zsav": "spss",
    ".dta": "stata",
}


@dataclass
class Source:
    path: Path
    format: str
    lf: pl.LazyFrame
    columns: list[str]
    text: bool  # all columns are text (CSV): the spec's types are parsed from it
    delimiter: str = ","
    labels: dict[str, str] = field(default_factory=dict)  # column labels from SPSS/Stata
    value_labels: dict[str, dict[str, str]] = field(default_factory=dict)
    n_rows: int | None = None
    tmp_files: list[Path] = field(default_factory=list)
    read_path: Path | None = None  # CSV: the UTF-8 file polars reads (the source, or its transcoded copy)
    row_groups: list[int] | None = None  # Parquet: rows per row group

    def scan_csv(self, schema_overrides: dict[str, pl.DataType] | None = None) -> pl.LazyFrame:
        """The CSV as text columns, except those in ``schema_overrides`` (parsed while reading)."""
        return _scan_csv(self.read_path or self.path, self.delimiter, schema_overrides)


def sniff(head: bytes, tail: bytes) -> str | None:
    """What the bytes say the file is (None: plain text or unknown)."""
    if head.startswith(b"PAR1") and tail.endswith(b"PAR1"):
        return "parquet"
    if head.startswith(b"PAR1"):
        return "parquet (truncated)"
    if head[:4] in (b"$FL2", b"$FL3"):
        return "spss"
    if head.startswith(b"<stata_dta>") or (len(head) > 2 and head[0] in (113, 114, 115) and head[1] in (1, 2)):
        return "stata"
    if head.startswith(b"PK\x03\x04"):
        return "a zip archive (an Excel workbook?)"
    if head.startswith(b"\x1f\x8b"):
        return "gzip-compressed data"
    if head.startswith(b"%PDF"):
        return "a PDF document"
    if b"\x00" in head[:65536]:
        return "binary data"
    return None


def file_sha256(path: Path, stop=None) -> str | None:
    """SHA-256 of a file's bytes (one reused 4 MiB buffer). ``stop`` (a threading.Event): when it
    is set the hashing stops and None is returned (the run it was for has ended)."""
    h = hashlib.sha256()
    buf = bytearray(1 << 22)
    view = memoryview(buf)
    with open(path, "rb", buffering=0) as f:
        while n := f.readinto(buf):
            if stop is not None and stop.is_set():
                return None
            h.update(view[:n])
    return h.hexdigest()


def detect_format(path: Path, declared: str | None = None) -> str:
    """The format of ``path``, from its extension (or the spec), checked against its content."""
    name = str(path)
    if not path.exists():
        raise IngestError("file not found", file=name)
    if path.is_dir():
        raise IngestError("is a folder, not a file", file=name)
    size = path.stat().st_size
    if size == 0:
        raise IngestError("the file is empty", file=name)
    fmt = declared or EXTENSIONS.get(path.suffix.lower())
    if fmt is None:
        raise IngestError(f"unknown file type '{path.suffix}' (use .csv, .parquet, .sav or .dta, "
                          "or set [source] format)", file=name)
    with open(path, "rb") as f:
        head = f.read(65536)
        f.seek(max(0, size - 8))
        tail = f.read(8)
    seen = sniff(head, tail)
    if fmt == "csv":
        if seen is not None:
            raise IngestError(f"is not a CSV text file: its content is {seen}", file=name)
    elif seen != fmt:
        what = seen or "text"
        raise IngestError(f"is not a {fmt} file: its content is {what}", file=name)
    return fmt


def open_source(path: str | Path, spec, staging: Path | None = None) -> Source:
    """Open ``path`` as the spec describes; raises :class:`IngestError` for a bad file."""
    path = Path(path)
    fmt = detect_format(path, spec.format)
    if fmt == "csv":
        return _open_csv(path, spec, staging)
    if fmt == "parquet":
        return _open_parquet(path)
    return _open_readstat(path, fmt)


def _open_parquet(path: Path) -> Source:
    import pyarrow.parquet as pq

    try:
        md = pq.read_metadata(path)
        lf = pl.scan_parquet(path)
        columns = list(lf.collect_schema().names())
    except Exception as e:  # pyarrow/polars say why in their own words
        raise IngestError(f"cannot read as Parquet: {_first_line(e)}", file=str(path)) from None
    if md.num_rows == 0:
        raise IngestError("the file has no rows", file=str(path))
    return Source(path, "parquet", lf, columns, text=False, n_rows=md.num_rows,
                  row_groups=[md.row_group(i).num_rows for i in range(md.num_row_groups)])


def _open_csv(path: Path, spec, staging: Path | None) -> Source:
    enc = codecs.lookup(spec.encoding).name
    read_path = path
    tmp: list[Path] = []
    if enc not in ("utf-8", "utf-8-sig"):
        # polars reads UTF-8 only: transcode (strictly) into the staging folder first.
        if staging is None:
            raise IngestError(f"encoding {spec.encoding} needs a staging folder", file=str(path))
        read_path = staging / "source-utf8.csv"
        _transcode(path, read_path, enc, spec.delimiter)
        tmp.append(read_path)
    else:
        _check_utf8_header(path, spec.delimiter)
    header = _read_header(read_path, spec.delimiter, str(path))
    if not any(h.strip() for h in header):
        raise IngestError("the first line (the header) is empty", file=str(path))
    dups = sorted({h for h in header if header.count(h) > 1})
    if dups:
        raise IngestError(f"the header names column(s) twice: {', '.join(dups)}", file=str(path))
    lf = _scan_csv(read_path, spec.delimiter)
    return Source(path, "csv", lf, header, text=True, delimiter=spec.delimiter, tmp_files=tmp,
                  read_path=read_path)


def _scan_csv(path: Path, delimiter: str, schema_overrides: dict[str, pl.DataType] | None = None) -> pl.LazyFrame:
    return pl.scan_csv(path, separator=delimiter, infer_schema=False, encoding="utf8", raise_if_empty=True,
                       has_header=True, schema_overrides=schema_overrides or None)


def _read_header(path: Path, delimiter: str, name: str) -> list[str]:
    with open(path, encoding="utf-8-sig", errors="replace", newline="") as f:
        try:
            row = next(csv.reader(f, delimiter=delimiter))
        except StopIteration:
            raise IngestError("the file is empty", file=name) from None
        if f.readline() == "" and not f.read(1):
            raise IngestError("the file has a header but no data rows", file=name)
    return row


def _check_utf8_header(path: Path, delimiter: str) -> None:
    with open(path, "rb") as f:
        first = f.readline()
    try:
        first.decode("utf-8")
    except UnicodeDecodeError:
        raise IngestError("the header is not valid UTF-8; set [source] encoding (e.g. 'latin-1')",
                          file=str(path), line=1, row=0) from None


def locate_bad_utf8(path: Path, delimiter: str) -> IngestError:
    """Find the first byte that is not UTF-8; name its row (data rows from 1), line and column."""
    dec = codecs.getincrementaldecoder("utf-8")("strict")
    header: list[str] | None = None
    line_no = 0
    with open(path, "rb") as f:
        for raw in f:
            line_no += 1
            try:
                text = dec.decode(raw)
            except UnicodeDecodeError as e:
                col = raw[: e.start].count(delimiter.encode())
                name = header[col] if header and col < len(header) else f"#{col + 1}"
                return IngestError("the text is not valid UTF-8 (wrong encoding? set [source] encoding, "
                                   "e.g. 'latin-1')", file=str(path), row=line_no - 1, line=line_no,
                                   column=name)
            if header is None:
                header = next(csv.reader(io.StringIO(text.lstrip("\ufeff")), delimiter=delimiter))
    return IngestError("the text is not valid UTF-8", file=str(path))


def locate_ragged(path: Path, delimiter: str) -> IngestError | None:
    """Find the first row with more fields than the header."""
    with open(path, encoding="utf-8-sig", errors="replace", newline="") as f:
        reader = csv.reader(f, delimiter=delimiter)
        header = next(reader, [])
        for i, row in enumerate(reader, start=1):
            if len(row) > len(header):
                return IngestError(f"has {len(row)} fields but the header has {len(header)} "
                                   "(wrong delimiter or an unquoted delimiter in a value?)",
                                   file=str(path), row=i, line=reader.line_num)
    return None


def _transcode(src: Path, dst: Path, encoding: str, delimiter: str) -> None:
    dec = codecs.getincrementaldecoder(encoding)("strict")
    line_no = 0
    with open(src, "rb") as fin, open(dst, "w", encoding="utf-8", newline="") as fout:
        for raw in fin:
            line_no += 1
            try:
                fout.write(dec.decode(raw))
            except UnicodeDecodeError:
                raise IngestError(f"the text is not valid {encoding}", file=str(src),
                                  row=line_no - 1, line=line_no) from None
        fout.write(dec.decode(b"", final=True))


def _open_readstat(path: Path, fmt: str) -> Source:
    try:
        import pyreadstat
    except ImportError:  # pragma: no cover - pyreadstat is in the ingest extra
        raise IngestError(f"reading {fmt} files needs pyreadstat (pip install '.[ingest]')",
                          file=str(path)) from None
    reader = pyreadstat.read_sav if fmt == "spss" else pyreadstat.read_dta
    try:
        df, meta = reader(str(path), output_format="polars")
    except Exception as e:
        raise IngestError(f"cannot read as {fmt.upper()}: {_first_line(e)}", file=str(path)) from None
    if df.height == 0:
        raise IngestError("the file has no rows", file=str(path))
    labels = {k: v for k, v in (meta.column_names_to_labels or {}).items() if v}
    vlabels = {}
    for col, vl in (meta.variable_value_labels or {}).items():
        vlabels[col] = {_code_text(k): str(v) for k, v in vl.items()}
    return Source(path, fmt, df.lazy(), list(df.columns), text=False, labels=labels,
                  value_labels=vlabels, n_rows=df.height)


def _code_text(k) -> str:
    if isinstance(k, float) and k.is_integer():
        return str(int(k))
    return str(k)


def _first_line(e: BaseException) -> str:
    text = str(e).strip() or type(e).__name__
    return text.splitlines()[0]


def delimiter_hint(header: list[str], delimiter: str) -> str:
    """A hint when the header looks split on the wrong character."""
    if len(header) == 1:
        for cand, name in ((";", "';'"), ("\t", "tab"), ("|", "'|'"), (",", "','")):
            if cand != delimiter and cand in header[0]:
                return f" (the header looks {name}-delimited: set [source] delimiter)"
    return ""
