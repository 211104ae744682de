"""The GraphQL schema: every domain's queries and mutations merged, with limits and error masking."""

from __future__ import annotations

from decimal import Decimal

import strawberry
from strawberry.extensions import (
    AddValidationRules,
    MaxAliasesLimiter,
    MaxTokensLimiter,
    ParserCache,
    QueryDepthLimiter,
    ValidationCache,
)
from strawberry.schema.config import StrawberryConfig
from strawberry.tools import merge_types

from alliance.api.alliance_insights import AllianceInsightQueries
from alliance.api.audit import AuditQueries
from alliance.api.catalog import CatalogMutations, CatalogQueries, RedemptionNode, RewardNode
from alliance.api.clients import ApiClientMutations, ApiClientNode, ApiClientQueries
from alliance.api.cost import QueryCost
from alliance.api.earning import EarningMutations, EarningQueries, EarningRuleNode
from alliance.api.errors import StableErrors
from alliance.api.flows import FlowQueries
from alliance.api.insights import InsightsMutations, InsightsQueries
from alliance.api.ledger import (
    BIG_INT_SCALAR,
    AdjustPointsPayload,
    AwardPointsPayload,
    BigInt,
    CaptureHoldPayload,
    CompensatePointsPayload,
    EarnPointsPayload,
    ExpiryQueries,
    HoldPointsPayload,
    LedgerMutations,
    LotNode,
    RedeemPointsPayload,
    ReleaseHoldPayload,
    ReverseTransactionPayload,
    TransactionNode,
)
from alliance.api.live import BalanceSubscriptions
from alliance.api.members import MemberMutations, MemberNode, MemberQueries
from alliance.api.metrics import OperationMetrics
from alliance.api.offers import OfferMutations, OfferNode, OfferQueries
from alliance.api.settlement import SettlementBatchNode, SettlementMutations, SettlementQueries
from alliance.api.tenants import StoreNode, TenantMutations, TenantNode, TenantQueries
from alliance.api.tiers import TierChangeNode, TierMutations, TierQueries
from alliance.api.transport import WebSocketForSubscriptionsOnly
from alliance.api.types import DECIMAL_SCALAR
from alliance.api.viewer import ViewerQueries
from alliance.api.webhooks import WebhookDeliveryNode, WebhookEndpointNode, WebhookMutations, WebhookQueries
from alliance.config import Settings

Query = merge_types(
    "Query",
    (
        AuditQueries,
        ViewerQueries,
        TenantQueries,
        MemberQueries,
        ExpiryQueries,
        EarningQueries,
        SettlementQueries,
        CatalogQueries,
        TierQueries,
        ApiClientQueries,
        FlowQueries,
        AllianceInsightQueries,
        WebhookQueries,
        OfferQueries,
        InsightsQueries,
    ),
)
Mutation = merge_types(
    "Mutation",
    (
        TenantMutations,
        MemberMutations,
        LedgerMutations,
        EarningMutations,
        SettlementMutations,
        CatalogMutations,
        TierMutations,
        ApiClientMutations,
        WebhookMutations,
        OfferMutations,
        InsightsMutations,
    ),
)
Subscription = merge_types("Subscription", (BalanceSubscriptions,))


def build_schema(settings: Settings) -> strawberry.Schema:
    # The limit rules are built once, so parsed and validated documents can be cached across
    # requests (the validation cache is keyed by the rule classes).
    limit_rules = [
        *QueryDepthLimiter(max_depth=settings.graphql_max_depth).validation_rules,
        *MaxAliasesLimiter(max_alias_count=settings.graphql_max_aliases).validation_rules,
    ]
    return strawberry.Schema(
        query=Query,
        mutation=Mutation,
        subscription=Subscription,
        types=[
            TenantNode,
            StoreNode,
            MemberNode,
            TransactionNode,
            LotNode,
            SettlementBatchNode,
            RewardNode,
            RedemptionNode,
            TierChangeNode,
            EarningRuleNode,
            ApiClientNode,
            WebhookEndpointNode,
            WebhookDeliveryNode,
            OfferNode,
            EarnPointsPayload,
            AwardPointsPayload,
            RedeemPointsPayload,
            HoldPointsPayload,
            CaptureHoldPayload,
            ReleaseHoldPayload,
            ReverseTransactionPayload,
            AdjustPointsPayload,
            CompensatePointsPayload,
        ],
        config=StrawberryConfig(scalar_map={Decimal: DECIMAL_SCALAR, BigInt: BIG_INT_SCALAR}),
        extensions=[
            OperationMetrics,
            StableErrors,
            QueryCost,
            WebSocketForSubscriptionsOnly,
            lambda: MaxTokensLimiter(max_token_count=settings.graphql_max_tokens),
            lambda: AddValidationRules(limit_rules),
            lambda: ParserCache(maxsize=512),
            lambda: ValidationCache(maxsize=512),
        ],
    )


def export_sdl(settings: Settings | None = None) -> str:
    """The schema as SDL, exactly as written to ``schema.graphql``."""
    return build_schema(settings or Settings()).as_str().rstrip() + "\n"
