"""Dead letters: messages that ran out of deliveries, moved into the store's quarantine.

When a message is delivered ``max_deliver`` times without an ack (every
worker that took it crashed or hung), JetStream stops redelivering it and
publishes a MAX_DELIVERIES advisory with the message's stream sequence. The
``<stream>_DEAD`` stream captures those advisories (so none is lost while no
worker runs), and every index worker consumes it through a second durable
consumer, ``<durable>_dead``, filtered to its own consumer's advisories: it
fetches the original message by sequence and stores it in the quarantine
with the reason, then acks the advisory. Quarantine is where an operator
looks (``townsquare quarantine``), whatever the source of the bad input.
"""

from __future__ import annotations

import asyncio
import json
import logging

import nats.errors
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from nats.js.errors import NotFoundError

from townsquare.bus.config import BusConfig, bind_consumer
from townsquare.model import quarantine
from townsquare.store.base import Store

log = logging.getLogger(__name__)


class DeadLetters:
    """Moves one consumer's exhausted messages into the quarantine."""

    def __init__(self, js: JetStreamContext, cfg: BusConfig, store: Store, durable: str) -> None:
        self.js = js
        self.cfg = cfg
        self.store = store
        self.durable = durable
        self.name = f"{durable}_dead"
        self.stream_key = f"nats:{cfg.dead_stream}/{self.name}"
        self._sub: JetStreamContext.PullSubscription | None = None

    async def bind(self) -> None:

        await bind_consumer(self.js, self.cfg.dead_stream, ConsumerConfig(
            durable_name=self.name, ack_policy=AckPolicy.EXPLICIT,
            deliver_policy=DeliverPolicy.ALL, ack_wait=30.0, max_deliver=10,
            filter_subject=self.cfg.advisory_subject(self.durable),
        ))
        self._sub = await self.js.pull_subscribe_bind(durable=self.name,
                                                      stream=self.cfg.dead_stream)

    async def run(self, stop: asyncio.Event) -> None:
        assert self._sub is not None
        while not stop.is_set():
            try:
                msgs = await self._sub.fetch(16, timeout=1.0)
            except (TimeoutError, nats.errors.TimeoutError):
                continue
            except Exception:  # the connection is closing, or a blip: try again
                await asyncio.sleep(1.0)
                continue
            for msg in msgs:
                try:
                    await self._handle(msg.data)
                    await msg.ack()
                except Exception:
                    log.exception("dead letter not stored yet; will retry")
                    await msg.nak(delay=5.0)

    async def _handle(self, advisory: bytes) -> None:
        info = json.loads(advisory)
        seq = int(info.get("stream_seq", 0))
        deliveries = info.get("deliveries", "?")
        try:
            original = await self.js.get_msg(self.cfg.stream, seq)
            raw, subject = original.data or b"", original.subject
        except NotFoundError:
            raw, subject = advisory, "(message no longer in the stream)"
        reason = (f"dead letter: {subject} (stream seq {seq}) was delivered {deliveries} times "
                  f"to consumer {self.durable} without being acknowledged")
        await asyncio.to_thread(self.store.apply, self.stream_key,
                                [quarantine("nats", raw, reason)], str(seq))

    async def idle(self) -> bool:
        assert self._sub is not None
        info = await self._sub.consumer_info()
        return info.num_pending == 0 and info.num_ack_pending == 0
