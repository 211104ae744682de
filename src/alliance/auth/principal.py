"""Who a request acts as, and what each role may do by default."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from alliance.db import AccessContext

PrincipalKind = Literal["operator", "merchant", "member"]

# Scopes, by the capability they grant.
TENANTS_READ = "tenants:read"
TENANTS_WRITE = "tenants:write"
STORES_WRITE = "stores:write"
MEMBERS_READ = "members:read"
MEMBERS_WRITE = "members:write"
POINTS_EARN = "points:earn"
POINTS_REDEEM = "points:redeem"
POINTS_ADJUST = "points:adjust"
LEDGER_READ = "ledger:read"
SETTLEMENT_READ = "settlement:read"
SETTLEMENT_WRITE = "settlement:write"
CATALOG_WRITE = "catalog:write"
RULES_WRITE = "rules:write"
TIERS_READ = "tiers:read"
TIERS_WRITE = "tiers:write"
CLIENTS_MANAGE = "clients:manage"  # list, create, rotate and revoke API clients
WEBHOOKS_MANAGE = "webhooks:manage"
INSIGHTS_READ = "insights:read"  # merchant insights (own members), the operator's views

ALL_SCOPES = frozenset(
    {
        TENANTS_READ,
        TENANTS_WRITE,
        STORES_WRITE,
        MEMBERS_READ,
        MEMBERS_WRITE,
        POINTS_EARN,
        POINTS_REDEEM,
        POINTS_ADJUST,
        LEDGER_READ,
        SETTLEMENT_READ,
        SETTLEMENT_WRITE,
        CATALOG_WRITE,
        RULES_WRITE,
        TIERS_READ,
        TIERS_WRITE,
        CLIENTS_MANAGE,
        WEBHOOKS_MANAGE,
        INSIGHTS_READ,
    }
)
DEFAULT_SCOPES: dict[str, frozenset[str]] = {
    "operator": ALL_SCOPES,
    "merchant": ALL_SCOPES - {TENANTS_WRITE, POINTS_ADJUST, SETTLEMENT_WRITE, TIERS_WRITE},
    "member": frozenset({TENANTS_READ, MEMBERS_READ, POINTS_REDEEM, LEDGER_READ, TIERS_READ}),
}


@dataclass(frozen=True, slots=True)
class Principal:
    kind: PrincipalKind
    subject: str
    scopes: frozenset[str]
    client_id: str | None = None
    tenant_id: int | None = None
    member_id: int | None = None

    def __post_init__(self) -> None:
        assert (self.kind == "merchant") == (self.tenant_id is not None)
        assert (self.kind == "member") == (self.member_id is not None)
        assert self.scopes <= DEFAULT_SCOPES[self.kind], "a principal never holds more than its role allows"

    @property
    def access(self) -> AccessContext:
        return AccessContext(self.kind, tenant_id=self.tenant_id, member_id=self.member_id)

    @property
    def idempotency_scope(self) -> str:
        """Whose idempotency keys these are: the API client, or the member."""
        return self.client_id if self.client_id is not None else f"member:{self.member_id}"
