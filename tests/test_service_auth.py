"""API keys: format, hashing, deny-by-default on every route, revocation, the web key."""

from __future__ import annotations

import hmac
import stat
from pathlib import Path

import pytest

from service_helpers import Api, error_of, make_runtime, serve_app
from townsquare.config import DEFAULT_TIERS
from townsquare.service.gate import auth
from townsquare.service.gate.auth import (
    KEY_RE,
    Authenticator,
    AuthError,
    create_key,
    ensure_web_key,
    generate_key,
    hash_key,
    lookup,
)
from townsquare.service.gate.middleware import is_public


def test_keys_look_like_ts_prefix_secret_and_only_the_hash_is_stored(home: Path) -> None:
    new = generate_key()
    assert KEY_RE.match(new.plaintext)
    assert new.plaintext.split("-")[1] == new.prefix
    assert new.key_hash == hash_key(new.plaintext) and new.plaintext not in new.key_hash
    runtime = make_runtime()
    plaintext, record = create_key(runtime.store, "acme", "premium", runtime.settings.tiers)
    assert record.key_hash == hash_key(plaintext) and record.tier == "premium"
    runtime.close()
    secret = plaintext.split("-", 2)[2].encode()
    for path in home.glob("townsquare.db*"):
        assert secret not in path.read_bytes()
        assert plaintext.encode() not in path.read_bytes()


def test_unknown_tier_and_empty_name_are_refused(home: Path) -> None:
    runtime = make_runtime()
    with pytest.raises(ValueError, match="unknown tier 'gold'"):
        create_key(runtime.store, "acme", "gold", runtime.settings.tiers)
    with pytest.raises(ValueError, match="name"):
        create_key(runtime.store, "  ", "free", runtime.settings.tiers)
    runtime.close()


def test_verification_compares_in_constant_time(
    home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    runtime = make_runtime()
    plaintext, _ = create_key(runtime.store, "acme", "free", runtime.settings.tiers)
    calls: list[tuple[str, str]] = []
    real = hmac.compare_digest

    def spy(a: str, b: str) -> bool:
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(auth.hmac, "compare_digest", spy)
    assert lookup(runtime.store, plaintext) is not None
    assert calls and calls[0][0] == hash_key(plaintext)
    # Same prefix, wrong secret: found by prefix, refused by the comparison.
    forged = plaintext[:12] + "A" * (len(plaintext) - 12)
    assert lookup(runtime.store, forged) is None
    assert lookup(runtime.store, "not-a-key") is None
    runtime.close()


def test_revoked_keys_are_refused_and_the_cache_expires(home: Path) -> None:
    runtime = make_runtime()
    plaintext, record = create_key(runtime.store, "acme", "free", runtime.settings.tiers)
    authenticator = Authenticator(runtime.store, runtime.settings.tiers, cache_s=0)
    assert authenticator.authenticate(f"Bearer {plaintext}").key_id == record.id
    assert runtime.store.revoke_api_key("acme")
    with pytest.raises(AuthError) as err:
        authenticator.authenticate(f"Bearer {plaintext}")
    assert err.value.status == 401
    runtime.close()


async def test_every_route_but_the_public_ones_needs_a_key() -> None:
    async with serve_app() as api:
        spec = (await api.client.get("/openapi.json")).json()
        checked = 0
        for template, operations in spec["paths"].items():
            path = (template.replace("{post_id}", "jsonl:1")
                    .replace("{conversation_id}", "conv_x").replace("{model}", "townsquare"))
            for method in operations:
                resp = await api.client.request(method.upper(), path)
                if is_public(template):
                    assert resp.status_code != 401, path
                else:
                    assert resp.status_code == 401, (method, path, resp.status_code)
                    error_of(resp)
                    checked += 1
        assert checked >= 10
        assert (await api.client.get("/healthz")).json()["status"] == "ok"
        # The web page's shell is public too (it holds no data; the key is in the fragment).
        assert (await api.client.get("/")).status_code == 200


async def test_a_revoked_key_stops_working_on_the_server() -> None:
    async with serve_app(auth_cache_s=0) as api:
        key = api.key("leaver", tier="free")
        assert (await api.client.get("/v1/models", headers=Api.auth(key))).status_code == 200
        api.runtime.store.revoke_api_key("leaver")
        resp = await api.client.get("/v1/models", headers=Api.auth(key))
        assert resp.status_code == 401
        assert error_of(resp)["code"] == "invalid_api_key"


def test_the_web_key_is_created_once_with_mode_0600_and_replaced_if_revoked(home: Path) -> None:
    runtime = make_runtime()
    first = ensure_web_key(runtime.store, home, DEFAULT_TIERS)
    path = home / "web-key"
    assert path.read_text().strip() == first
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert ensure_web_key(runtime.store, home, DEFAULT_TIERS) == first
    record = lookup(runtime.store, first)
    assert record is not None and record.tier == "business" and record.name == "web"
    runtime.store.revoke_api_key(record.prefix)
    second = ensure_web_key(runtime.store, home, DEFAULT_TIERS)
    assert second != first and lookup(runtime.store, second) is not None
    runtime.close()
