"""The master key file: created explicitly, kept outside the store, never logged.

The key is 32 random bytes from the operating system's CSPRNG, stored as 64 lowercase hex
characters in a file with mode 0600. Only its fingerprint (:func:`data_ingest.rules.key_id`)
is ever written anywhere else.
"""

from __future__ import annotations

import os
import re
import secrets
import stat
from pathlib import Path

from .errors import IngestError
from .kdf import key_id

ENV_KEY_FILE = "INGEST_KEY_FILE"
_HEX64 = re.compile(r"^[0-9a-f]{64}$")


def default_key_file(store: str | Path | None = None) -> Path:
    """``$INGEST_KEY_FILE``, else ``keys/master.key`` beside the store folder."""
    env = os.environ.get(ENV_KEY_FILE)
    if env:
        return Path(env)
    store = Path(store) if store else Path("var/store")
    return store.absolute().parent / "keys" / "master.key"


def _check_outside_store(path: Path, store: str | Path | None) -> None:
    if store is None:
        return
    p, s = path.absolute().resolve(), Path(store).absolute().resolve()
    if p == s or s in p.parents:
        raise IngestError("the key file must not be inside the store (the store is shared with the hub)",
                          file=str(path))


def init_key(path: str | Path, store: str | Path | None = None) -> str:
    """Create a new key file; refuse to overwrite one. Returns the key id (not the key)."""
    path = Path(path)
    _check_outside_store(path, store)
    if path.exists():
        raise IngestError("a key file already exists; refusing to overwrite it (pseudonyms made "
                          "with it would no longer link)", file=str(path))
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    key = secrets.token_bytes(32).hex()
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise IngestError("a key file already exists; refusing to overwrite it", file=str(path)) from None
    with os.fdopen(fd, "w") as f:
        f.write(key + "\n")
    os.chmod(path, 0o600)
    return key_id(key)


def load_key(path: str | Path, store: str | Path | None = None) -> str:
    """Read the master key (hex text). Checks that it is private and well-formed."""
    path = Path(path)
    _check_outside_store(path, store)
    try:
        st = path.stat()
    except FileNotFoundError:
        raise IngestError("no key file here; create one with `ingest keys init`", file=str(path)) from None
    if st.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise IngestError("the key file is readable by others; chmod 600 it", file=str(path))
    text = path.read_text(encoding="ascii", errors="replace").strip()
    if not _HEX64.match(text):
        raise IngestError("not a key file (expected 64 hex characters)", file=str(path))
    return text
