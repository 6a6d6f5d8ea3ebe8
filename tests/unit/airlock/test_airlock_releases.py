"""Release store, file names, CSV formula neutralisation, the deterministic zip."""
import csv
import io
import os
import zipfile

import pytest

from hub.airlock import releases
from hub.airlock.releases import (ReleaseStore, ReleaseStoreError, build_zip, neutralize_cell,
                                  neutralize_csv, sanitize_filename, sha256)


def test_store_put_get_idempotent(tmp_path):
    store = ReleaseStore(tmp_path / "rel")
    sha = store.put(b"hello")
    assert sha == sha256(b"hello") and store.get(sha) == b"hello" and store.has(sha)
    p = store.path(sha)
    mtime = p.stat().st_mtime_ns
    assert store.put(b"hello") == sha
    assert p.stat().st_mtime_ns == mtime                 # not rewritten
    assert not [x for x in p.parent.iterdir() if x.name.startswith(".tmp-")]
    with pytest.raises(ReleaseStoreError, match="missing"):
        store.get(sha256(b"other"))
    with pytest.raises(ValueError):
        store.path("../../etc/passwd")


def test_store_detects_and_repairs_altered_file(tmp_path):
    store = ReleaseStore(tmp_path)
    sha = store.put(b"exact bytes")
    p = store.path(sha)
    os.chmod(p, 0o644)
    p.write_bytes(b"forged bytes")
    with pytest.raises(ReleaseStoreError, match="altered"):
        store.get(sha)
    assert store.put(b"exact bytes") == sha and store.get(sha) == b"exact bytes"


@pytest.mark.parametrize("raw,safe", [
    ("table.csv", "table.csv"),
    ("../../etc/passwd", "passwd"),
    ("..\\..\\win\\evil.CSV", "evil.csv"),
    ("/abs/path/x.png", "x.png"),
    (".hidden.txt", "hidden.txt"),
    ("..", "file"),
    ("", "file"),
    ("-rf.txt", "rf.txt"),
    ("a\x00b\x1fc\n.txt", "abc.txt"),
    ("my table (final) v2.csv", "my_table_final_v2.csv"),
    ("Zürich café.md", "Zurich_cafe.md"),
    ("CON.txt", "_CON.txt"),
    ("nul", "_nul"),
    ("report.tar.gz", "report.tar.gz"),
    ("x.p h$p", "x.php"),
    ("日本.csv", "file.csv"),
    ("a" * 300 + ".json", "a" * 115 + ".json"),
])
def test_sanitize_filename(raw, safe):
    assert sanitize_filename(raw) == safe
    out = sanitize_filename(raw)
    assert "/" not in out and "\\" not in out and not out.startswith((".", "-"))
    assert len(out) <= releases.MAX_NAME
    assert all(c.isalnum() or c in "._-" for c in out) and out.isascii()


@pytest.mark.parametrize("cell,out", [
    ("=1+1", "'=1+1"), ("+A1", "'+A1"), ("-2+3", "'-2+3"), ("@SUM(A1)", "'@SUM(A1)"),
    ("\t=1", "'\t=1"), ("\r=1", "'\r=1"), ("＝1+1", "'＝1+1"),
    ("=HYPERLINK(\"http://x\",\"y\")", "'=HYPERLINK(\"http://x\",\"y\")"),
    ("-3.5", "-3.5"), ("+2", "+2"), ("-1e-05", "-1e-05"), ("-.5", "-.5"), ("-0", "-0"),
    ("12", "12"), ("a=b", "a=b"), ("", ""), ("-", "'-"), ("- 3", "'- 3"), ("--5", "'--5"),
])
def test_neutralize_cell(cell, out):
    assert neutralize_cell(cell) == out


def test_neutralize_csv_with_quotes_newlines_and_delimiters():
    src = ('name,value,note\r\n'
           '"=cmd|\' /C calc\'!A0",-3.5,"multi\nline"\r\n'
           '"a,b",@x,"say ""hi"""\r\n')
    out, changed = neutralize_csv(src.encode())
    assert changed == 2
    rows = list(csv.reader(io.StringIO(out.decode(), newline="")))
    assert rows == [["name", "value", "note"],
                    ["'=cmd|' /C calc'!A0", "-3.5", "multi\nline"],
                    ["a,b", "'@x", 'say "hi"']]
    assert out.endswith(b"\r\n") and b"\r\n" in out


def test_neutralize_csv_leaves_clean_files_byte_identical():
    src = b"\xef\xbb\xbfsex;n\nF,-12\n\"M\",  15\n"     # odd but harmless: untouched
    assert neutralize_csv(src) == (src, 0)
    out, n = neutralize_csv(b"\xef\xbb\xbfa\n=1\n")
    assert n == 1 and out == b"\xef\xbb\xbfa\n'=1\n"
    tsv, n = neutralize_csv(b"a\tb\n=1\t2\n", "\t")
    assert n == 1 and tsv == b"a\tb\n'=1\t2\n"


def test_neutralize_csv_refuses_non_utf8_and_broken():
    with pytest.raises(ValueError, match="UTF-8"):
        neutralize_csv("é,=1\n".encode("latin-1"))
    with pytest.raises(ValueError):
        neutralize_csv(b'a,"b\n')
    with pytest.raises(ValueError, match="NUL"):
        neutralize_csv(b"a,\x00\n")


def test_zip_is_deterministic_and_complete():
    manifest = {"request": {"id": 1, "released_at": "2026-07-22T10:11:12.5Z"}, "outputs": []}
    files = [("t2/b.csv", b"b"), ("t1/a.csv", b"a,b\n1,2\n")]
    z1 = build_zip(manifest, files)
    z2 = build_zip(dict(manifest), list(reversed(files)))
    assert z1 == z2
    with zipfile.ZipFile(io.BytesIO(z1)) as z:
        assert z.namelist() == ["manifest.json", "t1/a.csv", "t2/b.csv"]
        assert z.read("t1/a.csv") == b"a,b\n1,2\n"
        assert z.getinfo("t1/a.csv").date_time == (2026, 7, 22, 10, 11, 12)
        assert z.testzip() is None
    with pytest.raises(ValueError):
        build_zip(manifest, [("../x", b"")])
    with pytest.raises(ValueError):
        build_zip(manifest, [("a", b""), ("a", b"")])
