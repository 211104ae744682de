"""GraphQL for reward catalogs: rewards, redemptions with fulfilment, and points as payment.

Mutations that move points answer with the payload their SQL function remembered under the
idempotency key (``shape`` from the ledger API), so a retry gets the original answer.
"""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import strawberry

from alliance.api.context import Info
from alliance.api.ids import from_cursor, to_global_id
from alliance.api.ledger import BigInt, PointsPayload, pk_of, poster, refusal, shape
from alliance.api.mutations import made_once_row, run_in_transaction, user_error
from alliance.api.types import Connection, Node, UserError, build_connection, page_size, retry_key
from alliance.auth.principal import CATALOG_WRITE, LEDGER_READ, POINTS_REDEEM, TENANTS_READ
from alliance.catalog import service
from alliance.catalog.models import PointsPaymentSettings, Redemption, Reward
from alliance.catalog.models import RedemptionStatus as RedemptionStatusModel
from alliance.catalog.models import RewardKind as RewardKindModel
from alliance.catalog.models import RewardStatus as RewardStatusModel
from alliance.errors import DomainError
from alliance.ledger.service import member_balances
from alliance.tenants.service import tenant_by_code, tenant_by_id

RewardKind = strawberry.enum(RewardKindModel, name="RewardKind")
RewardStatus = strawberry.enum(RewardStatusModel, name="RewardStatus")
RedemptionStatus = strawberry.enum(RedemptionStatusModel, name="RedemptionStatus")


def _instant(value: str | None) -> datetime | None:
    return None if value is None else datetime.fromisoformat(value)


@strawberry.type(name="Reward", description="A reward of a merchant's catalog, priced in one asset.")
class RewardNode(Node):
    tenant_code: str
    tenant_name: str
    kind: RewardKind
    name: str
    description: str
    asset: str = strawberry.field(description="The only asset this reward accepts (GREEN rewards: GREEN).")
    points: int = strawberry.field(description="The regular price of one unit.")
    sale_points: int | None = strawberry.field(description="The price inside the sale window.")
    sale_starts_at: datetime | None
    sale_ends_at: datetime | None
    stock: int | None = strawberry.field(description="Units left; null means unlimited.")
    available_from: datetime | None
    available_until: datetime | None
    min_tier: str | None = strawberry.field(description="The lowest member tier that may redeem it.")
    per_member_limit: int | None = strawberry.field(description="Units one member may redeem in all.")
    status: RewardStatus
    created_at: datetime
    updated_at: datetime

    def _sale_now(self) -> bool:
        now = datetime.now(UTC)
        return (
            self.sale_points is not None
            and self.sale_starts_at is not None
            and self.sale_ends_at is not None
            and self.sale_starts_at <= now < self.sale_ends_at
        )

    @strawberry.field(description="What one unit costs now: the sale price inside its window.")
    def current_points(self) -> int:
        return self.sale_points if self.sale_points is not None and self._sale_now() else self.points

    @strawberry.field(description="Whether the sale price applies now.")
    def on_sale(self) -> bool:
        return self._sale_now()

    @classmethod
    def from_row(cls, row: service.RewardRow) -> RewardNode:
        reward = row.reward
        assert reward.id is not None and reward.created_at is not None and reward.updated_at is not None
        return cls(
            id=strawberry.ID(to_global_id("Reward", reward.id)),
            tenant_code=row.tenant_code,
            tenant_name=row.tenant_name,
            kind=RewardKindModel(reward.kind),
            name=reward.name,
            description=reward.description,
            asset=reward.asset,
            points=reward.points,
            sale_points=reward.sale_points,
            sale_starts_at=reward.sale_starts_at,
            sale_ends_at=reward.sale_ends_at,
            stock=reward.stock,
            available_from=reward.available_from,
            available_until=reward.available_until,
            min_tier=reward.min_tier,
            per_member_limit=reward.per_member_limit,
            status=RewardStatusModel(reward.status),
            created_at=reward.created_at,
            updated_at=reward.updated_at,
        )

    @classmethod
    def from_payload(cls, data: dict[str, Any]) -> RewardNode:
        created_at = _instant(data["createdAt"])
        updated_at = _instant(data["updatedAt"])
        assert created_at is not None and updated_at is not None
        return cls(
            id=strawberry.ID(to_global_id("Reward", data["id"])),
            tenant_code=data["tenantCode"],
            tenant_name=data["tenantName"],
            kind=RewardKindModel(data["kind"]),
            name=data["name"],
            description=data["description"],
            asset=data["asset"],
            points=data["points"],
            sale_points=data["salePoints"],
            sale_starts_at=_instant(data["saleStartsAt"]),
            sale_ends_at=_instant(data["saleEndsAt"]),
            stock=data["stock"],
            available_from=_instant(data["availableFrom"]),
            available_until=_instant(data["availableUntil"]),
            min_tier=data["minTier"],
            per_member_limit=data["perMemberLimit"],
            status=RewardStatusModel(data["status"]),
            created_at=created_at,
            updated_at=updated_at,
        )


def _transaction_id(pk: int | None) -> strawberry.ID | None:
    return None if pk is None else strawberry.ID(to_global_id("LedgerTransaction", pk))


@strawberry.type(
    name="Redemption", description="A reward redeemed by a member: PENDING → FULFILLED | CANCELLED."
)
class RedemptionNode(Node):
    status: RedemptionStatus
    quantity: int
    unit_points: int = strawberry.field(description="The price of one unit when it was redeemed.")
    points: int
    asset: str
    member_number: str
    reward: RewardNode
    transaction_id: strawberry.ID = strawberry.field(description="The ledger redemption.")
    reversal_id: strawberry.ID | None = strawberry.field(description="The reversal that restored the points.")
    cancel_reason: str | None
    created_at: datetime
    closed_at: datetime | None

    @classmethod
    def from_row(cls, row: service.RedemptionRow) -> RedemptionNode:
        r: Redemption = row.redemption
        transaction_id = _transaction_id(r.transaction_id)
        assert transaction_id is not None
        return cls(
            id=strawberry.ID(to_global_id("Redemption", r.id)),
            status=RedemptionStatusModel(r.status),
            quantity=r.quantity,
            unit_points=r.unit_points,
            points=r.points,
            asset=r.asset,
            member_number=r.member_number,
            reward=RewardNode.from_row(row.reward),
            transaction_id=transaction_id,
            reversal_id=_transaction_id(r.reversal_id),
            cancel_reason=r.cancel_reason,
            created_at=r.created_at,
            closed_at=r.closed_at,
        )

    @classmethod
    def from_payload(cls, data: dict[str, Any]) -> RedemptionNode:
        created_at = _instant(data["createdAt"])
        transaction_id = _transaction_id(data["transactionId"])
        assert created_at is not None and transaction_id is not None
        return cls(
            id=strawberry.ID(to_global_id("Redemption", data["id"])),
            status=RedemptionStatusModel(data["status"]),
            quantity=data["quantity"],
            unit_points=data["unitPoints"],
            points=data["points"],
            asset=data["asset"],
            member_number=data["memberNumber"],
            reward=RewardNode.from_payload(data["reward"]),
            transaction_id=transaction_id,
            reversal_id=_transaction_id(data["reversalId"]),
            cancel_reason=data["cancelReason"],
            created_at=created_at,
            closed_at=_instant(data["closedAt"]),
        )


def _redemption(data: dict[str, Any]) -> RedemptionNode | None:
    return RedemptionNode.from_payload(data["redemption"]) if data.get("redemption") else None


@strawberry.type(name="PointsPaymentSettings")
class PointsPaymentSettingsNode:
    tenant_code: str
    points_per_unit: int = strawberry.field(description="Points worth one currency unit, e.g. 100.")
    max_share: Decimal = strawberry.field(description="Largest share of a bill points may pay, e.g. 0.5.")
    currency: str
    enabled: bool
    updated_at: datetime

    @classmethod
    def from_model(cls, settings: PointsPaymentSettings, tenant_code: str) -> PointsPaymentSettingsNode:
        assert settings.updated_at is not None
        return cls(
            tenant_code=tenant_code,
            points_per_unit=settings.points_per_unit,
            max_share=settings.max_share,
            currency=settings.currency,
            enabled=settings.enabled,
            updated_at=settings.updated_at,
        )


@strawberry.type
class PointsPayment:
    bill_amount: Decimal
    points_value: Decimal = strawberry.field(description="What the points paid, in the bill's currency.")
    amount_due: Decimal = strawberry.field(description="What is left of the bill to pay otherwise.")
    currency: str
    points_per_unit: int


# -- inputs and payloads ---------------------------------------------------------------------------


@strawberry.input
class CreateRewardInput:
    kind: RewardKind
    name: str
    points: int = strawberry.field(description="The regular price of one unit, in `asset`.")
    description: str = ""
    asset: str = strawberry.field(default="POINTS", description="POINTS, or GREEN for green rewards.")
    sale_points: int | None = None
    sale_starts_at: datetime | None = None
    sale_ends_at: datetime | None = None
    stock: int | None = strawberry.field(default=None, description="Omit (null) for unlimited.")
    available_from: datetime | None = None
    available_until: datetime | None = None
    min_tier: str | None = strawberry.field(default=None, description="A tier code, e.g. GOLD.")
    per_member_limit: int | None = None
    idempotency_key: str | None = retry_key()


@strawberry.input(description="Only the fields given change; null clears an optional field.")
class UpdateRewardInput:
    reward_id: strawberry.ID
    kind: RewardKind | None = strawberry.UNSET
    name: str | None = strawberry.UNSET
    description: str | None = strawberry.UNSET
    points: int | None = strawberry.UNSET
    sale_points: int | None = strawberry.UNSET
    sale_starts_at: datetime | None = strawberry.UNSET
    sale_ends_at: datetime | None = strawberry.UNSET
    stock: int | None = strawberry.UNSET
    available_from: datetime | None = strawberry.UNSET
    available_until: datetime | None = strawberry.UNSET
    min_tier: str | None = strawberry.UNSET
    per_member_limit: int | None = strawberry.UNSET


_REQUIRED_ON_UPDATE = ("kind", "name", "description", "points")


@strawberry.type
class RewardPayload:
    reward: RewardNode | None = None
    user_errors: list[UserError] = strawberry.field(default_factory=list)


@strawberry.input
class WithdrawRewardInput:
    reward_id: strawberry.ID
    idempotency_key: str
    note: str | None = strawberry.field(default=None, description="Why, recorded on each restoration.")


@strawberry.type
class WithdrawRewardPayload:
    reward: RewardNode | None = None
    cancelled_redemptions: int = strawberry.field(default=0, description="Pending redemptions cancelled.")
    restored_points: BigInt = strawberry.field(default=BigInt(0), description="Points given back to members.")
    user_errors: list[UserError] = strawberry.field(default_factory=list)


@strawberry.input
class RewardFilterInput:
    tenant_code: str | None = None
    kind: RewardKind | None = None
    status: RewardStatus | None = strawberry.field(
        default=None, description="Merchants and the operator; members always see active rewards."
    )
    max_points: int | None = strawberry.field(default=None, description="Current price at most this.")
    affordable: bool | None = strawberry.field(
        default=None,
        description="Member tokens: true keeps rewards whose current price fits the member's available "
        "balance of the reward's asset; false keeps the others.",
    )


@strawberry.input
class RedeemRewardInput:
    reward_id: strawberry.ID
    idempotency_key: str
    quantity: int = 1
    member_number: str | None = strawberry.field(
        default=None, description="Required for merchants; a member token redeems for itself."
    )


@strawberry.type
class RedeemRewardPayload(PointsPayload):
    redemption: RedemptionNode | None = None


@strawberry.input
class FulfilRedemptionInput:
    redemption_id: strawberry.ID
    idempotency_key: str | None = retry_key()


@strawberry.type
class FulfilRedemptionPayload:
    redemption: RedemptionNode | None = None
    user_errors: list[UserError] = strawberry.field(default_factory=list)


@strawberry.input
class CancelRedemptionInput:
    redemption_id: strawberry.ID
    idempotency_key: str
    reason: str | None = None


@strawberry.type
class CancelRedemptionPayload(PointsPayload):
    redemption: RedemptionNode | None = None


@strawberry.input
class RedemptionFilterInput:
    status: RedemptionStatus | None = None
    member_number: str | None = None
    reward_id: strawberry.ID | None = None


@strawberry.input
class SetPointsPaymentInput:
    points_per_unit: int = strawberry.field(description="Points worth one currency unit, e.g. 100.")
    max_share: Decimal = strawberry.field(description='Largest share of a bill, e.g. "0.5".')
    enabled: bool = True


@strawberry.type
class SetPointsPaymentPayload:
    settings: PointsPaymentSettingsNode | None = None
    user_errors: list[UserError] = strawberry.field(default_factory=list)


@strawberry.input
class PayWithPointsInput:
    member_number: str
    bill_amount: Decimal
    points: int
    order_ref: str
    idempotency_key: str
    store_code: str | None = None


@strawberry.type
class PayWithPointsPayload(PointsPayload):
    payment: PointsPayment | None = None


def _payment(data: dict[str, Any]) -> PointsPayment | None:
    payment = data.get("payment")
    if not payment:
        return None
    return PointsPayment(
        bill_amount=Decimal(payment["billAmount"]),
        points_value=Decimal(payment["pointsValue"]),
        amount_due=Decimal(payment["amountDue"]),
        currency=payment["currency"],
        points_per_unit=payment["pointsPerUnit"],
    )


def _spec(input: CreateRewardInput) -> service.RewardSpec:
    return service.RewardSpec(
        kind=input.kind,
        name=input.name,
        points=input.points,
        description=input.description,
        asset=input.asset,
        sale_points=input.sale_points,
        sale_starts_at=input.sale_starts_at,
        sale_ends_at=input.sale_ends_at,
        stock=input.stock,
        available_from=input.available_from,
        available_until=input.available_until,
        min_tier=input.min_tier,
        per_member_limit=input.per_member_limit,
    )


def _changes(input: UpdateRewardInput) -> dict[str, Any]:
    changes = {
        attribute: value
        for attribute in service.EDITABLE
        if (value := getattr(input, attribute)) is not strawberry.UNSET
    }
    for attribute in _REQUIRED_ON_UPDATE:
        if attribute in changes and changes[attribute] is None:
            raise DomainError("REQUIRED", f"{attribute} cannot be null", attribute)
    return changes


# -- resolvers -------------------------------------------------------------------------------------


@strawberry.type
class CatalogQueries:
    @strawberry.field(
        description="Rewards: the whole alliance's active catalog for a member, a merchant's own "
        "catalog, everything for the operator. Keyset-paged in creation order."
    )
    async def rewards(
        self,
        info: Info,
        filter: RewardFilterInput | None = None,
        first: int | None = None,
        after: str | None = None,
    ) -> Connection[RewardNode]:
        principal = info.context.require(TENANTS_READ)
        size = page_size(first, info.context.settings.max_page_size)
        after_id = from_cursor(after)
        where = filter or RewardFilterInput()
        if where.affordable is not None and principal.member_id is None:
            raise DomainError("MEMBER_TOKEN_REQUIRED", "affordable needs a member token", "affordable")
        async with info.context.transaction() as session:
            balances = None
            if where.affordable is not None and principal.member_id is not None:
                balances = {
                    b.asset: b.available for b in await member_balances(session, principal.member_id, 0)
                }
            criteria = service.RewardFilter(
                tenant_code=where.tenant_code,
                kind=where.kind,
                status=where.status,
                max_points=where.max_points,
                affordable=where.affordable,
                balances=balances,
            )
            rows = await service.list_rewards(
                session, criteria, principal.kind == "member", after_id, size + 1
            )
        return build_connection(rows, size, lambda r: r.reward.id, RewardNode.from_row, after_id is not None)

    @strawberry.field(description="One reward by id, if the caller may see it.")
    async def reward(self, info: Info, id: strawberry.ID) -> RewardNode | None:
        info.context.require(TENANTS_READ)
        async with info.context.transaction() as session:
            row = await service.reward_by_id(session, pk_of(id, "Reward", "id"))
        return None if row is None else RewardNode.from_row(row)

    @strawberry.field(
        description="Redemptions: a merchant's of its rewards, a member's own, all for the operator."
    )
    async def redemptions(
        self,
        info: Info,
        filter: RedemptionFilterInput | None = None,
        first: int | None = None,
        after: str | None = None,
    ) -> Connection[RedemptionNode]:
        info.context.require(LEDGER_READ)
        size = page_size(first, info.context.settings.max_page_size)
        after_id = from_cursor(after)
        where = filter or RedemptionFilterInput()
        criteria = service.RedemptionFilter(
            status=where.status.value if where.status is not None else None,
            member_number=where.member_number,
            reward_id=pk_of(where.reward_id, "Reward", "rewardId") if where.reward_id is not None else None,
        )
        async with info.context.transaction() as session:
            rows = await service.list_redemptions(session, criteria, after_id, size + 1)
        return build_connection(
            rows, size, lambda r: r.redemption.id, RedemptionNode.from_row, after_id is not None
        )

    @strawberry.field(description="A merchant's points-as-payment terms (a merchant: its own by default).")
    async def points_payment(
        self, info: Info, tenant_code: str | None = None
    ) -> PointsPaymentSettingsNode | None:
        principal = info.context.require(TENANTS_READ)
        async with info.context.transaction() as session:
            if tenant_code is not None:
                tenant = await tenant_by_code(session, tenant_code)
            elif principal.tenant_id is not None:
                tenant = await tenant_by_id(session, principal.tenant_id)
            else:
                raise DomainError("TENANT_REQUIRED", "tenantCode is required", "tenantCode")
            if tenant is None or tenant.id is None:
                return None
            settings = await service.points_payment_settings(session, tenant.id)
        return None if settings is None else PointsPaymentSettingsNode.from_model(settings, tenant.code)


async def _reward_row(session: Any, reward: Reward) -> service.RewardRow:
    assert reward.id is not None
    row = await service.reward_by_id(session, reward.id)
    assert row is not None
    return row


@strawberry.type
class CatalogMutations:
    @strawberry.mutation(description="Add a reward to the calling merchant's catalog.")
    async def create_reward(self, info: Info, input: CreateRewardInput) -> RewardPayload:
        principal = info.context.require(CATALOG_WRITE, "merchant")
        assert principal.tenant_id is not None
        tenant_id = principal.tenant_id

        async def create(session):  # type: ignore[no-untyped-def]
            reward = await made_once_row(
                session,
                info.context,
                input.idempotency_key,
                Reward,
                lambda: service.create_reward(session, tenant_id, _spec(input)),
            )
            return await _reward_row(session, reward)

        result = await run_in_transaction(info.context, create)
        if isinstance(result, list):
            return RewardPayload(user_errors=result)
        return RewardPayload(reward=RewardNode.from_row(result))

    @strawberry.mutation(description="Change a reward of the calling merchant's catalog.")
    async def update_reward(self, info: Info, input: UpdateRewardInput) -> RewardPayload:
        info.context.require(CATALOG_WRITE, "merchant")
        try:
            reward_id = pk_of(input.reward_id, "Reward", "rewardId")
            changes = _changes(input)
        except DomainError as error:
            return RewardPayload(user_errors=[user_error(error)])

        async def update(session):  # type: ignore[no-untyped-def]
            return await _reward_row(session, await service.update_reward(session, reward_id, changes))

        result = await run_in_transaction(info.context, update)
        if isinstance(result, list):
            return RewardPayload(user_errors=result)
        return RewardPayload(reward=RewardNode.from_row(result))

    @strawberry.mutation(
        description="Withdraw a reward: no more redemptions; pending ones are cancelled and their points "
        "restored (points whose lot expired meanwhile come back with fresh validity)."
    )
    async def withdraw_reward(self, info: Info, input: WithdrawRewardInput) -> WithdrawRewardPayload:
        principal = info.context.require(CATALOG_WRITE, "merchant")
        try:
            data = await service.withdraw_reward(
                info.context.services.db,
                poster(principal),
                idempotency_key=input.idempotency_key,
                reward_id=pk_of(input.reward_id, "Reward", "rewardId"),
                note=input.note,
            )
        except DomainError as error:
            return WithdrawRewardPayload(user_errors=[user_error(error)])
        return WithdrawRewardPayload(
            reward=RewardNode.from_payload(data["reward"]) if data.get("reward") else None,
            cancelled_redemptions=data.get("cancelledRedemptions", 0),
            restored_points=BigInt(data.get("restoredPoints", 0)),
            user_errors=[UserError(**error) for error in data["userErrors"]],
        )

    @strawberry.mutation(
        description="Redeem a reward: the merchant whose reward it is for a linked member, or a member "
        "token for its own wallet. Points are debited at once; the redemption starts PENDING."
    )
    async def redeem_reward(self, info: Info, input: RedeemRewardInput) -> RedeemRewardPayload:
        principal = info.context.require(POINTS_REDEEM, "merchant", "member")
        try:
            data = await service.redeem_reward(
                info.context.services.db,
                poster(principal),
                member_id=principal.member_id,
                idempotency_key=input.idempotency_key,
                member_number=input.member_number,
                reward_id=pk_of(input.reward_id, "Reward", "rewardId"),
                quantity=input.quantity,
            )
        except DomainError as error:
            return refusal(RedeemRewardPayload, error)
        payload = shape(RedeemRewardPayload, data)
        payload.redemption = _redemption(data)
        return payload

    @strawberry.mutation(
        description="Mark a pending redemption fulfilled (goods handed over, service given)."
    )
    async def fulfil_redemption(self, info: Info, input: FulfilRedemptionInput) -> FulfilRedemptionPayload:
        principal = info.context.require(CATALOG_WRITE, "merchant")
        try:
            data = await service.fulfil_redemption(
                info.context.services.db,
                poster(principal),
                redemption_id=pk_of(input.redemption_id, "Redemption", "redemptionId"),
                idempotency_key=input.idempotency_key,
            )
        except DomainError as error:
            return FulfilRedemptionPayload(user_errors=[user_error(error)])
        return FulfilRedemptionPayload(
            redemption=_redemption(data), user_errors=[UserError(**error) for error in data["userErrors"]]
        )

    @strawberry.mutation(
        description="Cancel a pending redemption: its points go back into the lots they came from "
        "(fresh validity where a lot expired meanwhile) and its stock returns."
    )
    async def cancel_redemption(self, info: Info, input: CancelRedemptionInput) -> CancelRedemptionPayload:
        principal = info.context.require(CATALOG_WRITE, "merchant")
        try:
            data = await service.cancel_redemption(
                info.context.services.db,
                poster(principal),
                idempotency_key=input.idempotency_key,
                redemption_id=pk_of(input.redemption_id, "Redemption", "redemptionId"),
                reason=input.reason,
            )
        except DomainError as error:
            return refusal(CancelRedemptionPayload, error)
        payload = shape(CancelRedemptionPayload, data)
        payload.redemption = _redemption(data)
        return payload

    @strawberry.mutation(description="The calling merchant's points-as-payment rate and maximum share.")
    async def set_points_payment(self, info: Info, input: SetPointsPaymentInput) -> SetPointsPaymentPayload:
        principal = info.context.require(CATALOG_WRITE, "merchant")
        assert principal.tenant_id is not None
        tenant_id = principal.tenant_id

        async def save(session):  # type: ignore[no-untyped-def]
            settings = await service.set_points_payment(
                session,
                tenant_id,
                points_per_unit=input.points_per_unit,
                max_share=input.max_share,
                enabled=input.enabled,
            )
            tenant = await tenant_by_id(session, tenant_id)
            assert tenant is not None
            return PointsPaymentSettingsNode.from_model(settings, tenant.code)

        result = await run_in_transaction(info.context, save)
        if isinstance(result, list):
            return SetPointsPaymentPayload(user_errors=result)
        return SetPointsPaymentPayload(settings=result)

    @strawberry.mutation(
        description="Points pay part of a bill at the calling merchant, up to its maximum share "
        "(OVER_ALLOWED_SHARE beyond it); the payload says what the points were worth."
    )
    async def pay_with_points(self, info: Info, input: PayWithPointsInput) -> PayWithPointsPayload:
        principal = info.context.require(POINTS_REDEEM, "merchant")
        try:
            data = await service.pay_with_points(
                info.context.services.db,
                poster(principal),
                idempotency_key=input.idempotency_key,
                member_number=input.member_number,
                bill_amount=input.bill_amount,
                points=input.points,
                order_ref=input.order_ref,
                store_code=input.store_code,
            )
        except DomainError as error:
            return refusal(PayWithPointsPayload, error)
        payload = shape(PayWithPointsPayload, data)
        payload.payment = _payment(data)
        return payload
