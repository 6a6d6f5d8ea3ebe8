"""The fast paths give exactly what the straightforward ones give: the native HMAC equals
polars-hash and Python's hmac, and ``ingest add`` writes the same data with either, on random
identifiers that include invalid, missing and oddly written ones, over several slices."""

from __future__ import annotations

import hashlib
import hmac
import random

import polars as pl
import pyarrow.parquet as pq
import pytest

from data_ingest import native, rules
from data_ingest.keys import load_key
from data_ingest.pipeline import add
from ingest_helpers import write

needs_native = pytest.mark.skipif(not native.available(force=True),
                                  reason=f"native HMAC: {native.status()}")


@pytest.fixture(autouse=True)
def _default_switch(monkeypatch):
    """As a data manager runs it: the switch unset (the native HMAC on by default)."""
    monkeypatch.delenv(native.ENV_SWITCH, raising=False)


@needs_native
def test_native_is_the_default_and_can_be_turned_off(monkeypatch):
    key = "ab" * 32
    want = [rules.pseudonym(key, "111222333"), None]
    s = pl.Series("n", ["111222333", None])
    assert native.enabled() and native.status().startswith("native")
    assert native.hmac_function(key, 32)(s).to_list() == want
    for off in ("0", "off", "False"):
        monkeypatch.setenv(native.ENV_SWITCH, off)
        assert not native.enabled() and native.hmac_function(key, 32) is None
        assert native.status() == f"polars-hash ({native.ENV_SWITCH}=0)"
        assert pl.DataFrame({"n": s}).select(rules.pseudonym_expr(pl.col("n"), key)).to_series().to_list() == want


@needs_native
@pytest.mark.parametrize("bug", [
    ('HEX[] = "0123456789abcdef"', 'HEX[] = "0123456789abcdeF"'),  # wrong output text
    ("c = *inner;", "c = *inner; if (len == 55) len = 54;"),  # wrong only at a SHA-256 padding boundary
    ("update(&c, src, (size_t)len)", "update(&c, src, (size_t)(len == 12 ? 11 : len))"),  # 12-byte inline views
])
def test_a_wrong_native_library_fails_its_self_test(tmp_path, monkeypatch, bug):
    """A library that computes anything else than HMAC-SHA256 is never used: ingest falls back to
    polars-hash and says why."""
    old, new = bug
    assert old in native.C_SOURCE
    monkeypatch.setattr(native, "C_SOURCE", native.C_SOURCE.replace(old, new))
    monkeypatch.setattr(native, "_state", {})
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    assert not native.available()
    assert "self-test failed" in native.status() and native.status().startswith("polars-hash")
    assert native.hmac_function("ab" * 32, 32) is None


def _random_text(rng: random.Random) -> str | None:
    r = rng.random()
    if r < 0.1:
        return None
    if r < 0.2:
        return "".join(rng.choice("abcëé€ 0123456789") for _ in range(rng.randint(0, 40)))
    return str(rng.randint(0, 10**rng.randint(1, 14)))


@needs_native
@pytest.mark.parametrize("engine", ["streaming", "in-memory"])
def test_native_hmac_equals_polars_hash_and_python(engine):
    rng = random.Random(4)
    key = hashlib.sha256(b"k").hexdigest()
    values = [_random_text(rng) for _ in range(5000)]
    df = pl.concat([pl.DataFrame({"v": values[:1234]}, schema={"v": pl.String}),
                    pl.DataFrame({"v": values[1234:]}, schema={"v": pl.String})], rechunk=False)
    got = df.lazy().select(
        rules.pseudonym_expr(pl.col("v"), key, native=True).alias("native"),
        rules.pseudonym_expr(pl.col("v"), key, native=False).alias("plugin"),
    ).collect(engine=engine)
    want = [None if v is None else hmac.new(key.encode(), v.encode(), hashlib.sha256).hexdigest()[:32]
            for v in values]
    assert got["native"].to_list() == want
    assert got["plugin"].to_list() == want
    # a sliced column (Arrow offset into views and validity)
    part = df["v"].slice(777, 3000)
    assert native.hmac_function(key, 32)(part).to_list() == want[777:3777]


def _bsn_source(tmp_path, rows: int):
    """Random BSN-like values: valid, failing the 11-test, missing, blank, 8 digits (leading
    zero lost), padded with spaces, with a sign or separators, non-digits; ids repeat."""
    from data_ingest.demo import bsn_array
    import numpy as np

    rng = random.Random(7)
    valid = [str(x) for x in bsn_array(np.random.default_rng(7), 4000)]
    eight = [v[1:] for v in valid if v.startswith("0")][:50] or ["12345674"]
    pool = []
    for _ in range(rows):
        r = rng.random()
        if r < 0.6:
            v = rng.choice(valid[:1500])  # repeats
        elif r < 0.75:
            v = rng.choice(valid)
        elif r < 0.8:
            v = None
        elif r < 0.83:
            v = "   "
        elif r < 0.86:
            v = rng.choice(eight)
        elif r < 0.9:
            v = f"  {rng.choice(valid)} "
        elif r < 0.93:
            v = str(rng.randint(100_000_000, 999_999_999))  # mostly failing the 11-test
        elif r < 0.95:
            v = "+" + rng.choice(valid)[1:]
        elif r < 0.97:
            v = rng.choice(["000000000", "-12345678", "1234.56.782", "12345678x", "ABCDEFGHI", "0"])
        else:
            v = rng.choice(valid) + "0"
        pool.append(v)
    years = [f"{rng.randint(1920, 2020)}-0{rng.randint(1, 9)}-1{rng.randint(0, 9)}" for _ in range(rows)]
    df = pl.DataFrame({"bsn": pool, "birth": years,
                       "pc": [f"{rng.randint(1000, 9999)}{rng.choice(['AB', ' cd', 'Ef'])}" for _ in range(rows)]},
                      schema={"bsn": pl.String, "birth": pl.String, "pc": pl.String})
    src = tmp_path / "src.parquet"
    df.write_parquet(src)
    spec = write(tmp_path / "spec.toml", """
        [dataset]
        name = "random_ids"
        title = "random ids"
        unit = "person"
        unit_id = "person_id"

        [columns.bsn]
        action = "pseudonymise"
        kind = "bsn"
        as = "person_id"

        [columns.birth]
        action = "generalise"
        type = "date"
        to = "year"

        [columns.pc]
        action = "generalise"
        to = "pc4"
        """)
    return src, spec, pool


def _read_version(res) -> pl.DataFrame:
    files = sorted(res.path.glob("part-*.parquet"), key=lambda p: int(p.stem.split("-")[1]))
    return pl.concat([pl.read_parquet(f) for f in files])


def test_add_with_either_hmac_matches_the_scalar_rules(tmp_path, monkeypatch):
    from data_ingest.keys import init_key

    src, spec, pool = _bsn_source(tmp_path, 20_000)
    key = tmp_path / "keys" / "master.key"
    init_key(key)
    master = load_key(key, tmp_path / "a")
    bkey = rules.kind_key(master, "bsn")
    want_pid, want_status = [], []
    for v in pool:
        n = rules.normalise_bsn(v)
        ok = rules.bsn_valid(v)
        want_pid.append(rules.pseudonym(bkey, n) if ok else None)
        want_status.append("valid" if ok else "missing" if n is None else "invalid")
    results = {}
    for mode in ("1", "0"):
        monkeypatch.setenv(native.ENV_SWITCH, mode)
        res = add(src, spec, tmp_path / f"store-{mode}", key, slice_rows=6_000)
        assert res.rows_in == len(pool) and not res.reused
        results[mode] = _read_version(res)
    a, b = results["1"], results["0"]
    assert a.equals(b)
    assert a["person_id"].to_list() == want_pid
    assert a["person_id_status"].to_list() == want_status
    assert res.status["person_id"] == {"valid": want_status.count("valid"),
                                       "invalid": want_status.count("invalid"),
                                       "missing": want_status.count("missing")}
    assert res.units == len({p for p in want_pid if p is not None})
    # the footer is still there and the pseudonym column is plain text
    assert pq.read_schema(res.path / "part-0.parquet").field("person_id").metadata


@needs_native
def test_invalid_and_missing_ids_are_never_hashed(tmp_path, monkeypatch):
    """Only identifiers that passed the checks reach the HMAC."""
    src, spec, pool = _bsn_source(tmp_path, 5_000)
    seen: list[str] = []
    real = native.hmac_function

    def spy(key_hex, hex_chars):
        f = real(key_hex, hex_chars)

        def g(s):
            seen.extend(s.drop_nulls().to_list())
            return f(s)
        return g

    monkeypatch.setattr(native, "hmac_function", spy)
    from data_ingest.keys import init_key

    key = tmp_path / "keys" / "master.key"
    init_key(key)
    add(src, spec, tmp_path / "store", key, slice_rows=2_000)
    assert seen and all(rules.bsn_valid(v) and v == rules.normalise_bsn(v) for v in seen)
    assert len(seen) == sum(rules.bsn_valid(v) for v in pool)


def test_without_a_compiler_the_plugin_is_used(tmp_path, monkeypatch):
    """No C compiler (or any other failure): polars-hash, same pseudonyms, no error."""
    monkeypatch.setattr(native, "_state", {})
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setenv("CC", "/bin/false")
    assert not native.available() and "polars-hash" in native.status()
    key = "cd" * 32
    out = pl.DataFrame({"n": ["111222333", None]}).select(rules.pseudonym_expr(pl.col("n"), key)).to_series()
    assert out.to_list() == [rules.pseudonym(key, "111222333"), None]
    with pytest.raises(RuntimeError):
        rules.pseudonym_expr(pl.col("n"), key, native=True)
