"""``townsquare keys`` and ``townsquare usage``: accounts and the billing report."""

from __future__ import annotations

import json
from datetime import UTC, datetime

from click.testing import CliRunner

from service_helpers import POSTS, Api, make_runtime, serve_app
from townsquare.cli import main
from townsquare.service.gate.auth import KEY_RE, lookup


def run(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, list(args))
    return result.exit_code, result.output


def test_keys_create_list_revoke() -> None:
    code, out = run("keys", "create", "--tier", "premium", "--name", "acme")
    assert code == 0, out
    plaintext = out.splitlines()[0]
    assert KEY_RE.match(plaintext)
    code, out = run("keys", "list")
    assert code == 0 and "acme" in out and "premium" in out
    assert plaintext not in out  # never shown again
    listed = json.loads(run("keys", "list", "--json")[1])
    assert [(k["name"], k["tier"], k["revoked_at"]) for k in listed] == [("acme", "premium", None)]
    runtime = make_runtime()
    assert lookup(runtime.store, plaintext) is not None
    runtime.close()

    code, out = run("keys", "revoke", "acme")
    assert code == 0
    assert json.loads(run("keys", "list", "--json")[1]) == []
    assert json.loads(run("keys", "list", "--all", "--json")[1])[0]["revoked_at"]
    code, out = run("keys", "revoke", "acme")
    assert code == 1 and "no live key" in out


def test_keys_create_refuses_an_unknown_tier() -> None:
    code, out = run("keys", "create", "--tier", "gold", "--name", "acme")
    assert code == 2 and "unknown tier 'gold'" in out and "premium" in out


async def test_usage_report_per_key_and_month() -> None:
    async with serve_app(POSTS) as api:
        acme, other = api.key("acme"), api.key("other")
        chat = {"model": "townsquare", "messages": [{"role": "user", "content": "storm?"}]}
        for _ in range(2):
            await api.client.post("/v1/chat/completions", json=chat, headers=Api.auth(acme))
        await api.client.post("/v1/search", json={"query": "storm"}, headers=Api.auth(other))
        await api.services.ledger.flush()
    month = f"{datetime.now(UTC):%Y-%m}"
    code, out = run("usage", "--json")
    assert code == 0, out
    report = json.loads(out)
    assert report["month"] == month
    rows = {(r["key"], r["model"]): r for r in report["usage"]}
    assert rows[("acme", "townsquare")]["requests"] == 2
    assert rows[("acme", "townsquare")]["prompt_tokens"] > 0
    assert rows[("other", "search")]["requests"] == 1

    code, out = run("usage", "--key", "acme", "--month", month, "--json")
    assert {r["key"] for r in json.loads(out)["usage"]} == {"acme"}
    code, out = run("usage", "--key", "acme")
    assert code == 0 and "acme" in out and "townsquare" in out and "total" in out
    code, out = run("usage", "--month", "1999-01", "--json")
    assert json.loads(out)["usage"] == []
    assert run("usage", "--month", "all", "--json")[0] == 0
    code, out = run("usage", "--month", "November")
    assert code == 2
    code, out = run("usage", "--key", "nobody")
    assert code == 2 and "nobody" in out
