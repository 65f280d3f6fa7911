"""Settings: defaults < ``<home>/config.toml`` < ``TOWNSQUARE_*`` env vars < CLI flags.

The data directory (``--home`` / ``TOWNSQUARE_HOME``) defaults to the
platform's user data dir and holds the SQLite file, the config file,
user personas (``personas/*.md``) and model caches.
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Any, Literal

import platformdirs
from pydantic import BaseModel, ConfigDict, Field, field_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from townsquare.timeutil import parse_duration, parse_time


class Tier(BaseModel):
    """What a subscription tier may do. 0 means unlimited."""

    model_config = ConfigDict(extra="forbid")

    requests_per_minute: int = 20
    tokens_per_minute: int = 20_000
    concurrent_requests: int = 2
    monthly_tokens: int = 200_000


#: The tier of operator keys (``townsquare keys create --admin``): no limits, and the only
#: keys that see every source's spec and raw errors (``/v1/live``) and ``/metrics``.
ADMIN_TIER = "admin"

DEFAULT_TIERS: dict[str, Tier] = {
    "free": Tier(requests_per_minute=10, tokens_per_minute=10_000, concurrent_requests=1,
                 monthly_tokens=100_000),
    "premium": Tier(requests_per_minute=60, tokens_per_minute=100_000, concurrent_requests=4,
                    monthly_tokens=5_000_000),
    "business": Tier(requests_per_minute=600, tokens_per_minute=1_000_000,
                     concurrent_requests=32, monthly_tokens=0),
    ADMIN_TIER: Tier(requests_per_minute=0, tokens_per_minute=0, concurrent_requests=0,
                     monthly_tokens=0),
}


def default_home() -> Path:
    env = os.environ.get("TOWNSQUARE_HOME")
    return Path(env) if env else Path(platformdirs.user_data_dir("townsquare"))


class Settings(BaseSettings):
    """Every knob, documented in README's configuration table."""

    model_config = SettingsConfigDict(env_prefix="TOWNSQUARE_", extra="forbid")

    home: Path = Field(default_factory=default_home)
    #: Empty: SQLite at <home>/townsquare.db. Or sqlite:///path, postgresql://...
    store: str = ""
    #: Dense embedder: use-static (fast, cross-lingual, default), minilm-static (fast,
    #: English), minilm (full model), use-multilingual (full model), hash (tests), none.
    embedder: str = "use-static"
    #: LLM backend: local (SmolLM2 in-process), openai (any compatible server), fake (tests).
    llm: str = "local"
    llm_threads: int = 0  # 0 = all cores
    llm_context: int = 4096
    openai_base_url: str = "http://127.0.0.1:8000/v1"
    openai_api_key: str = "not-needed"
    openai_model: str = "default"
    #: A GGUF file for the ``local`` backend instead of the bundled SmolLM2 (any model
    #: llama-cpp-python loads); empty: the bundled one.
    local_model_path: str = ""
    #: How answers are written: auto (grounded for ``local``, generative for others),
    #: grounded (composed from the posts' own words), generative (the LLM writes; every
    #: sentence is still verified against the posts it cites).
    answer_style: Literal["auto", "grounded", "generative"] = "auto"
    llm_timeout_s: float = 60.0
    llm_max_concurrency: int = 8
    #: Recency half-life for ranking (a duration like 6h).
    half_life: str = "6h"
    #: Sources `serve` runs: spec strings like "jetstream", "rss:https://... interval=60",
    #: or tables {spec = "rss:https://...", interval = 60} (see supervisor.parse_spec).
    sources: list[str | dict[str, Any]] = Field(default_factory=list)
    host: str = "127.0.0.1"
    port: int = 8080
    nats_url: str = ""
    #: Seconds between story refreshes in `serve` (summaries, story watches); 0 turns it off.
    story_refresh_s: float = 30.0
    #: Top stories of the last hour the refresh keeps summarized (regular mode; 0: on request).
    story_summaries: int = 5
    #: Bluesky handles for authors known only by DID (app.bsky.actor.getProfiles):
    #: auto (when serve runs a Jetstream source), on, off.
    identity_lookup: Literal["auto", "on", "off"] = "auto"
    identity_lookup_url: str = "https://public.api.bsky.app"
    tiers: dict[str, Tier] = Field(default_factory=lambda: dict(DEFAULT_TIERS))
    #: LLM backends a caller may pick with ``model: "townsquare:<backend>"`` besides ``llm``
    #: (empty: only the configured one; a caller can never load another backend).
    models: list[str] = Field(default_factory=list)
    #: Longest chat message accepted, in characters (longer: 400 naming the field).
    max_message_chars: int = Field(16_000, ge=1)
    #: Seconds a client has to send a request's headers before the server hangs up.
    header_timeout_s: float = Field(10.0, gt=0)
    #: Shared rate limits across replicas: redis://host:6379/0 (empty: per process).
    redis_url: str = ""
    #: Webhook destinations allowed although private/loopback/link-local (hosts,
    #: host:port, IPs or CIDRs): self-hosted receivers. Everything else private is refused.
    webhook_allow: list[str] = Field(default_factory=list)
    #: Ingest bounds (townsquare.ingest.admission): a post dated later than now plus
    #: this (a duration) is clamped to now; one dated before min_post_date is quarantined.
    max_future_skew: str = "5m"
    min_post_date: str = "1990-01-01"
    #: Post text is clipped to this many characters at ingest (raw records to 8 times it).
    max_post_chars: int = Field(default=10_000, ge=100)

    @field_validator("tiers")
    @classmethod
    def _admin_tier(cls, tiers: dict[str, Tier]) -> dict[str, Tier]:
        """The admin tier always exists: operator keys must work whatever tiers are sold."""
        return tiers if ADMIN_TIER in tiers else {**tiers, ADMIN_TIER: DEFAULT_TIERS[ADMIN_TIER]}

    @field_validator("max_future_skew")
    @classmethod
    def _duration(cls, value: str) -> str:
        parse_duration(value)  # "5m", "1h": a ValueError names the accepted forms
        return value

    @field_validator("min_post_date")
    @classmethod
    def _date(cls, value: str) -> str:
        parse_time(value)
        return value

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings, env_settings, _TomlSource(settings_cls))

    @property
    def config_path(self) -> Path:
        return self.home / "config.toml"

    @property
    def personas_dir(self) -> Path:
        return self.home / "personas"

    @property
    def cache_dir(self) -> Path:
        return self.home / "cache"


class _TomlSource(PydanticBaseSettingsSource):
    """Reads ``<home>/config.toml`` (home itself from env or the default)."""

    def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:
        return None, field_name, False

    def __call__(self) -> dict[str, Any]:
        path = default_home() / "config.toml"
        if not path.is_file():
            return {}
        with path.open("rb") as fh:
            data = tomllib.load(fh)
        return {k.replace("-", "_"): v for k, v in data.items()}


def load_settings(**overrides: Any) -> Settings:
    """Settings with CLI overrides (``None`` values are ignored)."""
    clean = {k: v for k, v in overrides.items() if v is not None and v != ()}
    if "home" in clean:
        # The config file lives in home, so home must be known before reading it.
        os.environ["TOWNSQUARE_HOME"] = str(clean["home"])
    settings = Settings(**clean)
    settings.home.mkdir(mode=0o700, parents=True, exist_ok=True)
    make_private(settings.home)
    return settings


def make_private(home: Path) -> None:
    """Home 0700, and the files directly in it 0600 (keys, conversations, usage, watches).

    SQLite gives its -wal and -shm files the database's mode, so a database made
    0600 right after it is created keeps its journals private too. A home we do
    not own (a shared mount) is left as it is.
    """
    try:
        if home.stat().st_uid != os.getuid():
            return
        os.chmod(home, 0o700)
        for path in home.iterdir():
            if path.is_file() and not path.is_symlink():
                os.chmod(path, 0o600)
    except OSError:
        pass
