"""A faster HMAC-SHA256 for pseudonyms: the key's inner and outer SHA-256 states are computed
once (RFC 2104, section 4) instead of for every value, so each value costs two SHA-256 blocks
instead of four. SHA-256 itself is OpenSSL's (the libcrypto Python's ``hashlib`` already uses;
SHA-NI where the CPU has it).

It is a few lines of C, compiled with the system C compiler into a private cache folder
(``$XDG_CACHE_HOME/data_ingest`` or ``~/.cache/data_ingest``, mode 0700; ``scripts/bootstrap.sh``
builds it ahead with ``python -m data_ingest.native``, otherwise the first ``ingest`` run does)
and loaded with ctypes. It runs over the Arrow string-view buffers of a polars column (no copy
in) and returns a string-view column. Before it is used in a process it must reproduce Python's
``hmac`` on a set of test values (every length across SHA-256's block boundaries, nulls, non-ASCII
text, sliced and chunked columns).

It is the default. ``DATA_INGEST_NATIVE_HMAC=0`` turns it off; when anything is missing (no
compiler, no libcrypto, a foreign platform, a failed self-test) :func:`hmac_function` returns
None and the pipeline uses polars-hash, which gives the same pseudonyms; :func:`status` says
which one runs and why (``ingest add`` prints it). Measured on this machine: 0.16 vs 0.33 µs per
value of CPU time (see docs/ingest.md).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import hashlib
import hmac
import os
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

ENV_SWITCH = "DATA_INGEST_NATIVE_HMAC"

C_SOURCE = r"""
#include <stdint.h>
#include <string.h>
#include <stddef.h>

/* OpenSSL's SHA256_CTX is 112 bytes (1.0 to 3.x); a 256-byte slot leaves room to spare. */
typedef union { uint8_t b[256]; uint64_t align; } ctx_t;
typedef int (*init_f)(void *);
typedef int (*update_f)(void *, const void *, size_t);
typedef int (*final_f)(unsigned char *, void *);

static const char HEX[] = "0123456789abcdef";

/* The states after absorbing (key ^ ipad) and (key ^ opad); key at most 64 bytes. */
int hmac_prepare(const uint8_t *key, size_t klen, ctx_t *inner, ctx_t *outer,
                 init_f init, update_f update) {
    uint8_t k[64] = {0}, p[64];
    if (klen > 64) return -1;
    memcpy(k, key, klen);
    for (int i = 0; i < 64; i++) p[i] = k[i] ^ 0x36;
    if (init(inner) != 1 || update(inner, p, 64) != 1) return -2;
    for (int i = 0; i < 64; i++) p[i] = k[i] ^ 0x5c;
    if (init(outer) != 1 || update(outer, p, 64) != 1) return -2;
    return 0;
}

/* n Arrow string views (16 bytes each) with their data buffers and validity bitmap (or NULL;
   bit offset voff) -> n views of hexlen lowercase hex characters in out_data (buffer 0).
   A null input gives an empty view (the caller sets the output's validity). */
int hmac_views(const uint8_t *views, int64_t n, const uint8_t *const *bufs, const uint8_t *valid,
               int64_t voff, const ctx_t *inner, const ctx_t *outer, int hexlen,
               uint8_t *out_views, uint8_t *out_data, update_f update, final_f final) {
    unsigned char d[32];
    ctx_t c;
    if (hexlen < 2 || hexlen > 64 || hexlen % 2) return -1;
    for (int64_t i = 0; i < n; i++) {
        uint8_t *ov = out_views + 16 * i;
        int64_t bit = voff + i;
        if (valid && !((valid[bit >> 3] >> (bit & 7)) & 1)) { memset(ov, 0, 16); continue; }
        const uint8_t *v = views + 16 * i;
        int32_t len, bi, off;
        const uint8_t *src;
        memcpy(&len, v, 4);
        if (len <= 12) src = v + 4;
        else { memcpy(&bi, v + 8, 4); memcpy(&off, v + 12, 4); src = bufs[bi] + off; }
        c = *inner;
        if (update(&c, src, (size_t)len) != 1 || final(d, &c) != 1) return -2;
        c = *outer;
        if (update(&c, d, 32) != 1 || final(d, &c) != 1) return -2;
        uint8_t *o = out_data + (int64_t)hexlen * i;
        for (int j = 0; j < hexlen / 2; j++) { o[2 * j] = HEX[d[j] >> 4]; o[2 * j + 1] = HEX[d[j] & 15]; }
        int32_t L = hexlen, zero = 0, at = (int32_t)((int64_t)hexlen * i);
        memcpy(ov, &L, 4); memcpy(ov + 4, o, 4); memcpy(ov + 8, &zero, 4); memcpy(ov + 12, &at, 4);
    }
    return 0;
}
"""

_CTX = ctypes.c_uint8 * 256
_lock = threading.Lock()
_state: dict[str, object] = {}


def _cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "data_ingest"


def _private_dir(path: Path) -> bool:
    """Ours, and nobody else can write into it (a shared library is loaded from here)."""
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    st = path.stat()
    return st.st_uid == os.getuid() and not st.st_mode & 0o022


def _build() -> ctypes.CDLL:
    tag = hashlib.sha256((C_SOURCE + sys.platform + os.uname().machine).encode()).hexdigest()[:16]
    folder = _cache_dir()
    if not _private_dir(folder):
        raise OSError(f"{folder} is not a private folder")
    lib = folder / f"hmac-{tag}.so"
    if not lib.exists():
        cc = os.environ.get("CC", "cc")
        with tempfile.TemporaryDirectory(dir=folder) as tmp:
            src = Path(tmp) / "hmac.c"
            src.write_text(C_SOURCE)
            out = Path(tmp) / "hmac.so"
            try:
                r = subprocess.run([cc, "-O2", "-shared", "-fPIC", "-o", str(out), str(src)],
                                   capture_output=True, text=True, timeout=120)
            except FileNotFoundError:
                raise OSError(f"no C compiler ({cc!r} not found; set CC or install gcc)") from None
            if r.returncode != 0:
                why = (r.stderr.strip().splitlines() or [f"exit status {r.returncode}"])[-1]
                raise OSError(f"the C compiler {cc!r} failed: {why}")
            os.chmod(out, 0o500)
            os.replace(out, lib)  # atomic: a concurrent run sees the old state or the whole file
    st = lib.stat()
    if st.st_uid != os.getuid() or st.st_mode & 0o022:
        raise OSError(f"{lib} is writable by others")
    return ctypes.CDLL(str(lib))


def _load():
    """(our library, libcrypto) or raise."""
    name = ctypes.util.find_library("crypto")
    if not name:
        raise OSError("libcrypto not found")
    crypto = ctypes.CDLL(name)
    lib = _build()
    for f in (crypto.SHA256_Init, crypto.SHA256_Update, crypto.SHA256_Final):
        f.restype = ctypes.c_int
    lib.hmac_prepare.restype = lib.hmac_views.restype = ctypes.c_int
    return lib, crypto


class NativeHmac:
    """HMAC-SHA256 of a polars String column under one key, truncated to ``hex_chars``."""

    def __init__(self, lib, crypto, key: bytes, hex_chars: int):
        self._lib, self._crypto, self.hex_chars = lib, crypto, hex_chars
        self._inner, self._outer = _CTX(), _CTX()
        self._update = ctypes.cast(crypto.SHA256_Update, ctypes.c_void_p)
        self._final = ctypes.cast(crypto.SHA256_Final, ctypes.c_void_p)
        rc = lib.hmac_prepare(key, ctypes.c_size_t(len(key)), self._inner, self._outer,
                              ctypes.cast(crypto.SHA256_Init, ctypes.c_void_p), self._update)
        if rc != 0:
            raise ValueError(f"hmac_prepare failed ({rc})")

    def __call__(self, s):
        import numpy as np
        import polars as pl
        import pyarrow as pa
        import pyarrow.compute as pc

        s = s.cast(pl.String)
        a = s.to_arrow(compat_level=pl.CompatLevel.newest())
        chunks = a.chunks if isinstance(a, pa.ChunkedArray) else [a]
        out = [self._chunk(ch.cast(pa.string_view()) if ch.type != pa.string_view() else ch, np, pa, pc)
               for ch in chunks]
        res = pa.chunked_array(out, pa.string_view()) if out else pa.array([], pa.string_view())
        return pl.from_arrow(res).cast(pl.String).alias(s.name)

    def _chunk(self, ch, np, pa, pc):
        n = len(ch)
        if n == 0 or ch.null_count == n:
            return pa.nulls(n, pa.string_view())
        bufs = ch.buffers()
        valid, views, data = bufs[0], bufs[1], bufs[2:]
        ptrs = (ctypes.c_void_p * max(1, len(data)))(*[b.address if b is not None else 0 for b in data])
        ov = np.empty(16 * n, np.uint8)
        od = np.empty(self.hex_chars * n, np.uint8)
        rc = self._lib.hmac_views(
            ctypes.c_void_p(views.address + 16 * ch.offset), ctypes.c_int64(n), ptrs,
            ctypes.c_void_p(valid.address) if valid is not None and ch.null_count else None,
            ctypes.c_int64(ch.offset), self._inner, self._outer, ctypes.c_int(self.hex_chars),
            ov.ctypes.data_as(ctypes.c_void_p), od.ctypes.data_as(ctypes.c_void_p), self._update, self._final)
        if rc != 0:
            raise RuntimeError(f"native HMAC failed ({rc})")
        vb = pc.is_valid(ch).buffers()[1] if ch.null_count else None
        return pa.Array.from_buffers(pa.string_view(), n, [vb, pa.py_buffer(ov), pa.py_buffer(od)],
                                     null_count=ch.null_count)


def _self_test(lib, crypto) -> None:
    """The native result must equal Python's hmac: on every length from 0 to 200 bytes (inline
    views up to 12 bytes, and the SHA-256 padding boundaries at 55/56 and 119/120 bytes), on nulls,
    non-ASCII text, a sliced column and a column of several chunks, for both output widths."""
    import polars as pl

    key = hashlib.sha256(b"self-test").hexdigest()
    every_length = ["".join("0123456789abcdefghijklmnopqrstuvwxyz"[(7 * i + n) % 36] for i in range(n))
                    for n in range(201)]
    values = ["", "1", "123456782", "012345678", "999999999999", "1234567890123", "ë" * 20,
              None, "x" * 200, None, "111222333"] * 3 + every_length
    s = pl.Series("v", values, dtype=pl.String)
    for hex_chars in (32, 64):
        f = NativeHmac(lib, crypto, key.encode("ascii"), hex_chars)
        for part in (s, s.slice(5, 20), pl.concat([s.slice(0, 7), s.slice(7)], rechunk=False)):
            got = f(part).to_list()
            want = [None if v is None else hmac.new(key.encode("ascii"), v.encode(), hashlib.sha256).hexdigest()[:hex_chars]
                    for v in part.to_list()]
            if got != want:
                raise AssertionError("self-test failed: the native HMAC differs from Python's hmac")


def enabled() -> bool:
    """The native HMAC is on unless ``DATA_INGEST_NATIVE_HMAC`` is 0/no/false/off. It loads our C
    (built from the source above, self-tested before use) into the process that holds the keys,
    as polars-hash loads its Rust; a site that wants no code of ours there turns it off and pays
    about twice the CPU for pseudonyms."""
    return os.environ.get(ENV_SWITCH, "1").strip().lower() not in ("0", "no", "false", "off")


def available(force: bool = False) -> bool:
    """Whether the native HMAC can be used here (enabled, built, loaded and self-tested once per
    process); ``force`` ignores ``DATA_INGEST_NATIVE_HMAC=0`` (for tests)."""
    if not (force or enabled()):
        return False
    with _lock:
        if "ok" not in _state:
            try:
                if sys.platform != "linux":
                    raise OSError("native HMAC is built on Linux only")
                lib, crypto = _load()
                _self_test(lib, crypto)
                _state.update(ok=True, lib=lib, crypto=crypto)
            except Exception as e:  # noqa: BLE001 - any failure means: use polars-hash
                _state.update(ok=False, error=f"{type(e).__name__}: {e}")
    return bool(_state["ok"])


def hmac_function(key_hex: str, hex_chars: int):
    """A function Series -> Series computing the truncated hex HMAC (the key is its hex text's
    ASCII bytes, as everywhere in data_ingest), or None when the native code is not available."""
    if not available():
        return None
    return NativeHmac(_state["lib"], _state["crypto"], key_hex.encode("ascii"), hex_chars)


def status() -> str:
    """One line for the ingest summary, logs and the benchmark: which HMAC implementation runs."""
    if available():
        return "native (precomputed HMAC state, OpenSSL SHA-256; self-tested)"
    if not enabled():
        return f"polars-hash ({ENV_SWITCH}=0)"
    return "polars-hash" + (f" (native unavailable: {_state['error']})" if _state.get("error") else "")


def main() -> int:
    """``python -m data_ingest.native``: build, load and self-test now (bootstrap runs it, so the
    first ingest does not compile), and say which HMAC ingest will use. Exit 1 when the native
    HMAC is enabled but unavailable (ingest still works, with polars-hash)."""
    line = status()
    print(f"data_ingest HMAC: {line}")
    return 0 if line.startswith("native") or not enabled() else 1


if __name__ == "__main__":
    sys.exit(main())
