"""Property-based: schemathesis generates requests from /openapi.json; no answer is a 5xx.

Bounded (a few examples per operation) so the suite stays fast; run it with
more examples by raising ``MAX_EXAMPLES``.
"""

from __future__ import annotations

import asyncio
from typing import Any

import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error

from service_helpers import POSTS, add_posts, make_runtime
from townsquare.service.app import create_app
from townsquare.service.gate.auth import create_key

MAX_EXAMPLES = 15


def test_no_generated_request_gets_a_server_error() -> None:
    runtime = make_runtime()
    asyncio.run(add_posts(runtime, POSTS))
    app = create_app(runtime)
    asyncio.run(app.state.services.live.warm_trends())  # what the lifespan does when served
    key, _ = create_key(runtime.store, "fuzz", "roomy", runtime.settings.tiers)
    headers = {"Authorization": f"Bearer {key}"}
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    tested = []
    for result in schema.get_all_operations():
        operation = result.ok()
        tested.append(operation.label)

        @given(case=operation.as_strategy())
        @settings(max_examples=MAX_EXAMPLES, deadline=None, database=None,
                  suppress_health_check=list(HealthCheck))
        def check(case: Any) -> None:
            case.call_and_validate(headers=headers, checks=[not_a_server_error])

        check()
    runtime.close()
    assert "POST /v1/chat/completions" in tested and "POST /v1/search" in tested
