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

    # Rate limiting: a bucket of query-cost points per API client (per member for member tokens),
    # by role: the most a bucket holds (also the largest cost one query may have) and the points
    # restored per second. See "Rate limits and query cost" in the README.
    rate_limit_enabled: bool = True
    rate_limit_operator_maximum: int = Field(default=20_000, gt=0)
    rate_limit_operator_restore_rate: int = Field(default=1_000, gt=0)
    rate_limit_merchant_maximum: int = Field(default=10_000, gt=0)
    rate_limit_merchant_restore_rate: int = Field(default=500, gt=0)
    rate_limit_member_maximum: int = Field(default=1_000, gt=0)
    rate_limit_member_restore_rate: int = Field(default=50, gt=0)
    # Automatic persisted queries kept in PostgreSQL (the oldest go first beyond this).
    persisted_queries_max: int = Field(default=5_000, gt=0, le=1_000_000)

    # /metrics needs `Authorization: Bearer <metrics_token>`; unset, the endpoint is off.
    metrics_token: str | None = None
    access_log: bool = True  # one JSON line per request

    # Insights (see "Insights" in the README). No cross-merchant or coalition figure is shown
    # that was computed from fewer than `insights_k_anonymity` members.
    insights_k_anonymity: int = Field(default=10, ge=2, le=1000)
    insights_rising_recent_weeks: int = Field(default=4, ge=1, le=26)
    insights_rising_baseline_weeks: int = Field(default=12, ge=1, le=104)
    insights_rising_min_count: int = Field(default=3, ge=1, le=100)
    # The refresh leaves out postings younger than this: an id drawn by a transaction that has not
    # committed yet must not fall behind the watermark.
    insights_refresh_lag_seconds: int = Field(default=30, ge=0, le=3600)

    # Connections per process, twice: this many for transactions (SQLAlchemy's pool) and this many
    # for one-statement calls (`alliance.db.calls`); a process never opens more than 2 × pool_size.
    pool_size: int = Field(default=20, ge=1, le=500)
    # Concurrent earnPoints requests are posted in groups (`alliance.ledger.groups`): at most this
    # many earns per group (1: each earn alone) and this many groups at once per process.
    earn_group_max_items: int = Field(default=64, ge=1, le=1000)
    earn_groups_in_flight: int = Field(default=2, ge=1, le=64)
    time_zone: str = "Asia/Shanghai"

    # Demo mode (`alliance serve --demo`): demo personas at /oauth/demo and one-click member sign-in.
    demo: bool = False

    # Member sign-in by phone and one-time code. `sms_sender`: "log" (writes the code to the log;
    # development), "memory" (tests), or "package.module:factory" for a real SMS gateway. Unset:
    # the log sender in demo mode, otherwise phone sign-in is off.
    sms_sender: str | None = None
    otp_ttl_seconds: int = Field(default=300, ge=60, le=900)
    otp_max_attempts: int = Field(default=5, ge=1, le=10)  # wrong codes before a code is void
    otp_resend_seconds: int = Field(default=60, ge=0, le=600)  # per phone, between two codes
    otp_phone_per_hour: int = Field(default=5, ge=1, le=100)  # codes sent to one phone per hour
    otp_ip_per_hour: int = Field(default=30, ge=1, le=10000)  # codes requested from one IP per hour
    otp_failures_per_hour: int = Field(default=10, ge=1, le=100)  # wrong codes per phone before lockout
    # External member issuers the browser may sign in with (authorization code + PKCE), JSON list of
    # {"issuer", "name", "authorization_endpoint", "token_endpoint", "client_id", "scope"}; each
    # issuer must also be in `member_oidc_issuers`, which verifies its tokens.
    member_oidc_providers: list[dict[str, str]] = Field(default_factory=list)
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
