"""Settings: defaults < ``<home>/config.toml`` < ``TOWNSQUARE_*`` env vars < CLI flags.

The data directory (``--home`` / ``TOWNSQUARE_HOME``) defaults to the
platform's user data dir and holds the SQLite file, the config file,
user personas (``personas/*.md``) and model caches.
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Any

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


DEFAULT_TIERS: dict[str, Tier] = {
    "free": Tier(requests_per_minute=10, tokens_per_minute=10_000, concurrent_requests=1,
                 monthly_tokens=100_000),
    "premium": Tier(requests_per_minute=60, tokens_per_minute=100_000, concurrent_requests=4,
                    monthly_tokens=5_000_000),
    "business": Tier(requests_per_minute=600, tokens_per_minute=1_000_000,
                     concurrent_requests=32, monthly_tokens=0),
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
    #: Dense embedder: minilm-static (fast, default), minilm (full model), hash (tests), none.
    embedder: str = "minilm-static"
    #: LLM backend: local (SmolLM2 in-process), openai (any compatible server), fake (tests).
    llm: str = "local"
    llm_threads: int = 0  # 0 = all cores
    llm_context: int = 4096
    openai_base_url: str = "http://127.0.0.1:8000/v1"
    openai_api_key: str = "not-needed"
    openai_model: str = "default"
    llm_timeout_s: float = 60.0
    llm_max_concurrency: int = 8
    #: Recency half-life for ranking (a duration like 6h).
    half_life: str = "6h"
    #: Sources `serve` runs (spec strings like jetstream, rss:https://...).
    sources: list[str] = Field(default_factory=list)
    host: str = "127.0.0.1"
    port: int = 8080
    nats_url: str = ""
    #: Seconds between story refreshes in `serve` (summaries, story watches); 0 turns it off.
    story_refresh_s: float = 30.0
    #: Top stories of the last hour the refresh keeps summarized (regular mode; 0: on request).
    story_summaries: int = 5
    tiers: dict[str, Tier] = Field(default_factory=lambda: dict(DEFAULT_TIERS))
    #: Ingest bounds (townsquare.ingest.admission): a post dated later than now plus
    #: this (a duration) is clamped to now; one dated before min_post_date is quarantined.
    max_future_skew: str = "5m"
    min_post_date: str = "1990-01-01"
    #: Post text is clipped to this many characters at ingest (raw records to 8 times it).
    max_post_chars: int = Field(default=10_000, ge=100)

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
    settings.home.mkdir(parents=True, exist_ok=True)
    return settings
