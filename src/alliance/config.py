"""Settings, read once from the environment (prefix ``ALLIANCE_``; ``DATABASE_URL`` as is)."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import platformdirs
from pydantic import AliasChoices, Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


def _default_data_dir() -> Path:
    return Path(platformdirs.user_data_dir("alliance"))


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="ALLIANCE_", extra="ignore")

    # Owner connection (runs migrations). Unset: an embedded PostgreSQL is started in data_dir.
    database_url: str | None = Field(default=None, validation_alias=AliasChoices("DATABASE_URL"))
    # Application-role connection used for every request. Unset: derived from the owner URL
    # by swapping the user for `app_role` (works with trust/peer auth and the embedded server).
    app_database_url: str | None = None
    app_role: str = "alliance_app"
    app_role_password: str | None = None
    data_dir: Path = Field(default_factory=_default_data_dir)
    database_name: str = "alliance"

    # Tokens
    issuer: str = "urn:alliance"
    audience: str = "alliance-api"
    access_token_ttl_seconds: int = Field(default=3600, ge=60, le=86400)
    member_token_ttl_seconds: int = Field(default=3600 * 24, ge=60, le=86400 * 30)
    # External member OIDC issuers, JSON list of {"issuer", "jwks_url", "audience"}.
    member_oidc_issuers: list[dict[str, str]] = Field(default_factory=list)

    # GraphQL limits
    graphql_max_depth: int = 10
    graphql_max_tokens: int = 2000
    graphql_max_aliases: int = 30
    max_page_size: int = 100
    graphiql: bool = True

    # /metrics needs `Authorization: Bearer <metrics_token>`; unset, the endpoint is off.
    metrics_token: str | None = None
    access_log: bool = True  # one JSON line per request

    pool_size: int = 20
    time_zone: str = "Asia/Shanghai"

    # Webhooks (`alliance webhooks run`). http:// and loopback/private hosts are refused unless
    # allow_insecure_urls is set: development and tests only.
    webhook_allow_insecure_urls: bool = False
    webhook_timeout_seconds: float = Field(default=10.0, gt=0, le=60)
    # A claimed delivery is retried by another worker once its lease lapses (a crashed worker).
    webhook_lease_seconds: int = Field(default=60, ge=1, le=3600)
    webhook_max_attempts: int = Field(default=15, ge=1, le=50)
    webhook_max_age_seconds: int = Field(default=24 * 3600, ge=1, le=30 * 24 * 3600)
    webhook_retry_base_seconds: float = Field(default=10.0, gt=0, le=3600)
    webhook_retry_max_seconds: float = Field(default=3600.0, gt=0, le=24 * 3600)
    webhook_concurrency: int = Field(default=16, ge=1, le=256)
    webhook_poll_seconds: float = Field(default=1.0, gt=0, le=60)
    webhook_sweep_seconds: float = Field(default=60.0, gt=0, le=3600)
    webhook_expiring_days: int = Field(default=30, ge=1, le=366)
    webhook_retention_days: int = Field(default=30, ge=7, le=3650)

    @model_validator(mode="after")
    def _lease_outlasts_a_request(self) -> Settings:
        if self.webhook_lease_seconds <= self.webhook_timeout_seconds:
            raise ValueError(
                "webhook_lease_seconds must exceed webhook_timeout_seconds (or slow sends repeat)"
            )
        return self


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
