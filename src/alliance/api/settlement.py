"""GraphQL for settlement: terms, batches (lines, positions, payment instructions), approval,
payment, reconciliation and statements. Merchants see only what they are a party to."""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal
from enum import Enum
from typing import Annotated

import strawberry

from alliance.api.context import Info
from alliance.api.ids import from_cursor, from_global_id, to_global_id
from alliance.api.mutations import made_once_row, run_in_transaction, user_error
from alliance.api.types import Connection, Node, UserError, build_connection, page_size, retry_key
from alliance.auth.principal import SETTLEMENT_READ, SETTLEMENT_WRITE
from alliance.errors import DomainError
from alliance.ledger.service import Poster
from alliance.settlement import service
from alliance.settlement.models import SettlementBatch, SettlementDispute, SettlementTerms
from alliance.tenants.service import tenant_by_code


@strawberry.enum
class SettlementStatus(Enum):
    DRAFT = "draft"
    APPROVED = "approved"
    PAID = "paid"


@strawberry.enum
class PaymentDirection(Enum):
    PAY = "PAY"
    RECEIVE = "RECEIVE"


@strawberry.type
class SettlementLine:
    issuer_code: str
    redeemer_code: str
    points: int
    gross_amount: Decimal
    fee_amount: Decimal
    net_amount: Decimal


@strawberry.type
class ClearingLine:
    """Operator clearing: one tenant against the operator."""

    tenant_code: str
    billing: str
    issued_points: int
    accrual_amount: Decimal = strawberry.field(
        description="What the tenant owes for points issued (postpaid)."
    )
    redeemed_points: int
    reimbursement_amount: Decimal = strawberry.field(
        description="What the operator pays for points redeemed."
    )
    net_amount: Decimal


@strawberry.type
class SettlementPosition:
    party: str = strawberry.field(description="A tenant code, or OPERATOR for the operator's fees.")
    receivable: Decimal
    payable: Decimal
    net_amount: Decimal


@strawberry.type
class PaymentInstruction:
    party: str
    direction: PaymentDirection
    amount: Decimal
    payment_reference: str | None


@strawberry.enum
class DisputeStatus(Enum):
    OPEN = "open"
    RESOLVED = "resolved"


@strawberry.type(name="SettlementDispute")
class SettlementDisputeNode(Node):
    issuer_code: str
    redeemer_code: str
    raised_by: str
    reason: str
    status: DisputeStatus
    resolution: str | None
    created_at: datetime
    resolved_at: datetime | None


async def _dispute_nodes(session, disputes) -> list[SettlementDisputeNode]:  # type: ignore[no-untyped-def]
    codes = await service.party_codes(
        session, {d.issuer_tenant_id for d in disputes} | {d.redeemer_tenant_id for d in disputes}
    )
    return [
        SettlementDisputeNode(
            id=strawberry.ID(to_global_id("SettlementDispute", d.id)),
            issuer_code=codes[d.issuer_tenant_id],
            redeemer_code=codes[d.redeemer_tenant_id],
            raised_by=codes[d.raised_by_tenant_id],
            reason=d.reason,
            status=DisputeStatus(d.status),
            resolution=d.resolution,
            created_at=d.created_at,
            resolved_at=d.resolved_at,
        )
        for d in disputes
    ]


@strawberry.type(name="SettlementBatch")
class SettlementBatchNode(Node):
    status: SettlementStatus
    asset: str
    period_start: datetime
    period_end: datetime
    line_points: int = strawberry.field(description="Σ line points = crossRedeemedPoints − reversedPoints.")
    cross_redeemed_points: int
    reversed_points: int
    gross_amount: Decimal
    fee_amount: Decimal
    computed_at: datetime
    approved_at: datetime | None
    paid_at: datetime | None
    pk: strawberry.Private[int]

    @classmethod
    def from_model(cls, batch: SettlementBatch) -> SettlementBatchNode:
        return cls(
            id=strawberry.ID(to_global_id("SettlementBatch", batch.id)),
            status=SettlementStatus(batch.status),
            asset=batch.asset,
            period_start=batch.period_start,
            period_end=batch.period_end,
            line_points=batch.line_points,
            cross_redeemed_points=batch.cross_redeemed_points,
            reversed_points=batch.reversed_points,
            gross_amount=batch.gross_amount,
            fee_amount=batch.fee_amount,
            computed_at=batch.computed_at,
            approved_at=batch.approved_at,
            paid_at=batch.paid_at,
            pk=batch.id,
        )

    @strawberry.field(description="Bilateral lines (issuer × redeemer) the caller is a party to.")
    async def lines(
        self, info: Info, first: int | None = None, after: str | None = None
    ) -> Connection[SettlementLine]:
        size = page_size(first, info.context.settings.max_page_size)
        after_id = from_cursor(after)
        async with info.context.transaction() as session:
            rows = await service.batch_lines(session, self.pk, after_id, size + 1)
        return build_connection(
            rows,
            size,
            lambda line: line.id,
            lambda line: SettlementLine(
                issuer_code=line.issuer_code,
                redeemer_code=line.redeemer_code,
                points=line.points,
                gross_amount=line.gross_amount,
                fee_amount=line.fee_amount,
                net_amount=line.net_amount,
            ),
            after_id is not None,
        )

    @strawberry.field(description="Operator clearing batches: each tenant against the operator.")
    async def clearing_lines(self, info: Info) -> list[ClearingLine]:
        async with info.context.transaction() as session:
            rows = await service.clearing_lines(session, self.pk)
        return [
            ClearingLine(
                tenant_code=code,
                billing=row.billing.upper(),
                issued_points=row.issued_points,
                accrual_amount=row.accrual_amount,
                redeemed_points=row.redeemed_points,
                reimbursement_amount=row.reimbursement_amount,
                net_amount=row.net_amount,
            )
            for code, row in rows
        ]

    @strawberry.field(description="Net position per party; they sum to zero including the operator.")
    async def positions(self, info: Info) -> list[SettlementPosition]:
        async with info.context.transaction() as session:
            rows = await service.batch_positions(session, self.pk)
        return [
            SettlementPosition(
                party=p.party, receivable=p.receivable, payable=p.payable, net_amount=p.net_amount
            )
            for p in rows
        ]

    @strawberry.field(description="After multilateral netting: each party pays or receives one amount.")
    async def instructions(self, info: Info) -> list[PaymentInstruction]:
        async with info.context.transaction() as session:
            rows = await service.batch_positions(session, self.pk)
        return [
            PaymentInstruction(
                party=p.party,
                direction=PaymentDirection(p.direction),
                amount=abs(p.net_amount),
                payment_reference=p.payment_reference,
            )
            for p in rows
            if p.direction is not None
        ]

    @strawberry.field(description="Disputes on this batch's lines that the caller is a party to.")
    async def disputes(self, info: Info) -> list[SettlementDisputeNode]:
        async with info.context.transaction() as session:
            return await _dispute_nodes(session, await service.batch_disputes(session, self.pk))

    @strawberry.field(description="The statement as CSV (lines and positions visible to the caller).")
    async def statement_csv(self, info: Info) -> str:
        async with info.context.transaction() as session:
            return await service.statement_csv(session, self.pk)


@strawberry.type
class SettlementTermsNode:
    asset: str
    model: str
    settlement_value: Decimal
    currency: str
    fee_bps: int
    period_length: str
    effective_from: datetime

    @classmethod
    def from_model(cls, terms: SettlementTerms) -> SettlementTermsNode:
        return cls(
            asset=terms.asset,
            model=terms.model.upper(),
            settlement_value=terms.settlement_value,
            currency=terms.currency,
            fee_bps=terms.fee_bps,
            period_length=terms.period_length.upper(),
            effective_from=terms.effective_from,
        )


@strawberry.type
class ReconciliationDifference:
    issuer_code: str
    redeemer_code: str
    batch_points: int
    ledger_points: int


@strawberry.type
class SettlementReconciliation:
    batch: SettlementBatchNode
    matches: bool = strawberry.field(description="True when the batch equals a fresh recomputation.")
    differences: list[ReconciliationDifference]


@strawberry.input
class SettlementBatchFilter:
    asset: str | None = None
    status: SettlementStatus | None = None


@strawberry.input
class RunSettlementInput:
    asset: str = "POINTS"
    period_start: date = strawberry.field(description="First day of the period (alliance time zone).")
    period_end: date | None = strawberry.field(default=None, description="Exclusive; default: one period.")


@strawberry.type
class SettlementBatchPayload:
    batch: SettlementBatchNode | None = None
    user_errors: list[UserError] = strawberry.field(default_factory=list)


@strawberry.input
class ApproveSettlementInput:
    batch_id: strawberry.ID
    idempotency_key: str | None = retry_key()


@strawberry.input
class MarkSettlementPaidInput:
    batch_id: strawberry.ID
    party: str = strawberry.field(description="The tenant code whose payment is recorded, or OPERATOR.")
    payment_reference: str
    idempotency_key: str | None = retry_key()


@strawberry.enum
class BillingType(Enum):
    PREPAID = "prepaid"
    POSTPAID = "postpaid"


@strawberry.input
class SetClearingTermsInput:
    tenant_code: str
    accrual_cost: Decimal = strawberry.field(description="What the tenant pays per point it issues.")
    reimbursement_rate: Decimal = strawberry.field(
        description="What the operator pays per point redeemed there."
    )
    billing: BillingType
    effective_from: datetime
    asset: str = "POINTS"


@strawberry.type
class SetClearingTermsPayload:
    ok: bool = False
    user_errors: list[UserError] = strawberry.field(default_factory=list)


@strawberry.input
class PurchasePointBlockInput:
    tenant_code: str
    points: int
    price: Decimal
    idempotency_key: str
    asset: str = "POINTS"


@strawberry.type
class PurchasePointBlockPayload:
    prepaid_balance: int | None = None
    user_errors: list[UserError] = strawberry.field(default_factory=list)


@strawberry.input
class DisputeSettlementLineInput:
    batch_id: strawberry.ID
    issuer_code: str
    redeemer_code: str
    reason: str
    idempotency_key: str | None = retry_key()


@strawberry.input
class ResolveDisputeInput:
    dispute_id: strawberry.ID
    resolution: str
    idempotency_key: str | None = retry_key()


@strawberry.type
class SettlementDisputePayload:
    dispute: SettlementDisputeNode | None = None
    user_errors: list[UserError] = strawberry.field(default_factory=list)


@strawberry.input
class SetSettlementTermsInput:
    asset: str
    settlement_value: Decimal
    fee_bps: int
    effective_from: datetime
    model: str = "PROVENANCE_NETTING"
    currency: str = "CNY"
    period_length: str = "MONTHLY"
    idempotency_key: str | None = retry_key()


@strawberry.type
class SetSettlementTermsPayload:
    terms: SettlementTermsNode | None = None
    user_errors: list[UserError] = strawberry.field(default_factory=list)


def batch_pk(global_id: str) -> int:
    type_name, pk = from_global_id(global_id, "batchId")
    if type_name != "SettlementBatch":
        raise DomainError("INVALID_ID", "batchId must be a SettlementBatch id", "batchId")
    return pk


async def _batch_mutation(info: Info, action) -> SettlementBatchPayload:  # type: ignore[no-untyped-def]
    result = await run_in_transaction(info.context, action)
    if isinstance(result, list):
        return SettlementBatchPayload(user_errors=result)
    return SettlementBatchPayload(batch=SettlementBatchNode.from_model(result))


@strawberry.type
class BreakageLine:
    issuer_code: str = strawberry.field(
        description="The issuing tenant, or ALLIANCE for alliance-issued points."
    )
    points: int


@strawberry.type
class SettlementQueries:
    @strawberry.field(
        description="Points expired into breakage per issuer over [from, to) (merchants: own only)."
    )
    async def breakage(
        self,
        info: Info,
        from_: Annotated[date, strawberry.argument(name="from")],
        to: date | None = None,
        asset: str = "POINTS",
    ) -> list[BreakageLine]:
        info.context.require(SETTLEMENT_READ, "operator", "merchant")
        async with info.context.transaction() as session:
            rows = await service.breakage_report(
                session, asset, from_, to or date.today(), info.context.settings.time_zone
            )
        return [BreakageLine(issuer_code=r.issuer_code, points=r.points) for r in rows]

    @strawberry.field(description="Settlement batches, newest first.")
    async def settlement_batches(
        self,
        info: Info,
        first: int | None = None,
        after: str | None = None,
        filter: SettlementBatchFilter | None = None,
    ) -> Connection[SettlementBatchNode]:
        info.context.require(SETTLEMENT_READ, "operator", "merchant")
        size = page_size(first, info.context.settings.max_page_size)
        before_id = from_cursor(after)
        async with info.context.transaction() as session:
            rows = await service.list_batches(
                session,
                filter.asset if filter else None,
                filter.status.value if filter and filter.status else None,
                before_id,
                size + 1,
            )
        return build_connection(
            rows, size, lambda b: b.id, SettlementBatchNode.from_model, before_id is not None
        )

    @strawberry.field
    async def settlement_batch(self, info: Info, id: strawberry.ID) -> SettlementBatchNode | None:
        info.context.require(SETTLEMENT_READ, "operator", "merchant")
        async with info.context.transaction() as session:
            try:
                return SettlementBatchNode.from_model(await service.batch_by_id(session, batch_pk(id)))
            except DomainError:
                return None

    @strawberry.field(description="The batch against a fresh recomputation from the ledger (operator).")
    async def settlement_reconciliation(
        self, info: Info, batch_id: strawberry.ID
    ) -> SettlementReconciliation:
        info.context.require(SETTLEMENT_WRITE, "operator")
        async with info.context.transaction() as session:
            pk = batch_pk(batch_id)
            batch = await service.batch_by_id(session, pk)
            differences = await service.reconcile(session, pk)
        return SettlementReconciliation(
            batch=SettlementBatchNode.from_model(batch),
            matches=not differences,
            differences=[
                ReconciliationDifference(
                    issuer_code=d.issuer_code,
                    redeemer_code=d.redeemer_code,
                    batch_points=d.batch_points,
                    ledger_points=d.ledger_points,
                )
                for d in differences
            ],
        )

    @strawberry.field(description="The settlement terms of an asset in force at an instant (default now).")
    async def settlement_terms(
        self, info: Info, asset: str = "POINTS", at: datetime | None = None
    ) -> SettlementTermsNode:
        info.context.require(SETTLEMENT_READ)
        async with info.context.transaction() as session:
            terms = await service.terms_in_force(session, asset, at or datetime.now().astimezone())
        return SettlementTermsNode.from_model(terms)


@strawberry.type
class SettlementMutations:
    @strawberry.mutation(description="Build or rebuild (while a draft) the batch of an asset and period.")
    async def run_settlement(self, info: Info, input: RunSettlementInput) -> SettlementBatchPayload:
        info.context.require(SETTLEMENT_WRITE, "operator")
        return await _batch_mutation(
            info,
            lambda session: service.run_settlement(
                session, input.asset, input.period_start, input.period_end
            ),
        )

    @strawberry.mutation(description="Approve a draft batch of an ended period; it becomes immutable.")
    async def approve_settlement(self, info: Info, input: ApproveSettlementInput) -> SettlementBatchPayload:
        info.context.require(SETTLEMENT_WRITE, "operator")

        async def approve(session):  # type: ignore[no-untyped-def]
            return await made_once_row(
                session,
                info.context,
                input.idempotency_key,
                SettlementBatch,
                lambda: service.approve_settlement(session, batch_pk(input.batch_id)),
            )

        return await _batch_mutation(info, approve)

    @strawberry.mutation(description="Record one party's payment; the batch is PAID when all are.")
    async def mark_settlement_paid(
        self, info: Info, input: MarkSettlementPaidInput
    ) -> SettlementBatchPayload:
        info.context.require(SETTLEMENT_WRITE, "operator")

        async def mark(session):  # type: ignore[no-untyped-def]
            return await made_once_row(
                session,
                info.context,
                input.idempotency_key,
                SettlementBatch,
                lambda: service.mark_settlement_paid(
                    session, batch_pk(input.batch_id), input.party, input.payment_reference
                ),
            )

        return await _batch_mutation(info, mark)

    @strawberry.mutation(description="A tenant's operator-clearing rates and billing type (operator).")
    async def set_clearing_terms(self, info: Info, input: SetClearingTermsInput) -> SetClearingTermsPayload:
        info.context.require(SETTLEMENT_WRITE, "operator")

        async def set_terms(session):  # type: ignore[no-untyped-def]
            return await service.set_clearing_terms(
                session,
                input.tenant_code,
                input.asset,
                input.accrual_cost,
                input.reimbursement_rate,
                input.billing.value,
                input.effective_from,
            )

        result = await run_in_transaction(info.context, set_terms)
        if isinstance(result, list):
            return SetClearingTermsPayload(user_errors=result)
        return SetClearingTermsPayload(ok=True)

    @strawberry.mutation(description="Record a prepaid tenant's purchase of a block of points (operator).")
    async def purchase_point_block(
        self, info: Info, input: PurchasePointBlockInput
    ) -> PurchasePointBlockPayload:
        principal = info.context.require(SETTLEMENT_WRITE, "operator")
        try:
            async with info.context.transaction() as session:
                tenant = await tenant_by_code(session, input.tenant_code)
            if tenant is None or tenant.id is None:
                raise DomainError("TENANT_NOT_FOUND", "tenant not found", "tenantCode")
            data = await service.purchase_point_block(
                info.context.services.db,
                Poster(principal.idempotency_scope, None),
                idempotency_key=input.idempotency_key,
                tenant_id=tenant.id,
                asset=input.asset,
                points=input.points,
                price=input.price,
            )
        except DomainError as error:
            return PurchasePointBlockPayload(user_errors=[user_error(error)])
        return PurchasePointBlockPayload(
            prepaid_balance=data.get("prepaidBalance"),
            user_errors=[UserError(**e) for e in data["userErrors"]],
        )

    @strawberry.mutation(description="A party merchant contests a line of a draft or approved batch.")
    async def dispute_settlement_line(
        self, info: Info, input: DisputeSettlementLineInput
    ) -> SettlementDisputePayload:
        info.context.require(SETTLEMENT_READ, "merchant")

        async def dispute(session):  # type: ignore[no-untyped-def]
            row = await made_once_row(
                session,
                info.context,
                input.idempotency_key,
                SettlementDispute,
                lambda: service.dispute_line(
                    session, batch_pk(input.batch_id), input.issuer_code, input.redeemer_code, input.reason
                ),
            )
            return (await _dispute_nodes(session, [row]))[0]

        result = await run_in_transaction(info.context, dispute)
        if isinstance(result, list):
            return SettlementDisputePayload(user_errors=result)
        return SettlementDisputePayload(dispute=result)

    @strawberry.mutation(description="The operator resolves a dispute (corrections post in the open period).")
    async def resolve_dispute(self, info: Info, input: ResolveDisputeInput) -> SettlementDisputePayload:
        info.context.require(SETTLEMENT_WRITE, "operator")

        async def resolve(session):  # type: ignore[no-untyped-def]
            type_name, pk = from_global_id(input.dispute_id, "disputeId")
            if type_name != "SettlementDispute":
                raise DomainError("INVALID_ID", "disputeId must be a SettlementDispute id", "disputeId")
            row = await made_once_row(
                session,
                info.context,
                input.idempotency_key,
                SettlementDispute,
                lambda: service.resolve_dispute(session, pk, input.resolution),
            )
            return (await _dispute_nodes(session, [row]))[0]

        result = await run_in_transaction(info.context, resolve)
        if isinstance(result, list):
            return SettlementDisputePayload(user_errors=result)
        return SettlementDisputePayload(dispute=result)

    @strawberry.mutation(description="A new version of an asset's settlement terms, from effectiveFrom on.")
    async def set_settlement_terms(
        self, info: Info, input: SetSettlementTermsInput
    ) -> SetSettlementTermsPayload:
        info.context.require(SETTLEMENT_WRITE, "operator")

        async def set_terms(session):  # type: ignore[no-untyped-def]
            return await made_once_row(
                session,
                info.context,
                input.idempotency_key,
                SettlementTerms,
                lambda: service.set_terms(
                    session,
                    input.asset,
                    input.model.lower(),
                    input.settlement_value,
                    input.currency,
                    input.fee_bps,
                    input.period_length.lower(),
                    input.effective_from,
                ),
            )

        result = await run_in_transaction(info.context, set_terms)
        if isinstance(result, list):
            return SetSettlementTermsPayload(user_errors=result)
        return SetSettlementTermsPayload(terms=SettlementTermsNode.from_model(result))
