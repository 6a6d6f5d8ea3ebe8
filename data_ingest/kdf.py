"""Key derivation and key fingerprints (standard library only: no engine needed for keys).

Keys are handled as their lowercase hex text, and that ASCII text is the HMAC key, so every
implementation (Python's hmac, polars-hash's Rust plugin) gives the same bytes.
"""

from __future__ import annotations

import hashlib
import hmac

#: Pseudonym length in hex characters (128 bits of the HMAC-SHA256 output, its leftmost bytes,
#: as FIPS 198-1 allows).
PSEUDONYM_HEX = 32


def derive_key(key_hex: str, label: str) -> str:
    """A sub-key: HMAC-SHA256(key, label) as hex text (an HKDF-Expand-like single block)."""
    return hmac.new(key_hex.encode("ascii"), label.encode("utf-8"), hashlib.sha256).hexdigest()


def kind_key(master_hex: str, kind: str) -> str:
    """The store-level key for one identifier kind (domain separation between kinds)."""
    return derive_key(master_hex, f"store:{kind}")


def project_key(master_hex: str, project: str) -> str:
    """The key a project's pseudonyms are made with. Different for every project."""
    return derive_key(master_hex, f"project:{project}")


def key_id(master_hex: str) -> str:
    """A public fingerprint of a key, safe to record in metadata (it does not reveal the key)."""
    return "sha256:" + hashlib.sha256(b"data_ingest key id:" + master_hex.encode("ascii")).hexdigest()[:16]


def pseudonym(key_hex: str, normalised: str) -> str:
    """Scalar HMAC-SHA256 pseudonym (truncated): the reference for the engine's version."""
    mac = hmac.new(key_hex.encode("ascii"), normalised.encode("utf-8"), hashlib.sha256)
    return mac.hexdigest()[:PSEUDONYM_HEX]
