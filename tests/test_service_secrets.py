"""Secrets at rest and in responses: a private home, admin-only source details and
/metrics, and admin keys made by the CLI."""

from __future__ import annotations

import json
import stat
from pathlib import Path

from service_helpers import POSTS, Api, make_runtime, serve_app, townsquare
from test_service_supervisor import closed_port, wait_for
from townsquare.ingest.supervisor import Supervisor
from townsquare.sources.jetstream import JetstreamSource


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_the_home_and_its_files_are_private(home: Path) -> None:
    home.chmod(0o755)
    made = townsquare(home, "keys", "create", "--name", "ops", "--admin", "--json")
    assert json.loads(made.stdout)["tier"] == "admin"
    assert mode(home) == 0o700
    files = [p for p in home.iterdir() if p.is_file()]
    assert any(p.name == "townsquare.db" for p in files)
    for path in files:
        assert mode(path) == 0o600, path
    both = townsquare(home, "keys", "create", "--name", "x", "--admin", "--tier", "free",
                      check=False)
    assert both.returncode == 2 and "--admin" in both.stderr


async def test_watch_secrets_live_in_the_private_store(home: Path) -> None:
    async with serve_app() as api:
        resp = await api.client.post("/v1/watches", json={"query": "storm"},
                                     headers=Api.auth(api.key("a")))
        assert resp.status_code == 200
        assert api.runtime.store.watches()[0].secret.startswith("whsec_")
    # No second file holds secrets: the database is private like the rest of the home
    # (test_the_home_and_its_files_are_private).
    assert not (home / "watches.json").exists()
    assert mode(home) == 0o700


async def test_source_specs_errors_and_metrics_are_for_admin_keys_only() -> None:
    runtime = make_runtime()
    port = closed_port()
    spec = f"jetstream:ws://127.0.0.1:{port}/subscribe?token=SEKRIT"
    jet = JetstreamSource(f"ws://127.0.0.1:{port}/subscribe?token=SEKRIT", reconnect_base=0.01,
                          reconnect_cap=0.05)
    sup = Supervisor(runtime.store, runtime.embedder, [(spec, jet)])
    async with serve_app(POSTS, runtime=runtime, supervisor=sup) as api:
        user, admin = Api.auth(api.key("customer", "business")), Api.auth(api.key("ops", "admin"))
        await wait_for(lambda: sup.statuses()[0].last_error is not None)
        seen = (await api.client.get("/v1/live", headers=user)).json()
        (source,) = seen["sources"]
        assert source["name"] == f"jetstream:ws://127.0.0.1:{port}/subscribe"
        assert source["status"] == "unreachable"
        assert "SEKRIT" not in json.dumps(seen)
        assert "admin" in source["last_error"] and "127.0.0.1" not in source["last_error"]
        full = (await api.client.get("/v1/live", headers=admin)).json()
        assert full["sources"][0]["name"] == spec
        assert "refused" in full["sources"][0]["last_error"].lower()
        denied = await api.client.get("/metrics", headers=user)
        assert denied.status_code == 403 and denied.json()["error"]["code"] == "admin_required"
        metrics = await api.client.get("/metrics", headers=admin)
        assert metrics.status_code == 200 and "townsquare_http_requests_total" in metrics.text


def test_credentials_are_stripped_from_source_specs() -> None:
    from townsquare.service.routes.data import strip_credentials

    assert strip_credentials(
        "mastodon:https://bot:pw@social.example:8443/api/v1/streaming?access_token=T#x"
    ) == "mastodon:https://social.example:8443/api/v1/streaming"
    assert strip_credentials("jsonl:/data/posts.jsonl") == "jsonl:/data/posts.jsonl"
