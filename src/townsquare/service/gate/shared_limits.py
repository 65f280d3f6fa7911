"""Per-key rate limits shared by every replica through Redis (``redis_url``).

The same limits as :class:`townsquare.service.gate.limits.RateLimiter` (sliding
one-minute windows of requests and tokens, a concurrency cap), kept in
Redis so that N ``serve`` replicas give a key its tier once, not N times.
Per key (named by its id and public prefix, so two databases sharing one
Redis never mix their keys):

- ``<ns>:<key>:req``: a sorted set, one member per admitted request, scored
  by its time;
- ``<ns>:<key>:tok``: one member per charge, ``<tokens>:<nonce>``, scored by time;
- ``<ns>:<key>:run``: the concurrency leases, scored by their expiry. A
  replica that dies holding a slot frees it when the lease expires
  (``lease_s``, default 15 min; a stream longer than that stops counting).

Admission is one Lua script (trim, check the three limits, count the
request, take a lease), so concurrent replicas cannot both take the last
slot, and it reads Redis's clock, so replicas' clocks need not agree.
Token charges are sent in the background: a request never waits for them.

If Redis cannot be reached the limiter falls back to the in-process one
(and logs it): a Redis outage must not take the API down with it.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from typing import Any

from townsquare.service.gate.auth import Principal
from townsquare.service.gate.limits import WINDOW_S, Admission, RateLimiter, Refusal, format_reset

log = logging.getLogger(__name__)

_ADMIT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local win = tonumber(ARGV[1])
local rpm, tpm, conc = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local uses_tokens, lease, lease_ms = ARGV[5] == '1', ARGV[6], tonumber(ARGV[7])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - win)
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now - win)
redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', now)
local nreq = redis.call('ZCARD', KEYS[1])
local toks = redis.call('ZRANGE', KEYS[2], 0, -1, 'WITHSCORES')
local used = 0
for i = 1, #toks, 2 do used = used + tonumber(string.match(toks[i], '^(%d+):')) end
local function oldest(key)
  local o = redis.call('ZRANGE', key, 0, 0, 'WITHSCORES')
  if #o == 0 then return 0 end
  return tonumber(o[2]) + win - now
end
local function answer(code, wait)
  return {code, wait, nreq, oldest(KEYS[1]), used, oldest(KEYS[2])}
end
if conc > 0 and redis.call('ZCARD', KEYS[3]) >= conc then return answer(1, 1000) end
if rpm > 0 and nreq >= rpm then
  local o = redis.call('ZRANGE', KEYS[1], nreq - rpm, nreq - rpm, 'WITHSCORES')
  return answer(2, tonumber(o[2]) + win - now)
end
if uses_tokens and tpm > 0 and used >= tpm then
  local excess = used - tpm + 1
  for i = 1, #toks, 2 do
    excess = excess - tonumber(string.match(toks[i], '^(%d+):'))
    if excess <= 0 then return answer(3, tonumber(toks[i + 1]) + win - now) end
  end
  return answer(3, win)
end
if rpm > 0 then
  redis.call('ZADD', KEYS[1], now, lease)
  redis.call('PEXPIRE', KEYS[1], win)
  nreq = nreq + 1
end
if conc > 0 then
  redis.call('ZADD', KEYS[3], now + lease_ms, lease)
  redis.call('PEXPIRE', KEYS[3], lease_ms)
end
return answer(0, 0)
"""

_CHARGE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZADD', KEYS[1], now, ARGV[1])
redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[2]))
return 1
"""


class RedisRateLimiter:
    """The gate's limiter with its state in Redis (see the module docstring)."""

    def __init__(
        self, url: str, namespace: str = "townsquare:rl", lease_s: float = 900.0,
        fallback: RateLimiter | None = None,
    ) -> None:
        import redis.asyncio as aioredis

        self.url = url
        self.namespace = namespace
        self.lease_ms = int(lease_s * 1000)
        self.fallback = fallback or RateLimiter()
        self._redis: Any = aioredis.Redis.from_url(url, socket_timeout=2.0,
                                                   socket_connect_timeout=2.0)
        self._admit = self._redis.register_script(_ADMIT)
        self._charge = self._redis.register_script(_CHARGE)
        self._headers: dict[int, dict[str, str]] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._down_logged = False

    def _keys(self, who: Principal) -> list[str]:
        base = f"{self.namespace}:{who.key_id}-{who.prefix}"
        return [f"{base}:req", f"{base}:tok", f"{base}:run"]

    def _redis_failed(self, exc: Exception) -> None:
        if not self._down_logged:
            self._down_logged = True
            log.error("rate limits: Redis at %s failed (%s); limiting per process until it "
                      "answers again", self.url, exc)

    async def admit(self, who: Principal, uses_tokens: bool) -> Admission:
        tier = who.tier
        lease = f"{secrets.token_hex(8)}"
        try:
            code, wait_ms, nreq, req_reset, used, tok_reset = await self._admit(
                keys=self._keys(who),
                args=[int(WINDOW_S * 1000), tier.requests_per_minute, tier.tokens_per_minute,
                      tier.concurrent_requests, int(uses_tokens), lease, self.lease_ms],
            )
        except Exception as exc:  # redis.RedisError, OSError: keep serving
            self._redis_failed(exc)
            return await self.fallback.admit(who, uses_tokens)
        self._down_logged = False
        self._headers[who.key_id] = _headers(who, int(nreq), int(req_reset), int(used),
                                             int(tok_reset))
        refusal = _refusal(who, int(code), max(0, int(wait_ms)) / 1000)
        return Admission(refusal, None if refusal else f"redis:{lease}")

    async def leave(self, who: Principal, admission: Admission) -> None:
        ticket = admission.ticket
        if ticket is None:  # admitted by the fallback
            await self.fallback.leave(who, admission)
            return
        if who.tier.concurrent_requests:
            try:
                await self._redis.zrem(self._keys(who)[2], ticket.removeprefix("redis:"))
            except Exception as exc:  # the lease expires on its own
                self._redis_failed(exc)

    def charge_tokens(self, who: Principal, tokens: int) -> None:
        if not who.tier.tokens_per_minute or tokens <= 0:
            return
        self.fallback.charge_tokens(who, tokens)
        member = f"{int(tokens)}:{secrets.token_hex(6)}"
        task = asyncio.get_running_loop().create_task(self._send_charge(who, member))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _send_charge(self, who: Principal, member: str) -> None:
        try:
            await self._charge(keys=[self._keys(who)[1]], args=[member, int(WINDOW_S * 1000)])
        except Exception as exc:
            self._redis_failed(exc)

    def headers(self, who: Principal) -> dict[str, str]:
        """The figures Redis gave when this key's last request was admitted."""
        return self._headers.get(who.key_id) or self.fallback.headers(who)

    async def aclose(self) -> None:
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._redis.aclose()


def _refusal(who: Principal, code: int, wait: float) -> Refusal | None:
    tier = who.tier
    if code == 0:
        return None
    if code == 1:
        return Refusal(
            "concurrency",
            f"Too many concurrent requests for key {who.name!r} on tier {who.tier_name!r}: "
            f"limit {tier.concurrent_requests} across all servers. Wait for one to finish.",
            1.0,
        )
    if code == 2:
        return Refusal(
            "requests",
            f"Rate limit reached for key {who.name!r} on requests per min (RPM): limit "
            f"{tier.requests_per_minute}. Please try again in {format_reset(wait)}.",
            wait,
        )
    return Refusal(
        "tokens",
        f"Rate limit reached for key {who.name!r} on tokens per min (TPM): limit "
        f"{tier.tokens_per_minute}. Please try again in {format_reset(wait)}.",
        wait,
    )


def _headers(who: Principal, nreq: int, req_reset_ms: int, used: int,
             tok_reset_ms: int) -> dict[str, str]:
    tier = who.tier
    out: dict[str, str] = {}
    if tier.requests_per_minute:
        out["x-ratelimit-limit-requests"] = str(tier.requests_per_minute)
        out["x-ratelimit-remaining-requests"] = str(max(0, tier.requests_per_minute - nreq))
        out["x-ratelimit-reset-requests"] = format_reset(max(0, req_reset_ms) / 1000)
    if tier.tokens_per_minute:
        out["x-ratelimit-limit-tokens"] = str(tier.tokens_per_minute)
        out["x-ratelimit-remaining-tokens"] = str(max(0, tier.tokens_per_minute - used))
        out["x-ratelimit-reset-tokens"] = format_reset(max(0, tok_reset_ms) / 1000)
    return out
