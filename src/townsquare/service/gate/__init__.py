"""The request gate: middleware, API keys, limits and quotas, the usage ledger, metrics,
the search cache and the header timeout; everything a request passes before a route."""
