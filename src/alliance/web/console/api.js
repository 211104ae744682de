// The console's GraphQL: every query and mutation it sends, against the public /graphql only.

import { TokenStore } from "/shared/auth.js";
import { gql } from "/shared/graphql.js";

export const store = new TokenStore("console");

export function query(text, variables = {}) {
  return gql(text, variables, { store });
}

const PAGE = "pageInfo { hasNextPage endCursor }";
const ERRORS = "userErrors { field code message }";

export const VIEWER = `{ viewer { kind subject clientId scopes timeZone tenant { code name category } } }`;

// -- settlement -----------------------------------------------------------------------------------

const BATCH_SUMMARY = `id status asset periodStart periodEnd linePoints crossRedeemedPoints reversedPoints
  grossAmount feeAmount computedAt approvedAt paidAt`;

export const BATCHES = `query($first: Int, $after: String) { settlementBatches(first: $first, after: $after) {
  edges { node { ${BATCH_SUMMARY} } } ${PAGE} } }`;

export const BATCH = `query($id: ID!) { settlementBatch(id: $id) { ${BATCH_SUMMARY}
  positions { party receivable payable netAmount }
  instructions { party direction amount paymentReference }
  disputes { id issuerCode redeemerCode raisedBy reason status resolution createdAt resolvedAt } } }`;

export const BATCH_LINES = `query($id: ID!, $first: Int, $after: String) { settlementBatch(id: $id) {
  lines(first: $first, after: $after) { edges { node { issuerCode redeemerCode points grossAmount feeAmount netAmount } } ${PAGE} } } }`;

export const BATCH_CSV = `query($id: ID!) { settlementBatch(id: $id) { periodStart asset statementCsv } }`;

export const RECONCILE = `query($id: ID!) { settlementReconciliation(batchId: $id) { matches
  differences { issuerCode redeemerCode batchPoints ledgerPoints } } }`;

export const RUN_SETTLEMENT = `mutation($i: RunSettlementInput!) { runSettlement(input: $i) { batch { id status } ${ERRORS} } }`;
export const APPROVE = `mutation($i: ApproveSettlementInput!) { approveSettlement(input: $i) { batch { id status approvedAt } ${ERRORS} } }`;
export const MARK_PAID = `mutation($i: MarkSettlementPaidInput!) { markSettlementPaid(input: $i) { batch { id status } ${ERRORS} } }`;
export const DISPUTE = `mutation($i: DisputeSettlementLineInput!) { disputeSettlementLine(input: $i) { dispute { id status } ${ERRORS} } }`;
export const RESOLVE = `mutation($i: ResolveDisputeInput!) { resolveDispute(input: $i) { dispute { id status resolution } ${ERRORS} } }`;

export const TERMS = `{ points: settlementTerms(asset: "POINTS") { asset model settlementValue currency feeBps periodLength effectiveFrom }
  green: settlementTerms(asset: "GREEN") { asset model settlementValue currency feeBps periodLength effectiveFrom } }`;

// -- operator -------------------------------------------------------------------------------------

export const TENANTS = `query($first: Int, $after: String) { tenants(first: $first, after: $after) {
  edges { node { id code name category status createdAt greenPoints } } ${PAGE} } }`;

export const TENANT = `query($code: String!) { tenant(code: $code) { code name category status createdAt greenPoints
  stores(first: 100) { edges { node { code name city } } } }
  pointsPayment(tenantCode: $code) { pointsPerUnit maxShare currency enabled } }`;

export const FLOWS = `query($from: Date, $to: Date) { pointsFlow(from: $from, to: $to) { periodStart issuerCategory redeemerCategory points } }`;

export const INSIGHTS = `query($from: Date, $to: Date) {
  pointsLiability { refreshedAt allianceBreakageRate outstanding { points value } expectedBreakage { points value }
    byExpiryMonth { month outstanding { points value } expectedBreakage { points value } }
    byIssuer { issuerCode category outstanding { points value } breakageRate rateBasis expectedBreakage { points value } } }
  merchantHealth(from: $from, to: $to) { tenantCode category issued redeemed redemptionRatio settlementLines disputes
    disputeRate latencyAsIssuer { medianDays p90Days } } }`;

export const BREAKAGE = `query($from: Date!, $to: Date, $asset: String!) { breakage(from: $from, to: $to, asset: $asset) { issuerCode points } }`;

export const EXPIRING = `query($days: Int!, $asset: String!, $first: Int, $after: String) {
  expiringPoints(days: $days, asset: $asset, first: $first, after: $after) {
  edges { node { memberNumber asset points firstExpiry } } ${PAGE} } }`;

export const AUDIT = `query($first: Int, $after: String, $operation: String) { auditLog(first: $first, after: $after, operation: $operation) {
  edges { node { createdAt principal clientId tenantCode operation outcome codes requestId } } ${PAGE} } }`;

// -- merchant -------------------------------------------------------------------------------------

export const MEMBERS = `query($search: String, $first: Int, $after: String) { members(search: $search, first: $first, after: $after) {
  edges { node { memberNumber name phone externalRef status createdAt } } ${PAGE} } }`;

export const MEMBER = `query($n: String!) { member(memberNumber: $n) { memberNumber name phone externalRef status createdAt
  tier { code name }
  balances { asset available held expiringSoon(days: 30) { points expiresAt } } } }`;

export const MEMBER_HISTORY = `query($n: String!, $first: Int, $after: String) { member(memberNumber: $n) {
  transactions(first: $first, after: $after) { edges { node { id kind points asset effectiveAt orderRef reason } } ${PAGE} } } }`;

export const RULES = `{ earningRules { id code kind config fundedBy campaign effectiveFrom effectiveUntil } }`;
export const DEFINE_RULE = `mutation($i: DefineEarningRuleInput!) { defineEarningRule(input: $i) { rule { id code } ${ERRORS} } }`;
export const RETIRE_RULE = `mutation($i: RetireEarningRuleInput!) { retireEarningRule(input: $i) { rule { id code effectiveUntil } ${ERRORS} } }`;

const REWARD = `id tenantCode kind name description asset points salePoints saleStartsAt saleEndsAt stock
  availableFrom availableUntil minTier perMemberLimit status currentPoints`;
export const REWARDS = `query($filter: RewardFilterInput, $first: Int, $after: String) { rewards(filter: $filter, first: $first, after: $after) {
  edges { node { ${REWARD} } } ${PAGE} } }`;
export const CREATE_REWARD = `mutation($i: CreateRewardInput!) { createReward(input: $i) { reward { id name } ${ERRORS} } }`;
export const UPDATE_REWARD = `mutation($i: UpdateRewardInput!) { updateReward(input: $i) { reward { id name } ${ERRORS} } }`;
export const WITHDRAW_REWARD = `mutation($i: WithdrawRewardInput!) { withdrawReward(input: $i) { reward { id status } cancelledRedemptions ${ERRORS} } }`;

// -- API clients ----------------------------------------------------------------------------------

const CLIENT = "clientId name role tenantCode scopes status createdAt secretRotatedAt revokedAt";
export const CLIENTS = `query($first: Int, $after: String) { apiClients(first: $first, after: $after) {
  edges { node { ${CLIENT} } } ${PAGE} } }`;
export const CREATE_CLIENT = `mutation($i: CreateApiClientInput!) { createApiClient(input: $i) { client { ${CLIENT} } clientSecret ${ERRORS} } }`;
export const ROTATE_CLIENT = `mutation($i: RotateApiClientSecretInput!) { rotateApiClientSecret(input: $i) { client { ${CLIENT} } clientSecret ${ERRORS} } }`;
export const REVOKE_CLIENT = `mutation($i: RevokeApiClientInput!) { revokeApiClient(input: $i) { client { ${CLIENT} } ${ERRORS} } }`;
