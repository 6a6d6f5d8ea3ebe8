"""The pure business rules: BSN 11-test, normalisation, pseudonyms, generalisation, keys."""

from __future__ import annotations

import hashlib
import hmac
from datetime import date

import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from data_ingest import rules


def make_bsn(prefix8: int) -> str | None:
    """A BSN from 8 digits by computing its check digit (None when no digit works)."""
    digits = [int(d) for d in f"{prefix8:08d}"]
    check = sum(d * w for d, w in zip(digits, (9, 8, 7, 6, 5, 4, 3, 2))) % 11
    return None if check > 9 else f"{prefix8:08d}{check}"


@pytest.mark.parametrize("value, ok", [
    ("111222333", True), ("123456782", True), ("012345672", True), (12345672, True),  # lost leading zero
    (" 123456782 ", True), ("999999999", False), ("123456789", False), ("000000000", False),
    ("12345678", False), ("1234567890", False), ("1234.56.782", False), ("abcdefghi", False),
    ("+12345678", False), ("", False), (None, False),
])
def test_bsn_11_test(value, ok):
    assert rules.bsn_valid(value) is ok


def _expr_valid(values: list) -> list[bool]:
    df = pl.DataFrame({"v": pl.Series(values, dtype=pl.String)})
    n = rules.normalise_id_expr(pl.col("v"), "bsn")
    return df.select(rules.id_valid_expr(n, "bsn")).to_series().to_list()


@settings(max_examples=200, deadline=None)
@given(st.lists(st.one_of(st.integers(0, 99_999_999).map(make_bsn),
                          st.text(alphabet="0123456789 +-.", min_size=0, max_size=11),
                          st.integers(0, 10**10).map(str)), min_size=1, max_size=50))
def test_vectorised_11_test_agrees_with_scalar(values):
    assert _expr_valid(values) == [rules.bsn_valid(v) for v in values]


@given(st.integers(10_000_000, 99_999_999))
def test_one_changed_digit_fails(prefix):
    bsn = make_bsn(prefix)
    if bsn is None:
        return
    assert rules.bsn_valid(bsn)
    for i in range(9):
        d = (int(bsn[i]) + 1) % 10
        changed = bsn[:i] + str(d) + bsn[i + 1:]
        assert not rules.bsn_valid(changed), changed  # the 11-test catches every single-digit error


def test_pseudonym_in_engine_equals_python_hmac():
    key = "ab" * 32
    ids = ["111222333", "123456782", "012345672"]
    out = pl.DataFrame({"n": ids}).select(rules.pseudonym_expr(pl.col("n"), key)).to_series().to_list()
    want = [hmac.new(key.encode(), i.encode(), hashlib.sha256).hexdigest()[:32] for i in ids]
    assert out == want == [rules.pseudonym(key, i) for i in ids]
    assert len(set(out)) == 3


def test_derived_keys_differ_and_hide_the_master():
    m = "0f" * 32
    keys = {rules.kind_key(m, "bsn"), rules.kind_key(m, "id"), rules.project_key(m, "covid"),
            rules.project_key(m, "income")}
    assert len(keys) == 4 and m not in keys
    assert rules.key_id(m).startswith("sha256:") and m not in rules.key_id(m)
    assert rules.key_id(m) != rules.key_id("1f" * 32)


def test_generalisations():
    df = pl.DataFrame({
        "d": [date(1970, 5, 1), date(2001, 12, 31), None],
        "pc": ["1234AB", "2345 cd", "12345"],
        "age": [3, 18, 90],
        "x": [10.0, 500.0, -5.0],
    })
    out = df.select(
        rules.date_year_expr(pl.col("d")).alias("y"),
        rules.date_year_month_expr(pl.col("d")).alias("ym"),
        rules.postcode4_expr(pl.col("pc")).alias("pc4"),
        rules.postcode_bad_expr(pl.col("pc")).alias("pc_bad"),
        rules.bands_expr(pl.col("age"), [0, 18, 65]).alias("band"),
        rules.topcode_expr(pl.col("x"), top=100, bottom=0).alias("top"),
    ).to_dict(as_series=False)
    assert out["y"] == [1970, 2001, None]
    assert out["ym"] == ["1970-05", "2001-12", None]
    assert out["pc4"] == ["1234", "2345", None]
    assert out["pc_bad"] == [False, False, True]
    assert out["band"] == ["0-17", "18-64", "65+"]
    assert out["top"] == [10.0, 100.0, 0.0]
    assert rules.band_labels([0, 18, 65]) == ["<0", "0-17", "18-64", "65+"]
