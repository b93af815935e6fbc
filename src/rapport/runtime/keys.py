"""API keys: generated once, shown once, stored only as a SHA-256 hash.

Keys are 32 random bytes, so a fast hash is enough (no password stretching is
needed for high-entropy secrets) and lookups stay O(1) on the ingest path.
Write keys (``wk_``) can only ingest; they ship in web pages. Secret keys
(``sk_``) reach the admin API.
"""

from __future__ import annotations

import hashlib
import secrets

KEY_PREFIX = {"write": "wk_", "secret": "sk_"}


def generate_key(kind: str) -> str:
    if kind not in KEY_PREFIX:
        raise ValueError(f"key kind must be 'write' or 'secret', not {kind!r}")
    return KEY_PREFIX[kind] + secrets.token_urlsafe(32)


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8")).hexdigest()
