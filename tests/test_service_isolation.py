"""Two keys, every route that takes an id: conversations and usage never cross keys.

Decided and documented in ``service/data.py``: posts are shared public data
(any valid key reads any post, both keys see the same post); conversations
and usage belong to the key that made them.
"""

from __future__ import annotations

from service_helpers import POSTS, Api, error_of, serve_app


async def test_conversations_and_usage_are_scoped_per_key_posts_are_shared() -> None:
    async with serve_app(POSTS) as api:
        alice, bob = Api.auth(api.key("alice")), Api.auth(api.key("bob"))
        chat = {"model": "townsquare",
                "messages": [{"role": "user", "content": "what about the storm?"}]}
        mine = (await api.client.post("/v1/chat/completions", json=chat, headers=alice)).json()
        conv_id = mine["conversation_id"]

        # GET /v1/conversations/{id}: the owner reads it, the other key gets 404 (not 403:
        # another key's conversation is indistinguishable from one that does not exist).
        assert (await api.client.get(f"/v1/conversations/{conv_id}", headers=alice)) \
            .status_code == 200
        other = await api.client.get(f"/v1/conversations/{conv_id}", headers=bob)
        assert other.status_code == 404
        assert error_of(other)["code"] == "conversation_not_found"

        # POST /v1/chat/completions with conversation_id, streamed and not.
        for stream in (False, True):
            hijack = await api.client.post(
                "/v1/chat/completions", headers=bob,
                json={**chat, "conversation_id": conv_id, "stream": stream})
            assert hijack.status_code == 404, hijack.text
        own = await api.client.get(f"/v1/conversations/{conv_id}", headers=alice)
        assert len(own.json()["messages"]) == 2  # bob's attempts added nothing

        # GET /v1/posts/{id}: public data, the same for both keys.
        a = await api.client.get("/v1/posts/jsonl:s3", headers=alice)
        b = await api.client.get("/v1/posts/jsonl:s3", headers=bob)
        assert a.status_code == b.status_code == 200 and a.json() == b.json()

        # GET /v1/usage: each key sees only its own.
        usage_a = (await api.client.get("/v1/usage", headers=alice)).json()
        usage_b = (await api.client.get("/v1/usage", headers=bob)).json()
        assert usage_a["key"]["name"] == "alice" and usage_b["key"]["name"] == "bob"
        assert {r["model"]: r["requests"] for r in usage_a["data"]} == {
            "townsquare": 1, "posts": 1}
        assert {r["model"] for r in usage_b["data"]} == {"posts"}  # bob only read a post
        assert usage_b["quota"]["used_this_month"] == 0
