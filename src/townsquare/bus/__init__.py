"""The NATS JetStream bus: publishers put normalized posts on a stream, index workers store them.

``publish_source`` (``townsquare ingest … --publish nats://…``) and
:class:`IndexWorker` (``townsquare index --from nats://…``); see their
modules for the delivery guarantees, and docs/DEPLOY.md for a deployment.
"""

from townsquare.bus.config import BusConfig, BusError
from townsquare.bus.publisher import PublishStats, publish_source
from townsquare.bus.worker import IndexWorker, WorkerOptions

__all__ = ["BusConfig", "BusError", "IndexWorker", "PublishStats", "WorkerOptions",
           "publish_source"]
