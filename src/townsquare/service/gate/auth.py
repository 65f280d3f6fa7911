"""API keys: how they look, how they are stored, how a request is matched to one.

A key is ``ts-<prefix>-<secret>``: ``prefix`` is 8 hex characters stored in
clear so the key can be found (and named in ``keys list`` and ``keys revoke``)
without storing the key; ``secret`` carries 256 random bits. The store keeps
only ``sha256`` of the whole key. A slow password hash (scrypt) buys nothing
for a 256-bit random secret, which cannot be guessed however fast the hash,
and would cost milliseconds on every request. Hashes are compared with
:func:`hmac.compare_digest`, so timing tells nothing about how much matched.

:class:`Authenticator` resolves a bearer token to a :class:`Principal` (the
key and its tier) and remembers positive answers for a few seconds, so a
revocation takes effect within ``cache_s`` in every running server.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
import secrets
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from townsquare.config import ADMIN_TIER, Tier
from townsquare.errors import RequestError
from townsquare.store.base import ApiKeyRecord, Store

KEY_RE = re.compile(r"^ts-([0-9a-f]{8})-([A-Za-z0-9_\-]{20,200})$")
WEB_KEY_NAME = "web"
WEB_KEY_TIER = "business"


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling: one API key and the tier it belongs to."""

    key_id: int
    name: str
    prefix: str
    tier_name: str
    tier: Tier

    @property
    def admin(self) -> bool:
        """An operator key (``keys create --admin``): sees source specs, raw errors, /metrics."""
        return self.tier_name == ADMIN_TIER

    @property
    def owner(self) -> str:
        """The owner string conversations are stored under (one key never reads another's)."""
        return f"key:{self.key_id}"


@dataclass(frozen=True, slots=True)
class NewKey:
    plaintext: str
    prefix: str
    key_hash: str


class AuthError(RequestError):
    """Why a request was refused: ``status`` 401 (who are you?) or 403 (not allowed)."""

    def __init__(self, status: int, message: str, code: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        if status == 403:
            self.error_type = "permission_error"

    def headers(self) -> dict[str, str]:
        return {"WWW-Authenticate": "Bearer"} if self.status == 401 else {}


def hash_key(plaintext: str) -> str:
    return "sha256:" + hashlib.sha256(plaintext.encode("utf-8")).hexdigest()


def generate_key() -> NewKey:
    prefix = secrets.token_hex(4)
    plaintext = f"ts-{prefix}-{secrets.token_urlsafe(32)}"
    return NewKey(plaintext, prefix, hash_key(plaintext))


def verify(plaintext: str, record: ApiKeyRecord) -> bool:
    return hmac.compare_digest(hash_key(plaintext), record.key_hash)


def create_key(
    store: Store, name: str, tier: str, tiers: dict[str, Tier]
) -> tuple[str, ApiKeyRecord]:
    """Create a key in a configured tier; returns the plaintext (shown once) and the record."""
    if tier not in tiers:
        raise ValueError(f"unknown tier {tier!r}; configured tiers: {', '.join(sorted(tiers))}")
    if not name.strip():
        raise ValueError("a key needs a name (e.g. the customer's)")
    new = generate_key()
    record = store.create_api_key(name.strip(), tier, new.prefix, new.key_hash)
    return new.plaintext, record


def lookup(store: Store, plaintext: str) -> ApiKeyRecord | None:
    """The live (unrevoked) record a plaintext key belongs to, or None."""
    m = KEY_RE.match(plaintext)
    if not m:
        return None
    found = None
    for record in store.api_keys_by_prefix(m.group(1)):
        # Check every candidate (prefixes can collide) without stopping early.
        if verify(plaintext, record) and record.revoked_at is None:
            found = record
    return found


class Authenticator:
    """Bearer token -> Principal, with a short positive cache."""

    def __init__(self, store: Store, tiers: dict[str, Tier], cache_s: float = 5.0) -> None:
        self.store = store
        self.tiers = tiers
        self.cache_s = cache_s
        self._cache: dict[str, tuple[float, Principal]] = {}
        self._lock = threading.Lock()

    def authenticate(self, authorization: str | None) -> Principal:
        if not authorization:
            raise AuthError(
                401,
                "You didn't provide an API key. Send it as 'Authorization: Bearer ts-...'; "
                "create one with 'townsquare keys create --tier free --name NAME'.",
                "missing_api_key",
            )
        scheme, _, token = authorization.strip().partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            raise AuthError(401, "Use 'Authorization: Bearer <key>'.", "invalid_api_key")
        digest = hash_key(token)
        now = time.monotonic()
        hit = self._cache.get(digest)
        if hit is not None and hit[0] > now:
            return hit[1]
        record = lookup(self.store, token)
        if record is None:
            raise AuthError(
                401,
                f"Incorrect API key provided: {_redact(token)}. Keys are listed by "
                "'townsquare keys list'.",
                "invalid_api_key",
            )
        tier = self.tiers.get(record.tier)
        if tier is None:
            raise AuthError(
                403,
                f"This key's tier {record.tier!r} is not configured on this server "
                f"(configured: {', '.join(sorted(self.tiers))}).",
                "tier_not_configured",
            )
        principal = Principal(record.id, record.name, record.prefix, record.tier, tier)
        with self._lock:
            if len(self._cache) > 10_000:
                self._cache.clear()
            self._cache[digest] = (now + self.cache_s, principal)
        return principal

    def forget(self) -> None:
        """Drop cached answers (after a revocation in this process)."""
        with self._lock:
            self._cache.clear()


def _redact(token: str) -> str:
    return token[:11] + "…" if len(token) > 14 else "…"


def ensure_web_key(store: Store, home: Path, tiers: dict[str, Tier]) -> str:
    """The operator's key for the web page, created on first start (Jupyter-style).

    Kept in ``<home>/web-key`` (mode 0600). A missing, unreadable or revoked
    key is replaced by a new one.
    """
    path = home / "web-key"
    try:
        existing = path.read_text(encoding="utf-8").strip()
    except OSError:
        existing = ""
    if existing and lookup(store, existing) is not None:
        return existing
    tier = WEB_KEY_TIER if WEB_KEY_TIER in tiers else sorted(tiers)[0]
    plaintext, _ = create_key(store, WEB_KEY_NAME, tier, tiers)
    tmp = path.with_name(".web-key.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(plaintext + "\n")
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)
    return plaintext
