"""Released bytes on disk, and the helpers that make them safe to hand out.

* :class:`ReleaseStore`: content-addressed, write-once files (``<root>/ab/abcdef…``): a temporary
  file in the same folder, ``fsync``, ``os.replace``, ``fsync`` of the folder; a hash already
  present is not written again. Reading checks the hash, so a file changed on disk is never served.
* :func:`sanitize_filename`: a name that is safe on every file system and in a zip.
* :func:`neutralize_csv`: spreadsheet formula injection defused with the ``csv`` module.
* :func:`build_zip`: the deterministic zip of a released request with its ``manifest.json``.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import re
import tempfile
import unicodedata
import zipfile
from collections.abc import Mapping, Sequence
from pathlib import Path

from .auditlog import canonical_json

SHA_RE = re.compile(r"^[0-9a-f]{64}$")


class ReleaseStoreError(Exception):
    """The store is missing a file or holds one whose bytes do not match its hash."""


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class ReleaseStore:
    def __init__(self, root: Path | str):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)

    def path(self, sha: str) -> Path:
        if not SHA_RE.match(sha or ""):
            raise ValueError(f"not a sha256: {sha!r}")
        return self.root / sha[:2] / sha

    def has(self, sha: str) -> bool:
        return self.path(sha).is_file()

    def put(self, data: bytes) -> str:
        """Store ``data`` once; return its sha256. Idempotent and atomic."""
        sha = sha256(data)
        dest = self.path(sha)
        if dest.is_file():
            if dest.stat().st_size == len(data) and sha256(dest.read_bytes()) == sha:
                return sha
            # A damaged file under that name: replace it with the right bytes (atomically).
        dest.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=".tmp-", suffix=".part")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.chmod(tmp, 0o444)
            os.replace(tmp, dest)
        except BaseException:
            try:
                os.unlink(tmp)
            except FileNotFoundError:
                pass
            raise
        dfd = os.open(dest.parent, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
        return sha

    def get(self, sha: str) -> bytes:
        """The bytes stored under ``sha``; :class:`ReleaseStoreError` if missing or altered."""
        p = self.path(sha)
        try:
            data = p.read_bytes()
        except FileNotFoundError:
            raise ReleaseStoreError(f"released file {sha} is missing from the store") from None
        if sha256(data) != sha:
            raise ReleaseStoreError(f"released file {sha} was altered on disk")
        return data


# ---------------------------------------------------------------------------- file names

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
_WINDOWS_RESERVED = {"con", "prn", "aux", "nul", *(f"com{i}" for i in range(1, 10)),
                     *(f"lpt{i}" for i in range(1, 10))}
MAX_NAME = 120


def sanitize_filename(name: str, default: str = "file") -> str:
    """A safe file name made from ``name``; the extension is kept (lower-cased).

    Only the last path component is kept (``/`` and ``\\`` both separate); Unicode is folded to
    ASCII where it has an equivalent (NFKD), control characters are dropped, anything outside
    ``A-Za-z0-9._-`` becomes ``_``; no leading dot (hidden files) or dash (options), no ``..``,
    no Windows device names, at most 120 characters. Never empty.
    """
    name = str(name).replace("\\", "/").split("/")[-1]
    name = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode("ascii")
    name = "".join(ch for ch in name if ch.isprintable())
    stem, dot, ext = name.rpartition(".")
    if not dot:
        stem, ext = ext, ""
    ext = re.sub(r"[^a-z0-9]", "", ext.lower())[:10]
    stem = _UNSAFE.sub("_", stem)
    stem = re.sub(r"\.{2,}", ".", stem)
    stem = re.sub(r"_{2,}", "_", stem).strip("._- ")
    if not stem:
        stem = default
    if stem.split(".")[0].lower() in _WINDOWS_RESERVED:
        stem = "_" + stem
    limit = MAX_NAME - (len(ext) + 1 if ext else 0)
    stem = stem[:limit].rstrip("._-") or default
    return f"{stem}.{ext}" if ext else stem


def extension(name: str) -> str:
    """``.csv`` for ``a.b.CSV``; ``""`` for none."""
    _, dot, ext = name.rpartition(".")
    return f".{ext.lower()}" if dot and ext else ""


# ---------------------------------------------------------------------------- CSV

#: First characters that make a spreadsheet treat a cell as a formula (also their full-width
#: forms, which some spreadsheets normalise), and tab / carriage return (OWASP "CSV injection").
FORMULA_START = frozenset("=+-@\t\r\n\uff1d\uff0b\uff0d\uff20")
#: A plain number, which stays as it is: ``-3.5``, ``+2``, ``-1e-05``, ``-.5``.
_NUMBER = re.compile(r"^[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?$")


def neutralize_cell(cell: str) -> str:
    """Prefix ``'`` to a cell a spreadsheet would run as a formula; a plain number stays a number.

    Decision: a cell that is exactly a (signed) decimal number such as ``-3.5`` or ``+2`` is
    *not* a formula and is left as it is, so negative numbers in released tables stay numbers.
    Anything else starting with ``= + - @``, tab or CR (``-2+3``, ``=SUM(A1)``, ``@cmd``, ``+A1``)
    gets a leading apostrophe, which spreadsheets show as text.
    """
    if cell and cell[0] in FORMULA_START and not _NUMBER.match(cell):
        return "'" + cell
    return cell


def neutralize_csv(data: bytes, delimiter: str = ",") -> tuple[bytes, int]:
    """``(bytes, cells changed)``; the input bytes unchanged when no cell needed it.

    Parsed and written with :mod:`csv` (quoted cells, embedded newlines and delimiters are
    handled as a spreadsheet reads them); UTF-8 only (a BOM is kept); the line ending of the input
    (CRLF or LF) is kept. ``ValueError`` for a file that is not UTF-8 or not CSV.
    """
    bom = data.startswith(b"\xef\xbb\xbf")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise ValueError("a CSV file must be UTF-8 encoded") from None
    if "\x00" in text:
        raise ValueError("a CSV file must not contain NUL characters")
    try:
        rows = list(csv.reader(io.StringIO(text, newline=""), delimiter=delimiter, strict=True))
    except csv.Error as exc:
        raise ValueError(f"not a valid CSV file: {exc}") from None
    changed = 0
    out_rows = []
    for row in rows:
        new = []
        for cell in row:
            n = neutralize_cell(cell)
            changed += n is not cell
            new.append(n)
        out_rows.append(new)
    if not changed:
        return data, 0
    buf = io.StringIO(newline="")
    eol = "\r\n" if "\r\n" in text else "\n"
    w = csv.writer(buf, delimiter=delimiter, lineterminator=eol, quoting=csv.QUOTE_MINIMAL)
    w.writerows(out_rows)
    out = buf.getvalue()
    if not text.endswith(("\n", "\r")) and out.endswith(eol):
        out = out[: -len(eol)]
    return (b"\xef\xbb\xbf" if bom else b"") + out.encode("utf-8"), changed


# ---------------------------------------------------------------------------- zip

ZIP_EPOCH = (1980, 1, 1, 0, 0, 0)


def _zip_info(path: str, date_time) -> zipfile.ZipInfo:
    zi = zipfile.ZipInfo(path, date_time=date_time)
    zi.compress_type = zipfile.ZIP_DEFLATED
    zi.create_system = 3                   # unix, whatever the host
    zi.external_attr = (0o100644 & 0xFFFF) << 16
    return zi


def zip_date_time(iso: str | None):
    """Zip timestamps from an ISO time (the release time), or the zip epoch."""
    if not iso:
        return ZIP_EPOCH
    m = re.match(r"^(\d{4})-(\d\d)-(\d\d)T(\d\d):(\d\d):(\d\d)", iso)
    if not m:
        return ZIP_EPOCH
    dt = tuple(int(x) for x in m.groups())
    return dt if dt[0] >= 1980 else ZIP_EPOCH


def build_zip(manifest: Mapping, files: Sequence[tuple[str, bytes]]) -> bytes:
    """A zip of ``files`` (``(path in zip, bytes)``) and ``manifest.json``, deterministic.

    Same inputs, same bytes: entries sorted by path, ``manifest.json`` first, fixed timestamps
    (the release time from ``manifest["request"]["released_at"]``), fixed permissions and host
    system, deflate level 9. Paths must be unique and relative without ``..``.
    """
    date_time = zip_date_time((manifest.get("request") or {}).get("released_at"))
    seen = set()
    for path, _ in files:
        parts = path.split("/")
        if (path in seen or path == "manifest.json" or path.startswith("/")
                or any(p in ("", ".", "..") for p in parts)):
            raise ValueError(f"bad or duplicate path in release zip: {path!r}")
        seen.add(path)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=9) as z:
        body = json_pretty(manifest)
        z.writestr(_zip_info("manifest.json", date_time), body, compresslevel=9)
        for path, data in sorted(files, key=lambda f: f[0]):
            z.writestr(_zip_info(path, date_time), data, compresslevel=9)
    return buf.getvalue()


def json_pretty(obj) -> bytes:
    """Readable, and still one byte string per value (sorted keys)."""
    canonical_json(obj)  # refuses NaN and non-JSON early
    return (json.dumps(obj, sort_keys=True, indent=2, ensure_ascii=False) + "\n").encode("utf-8")
