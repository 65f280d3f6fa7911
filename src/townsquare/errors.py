"""Every error townsquare raises on purpose, under one base.

Each class says what it means for a caller of the HTTP API: its ``status``,
OpenAI's error ``type`` and ``code``, and the ``param`` it concerns. The
service maps them to responses in one place
(:func:`townsquare.service.errors.install_error_handlers`); the CLI shows the
message. The classes live with the code that raises them (listed on the
right) and keep their older builtin bases, so ``except ValueError`` and
``except KeyError`` written against them still work.

Hierarchy::

    TownsquareError                    500 server_error
    ├── RequestError                   400 invalid_request_error   the caller asked wrongly
    │   ├── NotFound                   404
    │   │   ├── ConversationNotFound   404 conversation_not_found  townsquare.answer.engine
    │   │   ├── UnknownPersona         404 model_not_found         townsquare.answer.personas
    │   │   └── UnknownModel           404 model_not_found         townsquare.answer.engine
    │   ├── UnknownBackend             400 unknown_backend         townsquare.registry
    │   ├── AuthError                  401/403 (its own status)    townsquare.service.gate.auth
    │   ├── DestinationRefused         400 webhook_refused         townsquare.watches.guard
    │   └── ApiError                   any (its own status)        townsquare.service.errors
    ├── DataError                      400 invalid_value           input that does not parse
    │   ├── DecodeError                                            townsquare.bus.codec
    │   ├── SetError                                               townsquare.eval.sets
    │   └── FeedError                                              townsquare.sources._feeds
    ├── ConfigError                    500 configuration_error     settings that cannot work
    │   └── SourceError                                            townsquare.sources.base
    └── BackendError                   502 upstream_error          something we depend on failed
        ├── LLMError                   502                         townsquare.llm.base
        │   └── LLMUnavailable         503 service_unavailable     townsquare.llm.base
        ├── UpstreamError              502                         townsquare.sources.mastodon
        ├── PostgresUnavailable        503 store_unavailable       townsquare.store.postgres
        └── BusError                   502                         townsquare.bus.config

``Retry-After`` comes from :meth:`TownsquareError.headers` (``LLMUnavailable``
sets it from its ``retry_after``).
"""

from __future__ import annotations


class TownsquareError(Exception):
    """The base of townsquare's own errors; the class attributes are its HTTP meaning."""

    #: HTTP status of a response reporting this error.
    status: int = 500
    #: OpenAI's ``error.type``.
    error_type: str = "server_error"
    #: OpenAI's ``error.code``.
    code: str = "internal_error"
    #: The request field concerned, if any.
    param: str | None = None
    #: Put before the message in an HTTP response ("The answer backend failed: ...").
    prefix: str = ""

    def public_message(self) -> str:
        """The message an HTTP caller sees."""
        return self.prefix + str(self)

    def headers(self) -> dict[str, str]:
        """Headers an HTTP response carries with it."""
        return {}


class RequestError(TownsquareError):
    """The request cannot be served as asked."""

    status = 400
    error_type = "invalid_request_error"
    code = "invalid_request"


class NotFound(RequestError):
    """Something the request names does not exist (for this caller)."""

    status = 404
    code = "not_found"


class DataError(TownsquareError):
    """Input that does not parse: a bus message, an eval set, a feed document."""

    status = 400
    error_type = "invalid_request_error"
    code = "invalid_value"


class ConfigError(TownsquareError):
    """Settings or a source spec that cannot work (a bad path, a bad URL)."""

    code = "configuration_error"


class BackendError(TownsquareError):
    """A service townsquare depends on (an LLM server, a source, the bus) failed."""

    status = 502
    error_type = "server_error"
    code = "upstream_error"


__all__ = ["BackendError", "ConfigError", "DataError", "NotFound", "RequestError",
           "TownsquareError"]
