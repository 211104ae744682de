"""GraphQL for the ledger: money-moving mutations, balances, history and lots of a member.

Mutation payloads come straight from the ledger's SQL functions as remembered under the
idempotency key, so a retry gets the original answer byte for byte.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import datetime
from decimal import Decimal
from enum import Enum
from typing import Any, NewType, TypeVar

import strawberry

from alliance.api.context import Info
from alliance.api.ids import from_cursor, from_global_id, to_global_id
from alliance.api.mutations import user_error
from alliance.api.types import (
    Connection,
    Node,
    UserError,
    build_connection,
    built_from_coerced_leaves,
    page_size,
)
from alliance.auth.principal import LEDGER_READ, POINTS_ADJUST, POINTS_EARN, POINTS_REDEEM, Principal
from alliance.errors import DomainError
from alliance.ledger import service
from alliance.ledger.models import LedgerTransaction, Lot
from alliance.tenants.service import tenant_by_code

BigInt = NewType("BigInt", int)
BIG_INT_SCALAR = strawberry.scalar(
    name="BigInt",
    description="A 64-bit integer number of points (a JSON number; exact below 2^53).",
    serialize=int,
    parse_value=int,
)


@strawberry.enum
class TransactionKind(Enum):
    EARN = "earn"
    AWARD = "award"
    REDEEM = "redeem"
    CAPTURE = "capture"
    REVERSE = "reverse"
    EXPIRE = "expire"
    ADJUST = "adjust"
    COMPENSATE = "compensate"


@strawberry.enum
class HoldStatus(Enum):
    ACTIVE = "active"
    CAPTURED = "captured"
    RELEASED = "released"
    EXPIRED = "expired"


@strawberry.type
class BreakdownLine:
    """One step of an earn's computation: the base, a rule's contribution, a cap."""

    rule: str
    points: int
    asset: str
    note: str


def _breakdown(details: dict[str, Any] | None) -> list[BreakdownLine]:
    return [
        BreakdownLine(
            rule=line["rule"],
            points=line["points"],
            asset=line.get("asset", "POINTS"),
            note=line.get("note", ""),
        )
        for line in (details or {}).get("breakdown", [])
    ]


@strawberry.type(name="LedgerTransaction")
class TransactionNode(Node):
    kind: TransactionKind
    points: int
    asset: str
    effective_at: datetime
    created_at: datetime
    order_ref: str | None
    reason: str | None
    shortfall: int = strawberry.field(description="Points a forced reversal could not claw back (recorded).")
    reverses: strawberry.ID | None = strawberry.field(description="The transaction this one reverses.")
    pk: strawberry.Private[int]
    details: strawberry.Private[dict[str, Any] | None]

    @strawberry.field(
        description="Why an earn earned what it did: base points, each rule's contribution, caps."
    )
    def breakdown(self) -> list[BreakdownLine]:
        # Built when asked for: a batch of 1000 earns answered without it skips 1000 of these.
        return _breakdown(self.details)

    async def _summary(self, info: Info) -> service.TransactionSummary | None:
        async def load(ids: list[int]) -> list[service.TransactionSummary | None]:
            async with info.context.transaction() as session:
                found = await service.transaction_summaries(session, ids)
            return [found.get(pk) for pk in ids]

        loader = info.context.loader("transaction_summaries", load)
        summary: service.TransactionSummary | None = await loader.load(self.pk)
        return summary

    @strawberry.field(description="Code of the merchant it was posted at (null for alliance postings).")
    async def tenant_code(self, info: Info) -> str | None:
        summary = await self._summary(info)
        return summary.tenant_code if summary else None

    @strawberry.field(description="Name of the merchant it was posted at (null for alliance postings).")
    async def tenant_name(self, info: Info) -> str | None:
        summary = await self._summary(info)
        return summary.tenant_name if summary else None

    @strawberry.field(description="Code of the store, when the merchant named one.")
    async def store_code(self, info: Info) -> str | None:
        summary = await self._summary(info)
        return summary.store_code if summary else None

    @strawberry.field(description="Name of the store, when the merchant named one.")
    async def store_name(self, info: Info) -> str | None:
        summary = await self._summary(info)
        return summary.store_name if summary else None

    @strawberry.field(description="The purchase amount an earn was for (null otherwise).")
    async def amount(self, info: Info) -> Decimal | None:
        summary = await self._summary(info)
        return summary.amount if summary else None

    @strawberry.field(description="The currency of `amount`.")
    async def currency(self, info: Info) -> str | None:
        summary = await self._summary(info)
        return summary.currency if summary else None

    @strawberry.field(
        description="What it did to the member's available points: positive credits, negative debits."
    )
    async def balance_change(self, info: Info) -> BigInt:
        summary = await self._summary(info)
        return BigInt(summary.balance_change if summary else 0)

    @classmethod
    def from_payload(cls, data: dict[str, Any]) -> TransactionNode:
        return cls(
            pk=data["id"],
            id=strawberry.ID(to_global_id("LedgerTransaction", data["id"])),
            kind=TransactionKind(data["kind"]),
            points=data["points"],
            asset=data["asset"],
            effective_at=datetime.fromisoformat(data["effectiveAt"]),
            created_at=datetime.fromisoformat(data["createdAt"]),
            order_ref=data["orderRef"],
            reason=data["reason"],
            shortfall=data["shortfall"],
            reverses=_reverses_id(data["reversesId"]),
            details=data.get("details"),
        )

    @classmethod
    def from_model(cls, tx: LedgerTransaction) -> TransactionNode:
        return cls(
            pk=tx.id,
            id=strawberry.ID(to_global_id("LedgerTransaction", tx.id)),
            kind=TransactionKind(tx.kind),
            points=tx.points,
            asset=tx.asset,
            effective_at=tx.effective_at,
            created_at=tx.created_at,
            order_ref=tx.order_ref,
            reason=tx.reason,
            shortfall=tx.shortfall,
            reverses=_reverses_id(tx.reverses_id),
            details=tx.details,
        )


def _reverses_id(pk: int | None) -> strawberry.ID | None:
    return None if pk is None else strawberry.ID(to_global_id("LedgerTransaction", pk))


@strawberry.type
class ExpiringPoints:
    points: BigInt
    expires_at: datetime


@strawberry.type
class Balance:
    asset: str
    available: BigInt = strawberry.field(description="Posted points in unexpired lots minus live holds.")
    held: BigInt
    member_pk: strawberry.Private[int | None] = None

    @strawberry.field(description="Points that expire within `days`, grouped by expiry instant.")
    async def expiring_soon(self, info: Info, days: int = 30) -> list[ExpiringPoints]:
        if self.member_pk is None:
            return []
        async with info.context.transaction() as session:
            balances = await service.member_balances(session, self.member_pk, days)
        mine = next((b for b in balances if b.asset == self.asset), None)
        return [
            ExpiringPoints(points=e.points, expires_at=e.expires_at) for e in (mine.expiring if mine else ())
        ]


@strawberry.type(name="Hold")
class HoldNode(Node):
    points: int
    captured_points: int
    status: HoldStatus
    asset: str
    expires_at: datetime


@strawberry.type(name="Lot")
class LotNode(Node):
    asset: str
    amount: int
    remaining: int
    issued_at: datetime
    expires_at: datetime | None

    @classmethod
    def from_model(cls, lot: Lot) -> LotNode:
        return cls(
            id=strawberry.ID(to_global_id("Lot", lot.id)),
            asset=lot.asset,
            amount=lot.amount,
            remaining=lot.remaining,
            issued_at=lot.issued_at,
            expires_at=lot.expires_at,
        )


@strawberry.interface(description="The answer of every money-moving mutation.")
class PointsPayload:
    transaction: TransactionNode | None = None
    balance: Balance | None = None
    user_errors: list[UserError] = strawberry.field(default_factory=list)


P = TypeVar("P", bound=PointsPayload)


@strawberry.type
class EarnPointsPayload(PointsPayload):
    pass


@strawberry.type
class AwardPointsPayload(PointsPayload):
    pass


@strawberry.type
class RedeemPointsPayload(PointsPayload):
    pass


@strawberry.type
class ReverseTransactionPayload(PointsPayload):
    pass


@strawberry.type
class AdjustPointsPayload(PointsPayload):
    pass


@strawberry.type
class CompensatePointsPayload(PointsPayload):
    pass


@strawberry.enum
class CompensationReason(Enum):
    MERCHANT_FAULT = "MERCHANT_FAULT"
    SYSTEM_FAILURE = "SYSTEM_FAILURE"
    REWARD_WITHDRAWN = "REWARD_WITHDRAWN"
    STORE_CLOSED = "STORE_CLOSED"
    GOODWILL = "GOODWILL"


@strawberry.type
class HoldPointsPayload(PointsPayload):
    hold: HoldNode | None = None


@strawberry.type
class CaptureHoldPayload(PointsPayload):
    hold: HoldNode | None = None


@strawberry.type
class ReleaseHoldPayload(PointsPayload):
    hold: HoldNode | None = None


def shape(payload_type: type[P], data: dict[str, Any]) -> P:
    """A GraphQL payload from the ledger function's remembered answer (identical on replay)."""
    fields: dict[str, Any] = {
        "user_errors": [
            UserError(field=e["field"], code=e["code"], message=e["message"]) for e in data["userErrors"]
        ],
        "transaction": TransactionNode.from_payload(data["transaction"]) if data.get("transaction") else None,
        "balance": Balance(
            asset=data["balance"]["asset"],
            available=data["balance"]["available"],
            held=data["balance"]["held"],
        )
        if data.get("balance")
        else None,
    }
    if "hold" in payload_type.__annotations__ or hasattr(payload_type, "hold"):
        hold = data.get("hold")
        fields["hold"] = (
            None
            if not hold
            else HoldNode(
                id=strawberry.ID(to_global_id("Hold", hold["id"])),
                points=hold["points"],
                captured_points=hold["capturedPoints"],
                status=HoldStatus(hold["status"]),
                asset=hold["asset"],
                expires_at=datetime.fromisoformat(hold["expiresAt"]),
            )
        )
    return payload_type(**fields)


def refusal(payload_type: type[P], error: DomainError) -> P:
    return payload_type(user_errors=[user_error(error)])


async def posted(payload_type: type[P], post: Callable[[], Awaitable[service.Payload]]) -> P:
    """Run a posting and shape its remembered answer; a refusal before posting becomes userErrors."""
    try:
        return shape(payload_type, await post())
    except DomainError as error:
        return refusal(payload_type, error)


def poster(principal: Principal) -> service.Poster:
    return service.Poster(scope=principal.idempotency_scope, tenant_id=principal.tenant_id)


def pk_of(global_id: str, expected: str, field: str) -> int:
    type_name, pk = from_global_id(global_id, field)
    if type_name != expected:
        raise DomainError("INVALID_ID", f"{field} must be a {expected} id", field)
    return pk


# -- inputs ----------------------------------------------------------------------------------------


@built_from_coerced_leaves
@strawberry.input
class EarnPointsInput:
    member_number: str
    amount: Decimal = strawberry.field(description="Purchase amount, at most 2 decimals.")
    order_ref: str
    idempotency_key: str
    currency: str = "CNY"
    store_code: str | None = None
    category: str | None = None
    tags: list[str] = strawberry.field(default_factory=list)
    asset: str = "POINTS"
    effective_at: datetime | None = strawberry.field(
        default=None, description="Business time of the purchase; at most 7 days ago. Default: now."
    )


@built_from_coerced_leaves
@strawberry.input
class EarnPointsBatchItem:
    member_number: str
    amount: Decimal
    order_ref: str
    currency: str = "CNY"
    store_code: str | None = None
    category: str | None = None
    tags: list[str] = strawberry.field(default_factory=list)
    asset: str = "POINTS"
    effective_at: datetime | None = None


@strawberry.input
class EarnPointsBatchInput:
    items: list[EarnPointsBatchItem] = strawberry.field(description="At most 1000 purchases.")
    idempotency_key: str


@strawberry.type
class EarnPointsBatchResult:
    index: int = strawberry.field(description="Position of the item in the input list.")
    transaction: TransactionNode | None
    user_errors: list[UserError]


@strawberry.type
class EarnPointsBatchPayload:
    results: list[EarnPointsBatchResult] = strawberry.field(default_factory=list)
    user_errors: list[UserError] = strawberry.field(default_factory=list)


@strawberry.input
class AwardPointsInput:
    member_number: str
    points: int
    reason: str
    idempotency_key: str
    asset: str = "POINTS"


@built_from_coerced_leaves
@strawberry.input
class RedeemPointsInput:
    member_number: str
    points: int
    order_ref: str
    idempotency_key: str
    store_code: str | None = None
    asset: str = "POINTS"


@strawberry.input
class HoldPointsInput:
    member_number: str
    points: int
    order_ref: str
    idempotency_key: str
    store_code: str | None = None
    asset: str = "POINTS"
    timeout_seconds: int | None = strawberry.field(default=None, description="Default 24 hours.")


@strawberry.input
class CaptureHoldInput:
    hold_id: strawberry.ID
    idempotency_key: str
    points: int | None = strawberry.field(
        default=None, description="Capture part of the hold; the rest is freed."
    )


@strawberry.input
class ReleaseHoldInput:
    hold_id: strawberry.ID
    idempotency_key: str


@strawberry.input
class ReverseTransactionInput:
    transaction_id: strawberry.ID
    reason: str
    idempotency_key: str
    points: int | None = strawberry.field(
        default=None, description="Partial reversal; default: all that is left."
    )
    force: bool = strawberry.field(
        default=False,
        description="Operator only: reverse an earn even if its points were spent (shortfall recorded).",
    )


@strawberry.input
class CompensatePointsInput:
    member_number: str
    points: int
    reason: CompensationReason
    idempotency_key: str
    note: str | None = None
    asset: str = "POINTS"


@strawberry.input
class ExtendExpiryInput:
    reason: CompensationReason
    idempotency_key: str
    member_number: str | None = strawberry.field(
        default=None,
        description="One member; omit to extend every lot the merchant issued (or tenantCode's).",
    )
    tenant_code: str | None = strawberry.field(
        default=None, description="Operator: only lots this tenant issued."
    )
    days: int | None = strawberry.field(default=None, description="Extend each lot by this many days…")
    new_expiry: datetime | None = strawberry.field(default=None, description="…or move it to this instant.")
    note: str | None = None


@strawberry.type
class ExtendExpiryPayload:
    extended_lots: int = 0
    points: BigInt = strawberry.field(default=BigInt(0), description="Points whose validity was extended.")
    user_errors: list[UserError] = strawberry.field(default_factory=list)


@strawberry.type
class ExpiringMember:
    member_number: str
    asset: str
    points: BigInt
    first_expiry: datetime


@strawberry.input
class AdjustPointsInput:
    member_number: str
    points: int = strawberry.field(description="Positive credits the member, negative debits.")
    reason: str
    idempotency_key: str
    asset: str = "POINTS"


def earn_item(input: EarnPointsInput | PreviewEarnInput | EarnPointsBatchItem) -> service.EarnItem:
    return service.EarnItem(
        member_number=input.member_number,
        amount=input.amount,
        order_ref=input.order_ref,
        currency=input.currency,
        store_code=input.store_code,
        category=input.category,
        tags=tuple(input.tags),
        asset=input.asset,
        effective_at=input.effective_at,
    )


@strawberry.input
class PreviewEarnInput:
    member_number: str
    amount: Decimal
    order_ref: str = "preview"
    currency: str = "CNY"
    store_code: str | None = None
    category: str | None = None
    tags: list[str] = strawberry.field(default_factory=list)
    asset: str = "POINTS"
    effective_at: datetime | None = None


@strawberry.type
class EarnPreview:
    points: int = strawberry.field(description="What the purchase would earn now (all funders, this asset).")
    breakdown: list[BreakdownLine]
    other_assets: list[BreakdownLine] = strawberry.field(description="Co-earned assets, e.g. GREEN points.")


@strawberry.type
class PreviewEarnPayload:
    preview: EarnPreview | None = None
    user_errors: list[UserError] = strawberry.field(default_factory=list)


@strawberry.type
class LedgerMutations:
    @strawberry.mutation(description="The earn computation for a POS screen; nothing is written.")
    async def preview_earn(self, info: Info, input: PreviewEarnInput) -> PreviewEarnPayload:
        principal = info.context.require(POINTS_EARN, "merchant")
        try:
            plan = await service.preview_earn(
                info.context.services.db, poster(principal), earn_item(input), info.context.settings.time_zone
            )
        except DomainError as error:
            return PreviewEarnPayload(user_errors=[user_error(error)])
        lines = [
            BreakdownLine(rule=line.rule, points=line.points, asset=line.asset, note=line.note)
            for line in plan.breakdown
        ]
        return PreviewEarnPayload(
            preview=EarnPreview(
                points=plan.points,
                breakdown=[line for line in lines if line.asset == input.asset],
                other_assets=[line for line in lines if line.asset != input.asset],
            )
        )

    @strawberry.mutation(description="Points for a purchase at the calling merchant.")
    async def earn_points(self, info: Info, input: EarnPointsInput) -> EarnPointsPayload:
        principal = info.context.require(POINTS_EARN, "merchant")
        return await posted(
            EarnPointsPayload,
            lambda: service.earn_points(
                info.context.services.db,
                poster(principal),
                idempotency_key=input.idempotency_key,
                item=earn_item(input),
                time_zone=info.context.settings.time_zone,
            ),
        )

    @strawberry.mutation(
        description="Up to 1000 purchases at once (POS back-office import); bad items fail alone."
    )
    async def earn_points_batch(self, info: Info, input: EarnPointsBatchInput) -> EarnPointsBatchPayload:
        principal = info.context.require(POINTS_EARN, "merchant")
        items = [earn_item(item) for item in input.items]
        try:
            data = await service.earn_points_batch(
                info.context.services.db,
                poster(principal),
                idempotency_key=input.idempotency_key,
                items=items,
                time_zone=info.context.settings.time_zone,
            )
        except DomainError as error:
            return EarnPointsBatchPayload(user_errors=[user_error(error)])
        return EarnPointsBatchPayload(
            results=[
                EarnPointsBatchResult(
                    index=result["index"],
                    transaction=TransactionNode.from_payload(result["transaction"])
                    if result["transaction"]
                    else None,
                    user_errors=[UserError(**error) for error in result["userErrors"]],
                )
                for result in data["results"]
            ],
            user_errors=[UserError(**error) for error in data["userErrors"]],
        )

    @strawberry.mutation(description="Bonus points: survey, feedback, a class attended, a birthday.")
    async def award_points(self, info: Info, input: AwardPointsInput) -> AwardPointsPayload:
        principal = info.context.require(POINTS_EARN, "merchant")
        return await posted(
            AwardPointsPayload,
            lambda: service.award_points(
                info.context.services.db,
                poster(principal),
                idempotency_key=input.idempotency_key,
                member_number=input.member_number,
                points=input.points,
                reason=input.reason,
                asset=input.asset,
            ),
        )

    @strawberry.mutation(description="Spend points at the calling merchant, from lots of any issuer.")
    async def redeem_points(self, info: Info, input: RedeemPointsInput) -> RedeemPointsPayload:
        principal = info.context.require(POINTS_REDEEM, "merchant")
        return await posted(
            RedeemPointsPayload,
            lambda: service.redeem_points(
                info.context.services.db,
                poster(principal),
                idempotency_key=input.idempotency_key,
                member_number=input.member_number,
                points=input.points,
                order_ref=input.order_ref,
                store_code=input.store_code,
                asset=input.asset,
            ),
        )

    @strawberry.mutation(description="Reserve points for a pending redemption (e.g. a hotel booking).")
    async def hold_points(self, info: Info, input: HoldPointsInput) -> HoldPointsPayload:
        principal = info.context.require(POINTS_REDEEM, "merchant")
        return await posted(
            HoldPointsPayload,
            lambda: service.hold_points(
                info.context.services.db,
                poster(principal),
                idempotency_key=input.idempotency_key,
                member_number=input.member_number,
                points=input.points,
                order_ref=input.order_ref,
                store_code=input.store_code,
                asset=input.asset,
                timeout_seconds=input.timeout_seconds,
            ),
        )

    @strawberry.mutation(description="Turn a hold into a redemption, fully or partly.")
    async def capture_hold(self, info: Info, input: CaptureHoldInput) -> CaptureHoldPayload:
        principal = info.context.require(POINTS_REDEEM, "merchant", "operator")
        return await posted(
            CaptureHoldPayload,
            lambda: service.close_hold(
                info.context.services.db,
                poster(principal),
                idempotency_key=input.idempotency_key,
                hold_id=pk_of(input.hold_id, "Hold", "holdId"),
                points=input.points,
                release=False,
            ),
        )

    @strawberry.mutation(description="Give held points back to the member.")
    async def release_hold(self, info: Info, input: ReleaseHoldInput) -> ReleaseHoldPayload:
        principal = info.context.require(POINTS_REDEEM, "merchant", "operator")
        return await posted(
            ReleaseHoldPayload,
            lambda: service.close_hold(
                info.context.services.db,
                poster(principal),
                idempotency_key=input.idempotency_key,
                hold_id=pk_of(input.hold_id, "Hold", "holdId"),
                points=None,
                release=True,
            ),
        )

    @strawberry.mutation(description="Undo all or part of an earn or a redemption (refund, return).")
    async def reverse_transaction(
        self, info: Info, input: ReverseTransactionInput
    ) -> ReverseTransactionPayload:
        principal = info.context.require(POINTS_EARN, "merchant", "operator")
        return await posted(
            ReverseTransactionPayload,
            lambda: service.reverse_transaction(
                info.context.services.db,
                poster(principal),
                idempotency_key=input.idempotency_key,
                transaction_id=pk_of(input.transaction_id, "LedgerTransaction", "transactionId"),
                reason=input.reason,
                points=input.points,
                force=input.force,
            ),
        )

    @strawberry.mutation(
        description="Compensate a member who could not use points: a merchant pays from its own issuance, "
        "the operator grants from the alliance. Reason-coded and queryable."
    )
    async def compensate_points(self, info: Info, input: CompensatePointsInput) -> CompensatePointsPayload:
        principal = info.context.require(POINTS_EARN, "merchant", "operator")
        return await posted(
            CompensatePointsPayload,
            lambda: service.compensate_points(
                info.context.services.db,
                poster(principal),
                idempotency_key=input.idempotency_key,
                member_number=input.member_number,
                points=input.points,
                reason=input.reason.value,
                note=input.note,
                asset=input.asset,
            ),
        )

    @strawberry.mutation(
        description="Extend the validity of lots a member could not use (reason-coded, audited)."
    )
    async def extend_expiry(self, info: Info, input: ExtendExpiryInput) -> ExtendExpiryPayload:
        principal = info.context.require(POINTS_EARN, "merchant", "operator")
        try:
            issuer_id = None
            if input.tenant_code is not None:
                if principal.kind != "operator":
                    raise DomainError(
                        "OPERATOR_ONLY", "only the operator names an issuing tenant", "tenantCode"
                    )
                async with info.context.transaction() as session:
                    tenant = await tenant_by_code(session, input.tenant_code)
                if tenant is None:
                    raise DomainError("TENANT_NOT_FOUND", "tenant not found", "tenantCode")
                issuer_id = tenant.id
            data = await service.extend_expiry(
                info.context.services.db,
                poster(principal),
                idempotency_key=input.idempotency_key,
                member_number=input.member_number,
                issuer_tenant_id=issuer_id,
                days=input.days,
                new_expiry=input.new_expiry,
                reason=input.reason.value,
                note=input.note,
            )
        except DomainError as error:
            return ExtendExpiryPayload(user_errors=[user_error(error)])
        return ExtendExpiryPayload(
            extended_lots=data.get("extendedLots", 0),
            points=data.get("points", 0),
            user_errors=[UserError(**error) for error in data["userErrors"]],
        )

    @strawberry.mutation(description="Operator correction, reason-coded and audited in the ledger.")
    async def adjust_points(self, info: Info, input: AdjustPointsInput) -> AdjustPointsPayload:
        principal = info.context.require(POINTS_ADJUST, "operator")
        return await posted(
            AdjustPointsPayload,
            lambda: service.adjust_points(
                info.context.services.db,
                poster(principal),
                idempotency_key=input.idempotency_key,
                member_number=input.member_number,
                points=input.points,
                asset=input.asset,
                reason=input.reason,
            ),
        )


# -- member fields ---------------------------------------------------------------------------------


@strawberry.input
class TransactionFilterInput:
    kinds: list[TransactionKind] | None = None
    tenant_code: str | None = None
    from_: datetime | None = strawberry.field(default=None, name="from", description="Effective at or after.")
    to: datetime | None = strawberry.field(default=None, description="Effective before.")


async def member_balances(info: Info, member_pk: int) -> list[Balance]:
    info.context.require(LEDGER_READ)
    async with info.context.transaction() as session:
        balances = await service.member_balances(session, member_pk, 0)
    return [Balance(asset=b.asset, available=b.available, held=b.held, member_pk=member_pk) for b in balances]


async def member_balance(info: Info, member_pk: int, asset: str, as_of: datetime | None) -> Balance:
    info.context.require(LEDGER_READ)
    async with info.context.transaction() as session:
        balance = await service.member_balance(session, member_pk, asset, as_of)
    return Balance(
        asset=balance.asset,
        available=balance.available,
        held=balance.held,
        member_pk=member_pk if as_of is None else None,
    )


async def member_transactions(
    info: Info, member_pk: int, first: int | None, after: str | None, where: TransactionFilterInput | None
) -> Connection[TransactionNode]:
    info.context.require(LEDGER_READ)
    size = page_size(first, info.context.settings.max_page_size)
    before_id = from_cursor(after)
    async with info.context.transaction() as session:
        tenant_id = None
        if where is not None and where.tenant_code is not None:
            tenant = await tenant_by_code(session, where.tenant_code)
            tenant_id = tenant.id if tenant is not None else -1
        criteria = service.TransactionFilter(
            kinds=tuple(k.value for k in (where.kinds or [])) if where else (),
            tenant_id=tenant_id,
            effective_from=where.from_ if where else None,
            effective_to=where.to if where else None,
        )
        rows = await service.list_transactions(session, member_pk, criteria, before_id, size + 1)
    return build_connection(rows, size, lambda t: t.id, TransactionNode.from_model, before_id is not None)


async def member_lots(
    info: Info, member_pk: int, first: int | None, after: str | None, asset: str | None, open_only: bool
) -> Connection[LotNode]:
    info.context.require(LEDGER_READ)
    size = page_size(first, info.context.settings.max_page_size)
    after_id = from_cursor(after)
    async with info.context.transaction() as session:
        rows = await service.list_lots(session, member_pk, asset, open_only, after_id, size + 1)
    return build_connection(rows, size, lambda lot: lot.id, LotNode.from_model, after_id is not None)


@strawberry.type
class ExpiryQueries:
    @strawberry.field(
        description="Members with points expiring within `days` (merchants: linked members only)."
    )
    async def expiring_points(
        self,
        info: Info,
        asset: str = "POINTS",
        days: int = 30,
        first: int | None = None,
        after: str | None = None,
    ) -> Connection[ExpiringMember]:
        info.context.require(LEDGER_READ, "operator", "merchant")
        size = page_size(first, info.context.settings.max_page_size)
        after_id = from_cursor(after)
        async with info.context.transaction() as session:
            rows = await service.expiring_points(session, asset, days, after_id, size + 1)
        return build_connection(
            rows,
            size,
            lambda r: r.member_id,
            lambda r: ExpiringMember(
                member_number=r.member_number,
                asset=r.asset,
                points=BigInt(r.points),
                first_expiry=r.first_expiry,
            ),
            after_id is not None,
        )
