"""Business rules as pure functions: identifier checks, normalisation, pseudonyms, generalisation.

Every rule has a scalar form (for tests, objection lists and small inputs) and, where it runs
over data, a polars expression form, so the work stays in the engine: no Python loop over rows.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from datetime import date

import polars as pl

# --- identifiers -------------------------------------------------------------------------------

#: Identifier kinds the pipeline knows. ``bsn`` is the Dutch citizen service number (9 digits,
#: 11-test); ``id`` is any other identifier (trimmed, must be non-empty, no checksum).
ID_KINDS = ("bsn", "id")

_BSN_WEIGHTS = (9, 8, 7, 6, 5, 4, 3, 2, -1)


def normalise_bsn(value: object) -> str | None:
    """The canonical text of a BSN: surrounding white space removed; an 8-digit number (a BSN
    whose leading zero was lost, e.g. when stored as an integer) gets its zero back.

    ``None`` or blank gives ``None``. Separators inside ("1234.56.782") are *not* removed: such a
    value is reported as invalid rather than guessed at. The result is not checked; see
    :func:`bsn_valid`.
    """
    if value is None:
        return None
    text = str(value).strip()
    if not text:
        return None
    return "0" + text if len(text) == 8 else text


def bsn_valid(value: object) -> bool:
    """The BSN 11-test on a single value (after :func:`normalise_bsn`).

    9 digits d1..d9 with 9*d1 + 8*d2 + ... + 2*d8 - 1*d9 divisible by 11, and not all zeros.
    """
    text = normalise_bsn(value)
    if text is None or len(text) != 9 or not (text.isascii() and text.isdigit()) or text == "000000000":
        return False
    return sum(int(d) * w for d, w in zip(text, _BSN_WEIGHTS)) % 11 == 0


def normalise_id(value: object, kind: str) -> str | None:
    """Scalar normalisation for any identifier kind."""
    if kind == "bsn":
        return normalise_bsn(value)
    if value is None:
        return None
    text = str(value).strip()
    return text or None


def id_valid(value: object, kind: str) -> bool:
    if kind == "bsn":
        return bsn_valid(value)
    return normalise_id(value, kind) is not None


def normalise_id_expr(expr: pl.Expr, kind: str, stripped: bool = False) -> pl.Expr:
    """Polars form of :func:`normalise_id`; blank becomes null. ``stripped``: ``expr`` is already
    text without surrounding white space (the pipeline strips once and reuses the column)."""
    text = expr if stripped else expr.cast(pl.String).str.strip_chars()
    n = text.str.len_bytes()
    if kind == "bsn":
        return pl.when(n == 8).then(text.str.zfill(9)).when(n > 0).then(text)
    return pl.when(n > 0).then(text)


def _bsn_tables() -> tuple[pl.Series, pl.Series]:
    """Weighted digit sums of the first 4 and the last 5 digits, for every possible value."""
    import numpy as np

    hi = np.arange(10_000)
    lo = np.arange(100_000)
    t_hi = sum(w * ((hi // 10 ** (3 - i)) % 10) for i, w in enumerate(_BSN_WEIGHTS[:4]))
    t_lo = sum(w * ((lo // 10 ** (4 - i)) % 10) for i, w in enumerate(_BSN_WEIGHTS[4:]))
    return pl.Series("hi", t_hi, dtype=pl.Int32), pl.Series("lo", t_lo, dtype=pl.Int32)


_BSN_HI, _BSN_LO = _bsn_tables()


def bsn_number_expr(normalised: pl.Expr) -> pl.Expr:
    """The number of a normalised BSN that has the form of one (9 bytes, digits, not all zeros),
    else null. Computed once per identifier column and shared by the 11-test, the unit count
    and the objection match."""
    nine = (normalised.str.len_bytes() == 9) & ~normalised.str.starts_with("+")  # "+" parses as a sign
    x = normalised.cast(pl.Int64, strict=False)
    return pl.when(nine & (x > 0)).then(x)  # 1..999999999 ("-12345678" is negative: rejected)


def bsn_check_expr(number: pl.Expr) -> pl.Expr:
    """The 11-test on :func:`bsn_number_expr`'s result; null (no number) is not valid.

    The weighted digit sum is two table look-ups (first 4 digits, last 5 digits) instead of nine
    digit extractions: the same result, a few vectorised operations.
    """
    total = pl.lit(_BSN_HI).gather(number // 100_000) + pl.lit(_BSN_LO).gather(number % 100_000)
    return (total % 11 == 0).fill_null(False)


def id_valid_expr(normalised: pl.Expr, kind: str) -> pl.Expr:
    """Polars form of :func:`id_valid`, given the normalised column. Null is not valid."""
    if kind != "bsn":
        return normalised.is_not_null()
    return bsn_check_expr(bsn_number_expr(normalised))


#: Values of the link status column beside each pseudonymised identifier.
STATUS_VALID = "valid"  # identifier passed its checks and was pseudonymised
STATUS_INVALID = "invalid"  # present but failed the checks (e.g. 11-test): not pseudonymised
STATUS_MISSING = "missing"  # empty, or the source has no such identifier
STATUS_PROBABILISTIC = "probabilistic"  # set at publish: linked to the spine by ingest link
LINK_STATUSES = (STATUS_VALID, STATUS_INVALID, STATUS_MISSING, STATUS_PROBABILISTIC)


def link_status_expr(normalised: pl.Expr, valid: pl.Expr) -> pl.Expr:
    """valid / missing / invalid; a number picks the text (2x faster than choosing among texts)."""
    code = pl.when(valid).then(0).when(normalised.is_null()).then(1).otherwise(2)
    return pl.lit(pl.Series([STATUS_VALID, STATUS_MISSING, STATUS_INVALID])).gather(code)


# --- keys and pseudonyms (key derivation lives in kdf, which needs no engine) ---------------

from .kdf import PSEUDONYM_HEX, derive_key, key_id, kind_key, project_key, pseudonym  # noqa: E402,F401


def pseudonym_expr(normalised: pl.Expr, key_hex: str, native: bool | None = None) -> pl.Expr:
    """HMAC-SHA256 in the engine, truncated to 128 bits, hex; null stays null.

    By default the native HMAC (:mod:`data_ingest.native`: the key's HMAC state computed once)
    when it is available here, else polars-hash's Rust plugin; both give the same bytes.
    ``native=False`` forces polars-hash, ``True`` requires the native code.
    """
    if native is not False:
        from .native import hmac_function

        f = hmac_function(key_hex, PSEUDONYM_HEX)
        if f is not None:
            return normalised.cast(pl.String).map_batches(f, return_dtype=pl.String, is_elementwise=True)
        if native:
            raise RuntimeError("the native HMAC is not available here")
    import polars_hash  # noqa: F401  (registers the .chash namespace)

    return normalised.chash.hmac_sha256(key=key_hex).str.slice(0, PSEUDONYM_HEX)


# --- generalisation ----------------------------------------------------------------------------

POSTCODE6 = r"^[1-9][0-9]{3}[A-Z]{2}$"


def normalise_postcode_expr(expr: pl.Expr, sparse: bool = False) -> pl.Expr:
    """Upper case, spaces removed. ``sparse``: most values of ``expr`` are null (only those that
    need it are given): the work is done on the present values only (polars' upper-casing and
    replacing go over every row, null or not)."""
    if sparse:
        return expr.cast(pl.String).map_batches(_present_only(_normalise_postcode_series),
                                                return_dtype=pl.String, is_elementwise=True)
    return expr.cast(pl.String).str.to_uppercase().str.replace_all(" ", "", literal=True)


def _normalise_postcode_series(s: pl.Series) -> pl.Series:
    return s.str.to_uppercase().str.replace_all(" ", "", literal=True)


def _present_only(f):
    """``f`` (Series -> Series of the same length, null stays null) applied to the non-null
    values only; the nulls stay where they are."""
    def apply(s: pl.Series) -> pl.Series:
        present = s.is_not_null()
        n = int(present.sum())
        if n == 0:
            return s
        if n == s.len():
            return f(s)
        idx = present.arg_true()
        return s.clone().scatter(idx, f(s.gather(idx)))
    return apply


def postcode_bad_expr(expr: pl.Expr) -> pl.Expr:
    """A present value that is not a 6-character Dutch postcode (``1234AB``)."""
    norm = normalise_postcode_expr(expr)
    return norm.is_not_null() & ~norm.str.contains(POSTCODE6)


def postcode4_expr(expr: pl.Expr) -> pl.Expr:
    """6-character postcode to its 4 digits (``1234 AB`` -> ``1234``)."""
    norm = normalise_postcode_expr(expr)
    return pl.when(norm.str.contains(POSTCODE6)).then(norm.str.slice(0, 4))


def date_year_expr(expr: pl.Expr) -> pl.Expr:
    """A date's year. Looked up in a table for 1800..2199 (4x faster than polars' calendar
    arithmetic), computed for other dates."""
    return _by_calendar(expr, 1, expr.dt.year().cast(pl.Int32))


def date_year_month_expr(expr: pl.Expr) -> pl.Expr:
    """A date to ``YYYY-MM`` text (looked up for 1800..2199: 10x faster than formatting)."""
    return _by_calendar(expr, 2, expr.dt.strftime("%Y-%m"))


@functools.cache
def _calendar() -> tuple[int, pl.Series, pl.Series]:
    """Day number of 1800-01-01, and the year and ``YYYY-MM`` of every day of 1800..2199."""
    days = pl.date_range(date(1800, 1, 1), date(2199, 12, 31), eager=True)
    return days[0].toordinal() - date(1970, 1, 1).toordinal(), days.dt.year().cast(pl.Int32), days.dt.strftime("%Y-%m")


def _by_calendar(expr: pl.Expr, which: int, otherwise: pl.Expr) -> pl.Expr:
    # When every present date is in the table, polars does not evaluate ``otherwise`` at all.
    first, *tables = _calendar()
    table = tables[which - 1]
    i = expr.cast(pl.Date).cast(pl.Int32) - first
    inside = ((i >= 0) & (i < table.len())).fill_null(True)
    return pl.when(inside).then(pl.lit(table).gather(i.clip(0, table.len() - 1))).otherwise(otherwise)


def band_labels(bounds: Sequence[float]) -> list[str]:
    """Labels for bands with these lower bounds: [0, 18, 65] -> ["0-17", "18-64", "65+"].

    A value below the first bound gets ``<first``.
    """
    bounds = list(bounds)
    labels = [f"<{_num(bounds[0])}"]
    for lo, hi in zip(bounds, bounds[1:]):
        labels.append(f"{_num(lo)}-{_num(hi - 1) if float(hi).is_integer() else _num(hi)}")
    labels.append(f"{_num(bounds[-1])}+")
    return labels


def _num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else str(x)


def bands_expr(expr: pl.Expr, bounds: Sequence[float]) -> pl.Expr:
    """Numbers to band labels, left-closed: [0, 18, 65] puts 17 in ``0-17`` and 65 in ``65+``."""
    bounds = [float(b) for b in bounds]
    labels = band_labels(bounds)
    out = pl.lit(labels[0])
    # Walk up the bounds; each later match overrides. A handful of whens, all vectorised.
    chain = pl.when(expr.is_null()).then(pl.lit(None, dtype=pl.String))
    for b, label in reversed(list(zip(bounds, labels[1:]))):
        chain = chain.when(expr >= b).then(pl.lit(label))
    return chain.otherwise(out)


def topcode_expr(expr: pl.Expr, top: float | None = None, bottom: float | None = None) -> pl.Expr:
    """Clip values above ``top`` to ``top`` (and below ``bottom`` to ``bottom``)."""
    return expr.clip(lower_bound=bottom, upper_bound=top)


def age_band_from_birth_expr(birth: pl.Expr, at_year: int, bounds: Sequence[float]) -> pl.Expr:
    """Age (in whole years, at the middle of ``at_year``) banded; used by the linkage report."""
    return bands_expr(pl.lit(at_year) - birth.dt.year(), bounds)
