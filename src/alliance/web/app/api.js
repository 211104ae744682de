// The member app's GraphQL operations (a member token: `viewer.member` is the signed-in member).

import { TokenStore } from "/shared/auth.js";
import { gql } from "/shared/graphql.js";
import { subscribe } from "/shared/ws.js";

export const store = new TokenStore("member");
const run = (query, variables) => gql(query, variables, { store });

const BALANCE = `asset available held expiringSoon(days: 30) { points expiresAt }`;
const BALANCES = `balances { ${BALANCE} }`;

export async function loadHome() {
  const data = await run(`{
    viewer { timeZone member { memberNumber name ${BALANCES}
      tier { code name rank }
      tierProgress { currentCode nextCode rollingPoints pointsToNext } } }
    tiers { code name rank qualifyingPoints }
    myOffers { id merchantName title description kind category tag multiplier endsAt }
  }`);
  return { timeZone: data.viewer.timeZone, member: data.viewer.member, tiers: data.tiers, offers: data.myOffers };
}

export async function loadBalances() {
  const data = await run(`{ viewer { member { ${BALANCES} } } }`);
  return data.viewer.member.balances;
}

export async function loadMemberNumber() {
  const data = await run(`{ viewer { member { memberNumber } } }`);
  return data.viewer.member.memberNumber;
}

// The member's balances as they change (first the current one of each asset): `handlers` as for
// `subscribe` in /shared/ws.js, with `onBalance(balance)` instead of `onData`. Returns {close()}.
export function watchBalances(memberNumber, { onBalance, ...handlers }) {
  return subscribe(
    {
      query: `subscription($n: String!) { balanceChanged(memberNumber: $n) { balance { ${BALANCE} } } }`,
      variables: { n: memberNumber },
      token: store.get(),
    },
    { ...handlers, onData: (data) => onBalance(data.balanceChanged.balance) },
  );
}

export async function loadHistory(after) {
  const data = await run(
    `query($after: String) { viewer { member { transactions(first: 20, after: $after) {
      edges { node { id kind points balanceChange asset effectiveAt tenantName storeName orderRef reason amount currency
        breakdown { rule points asset note } } }
      pageInfo { hasNextPage endCursor } } } } }`,
    { after },
  );
  return data.viewer.member.transactions;
}

export async function loadMerchants() {
  const data = await run(`{ tenants(first: 100) { edges { node { code name } } } }`);
  return data.tenants.edges.map((edge) => edge.node);
}

export async function loadRewards(filter, after) {
  const data = await run(
    `query($filter: RewardFilterInput, $after: String) { rewards(filter: $filter, first: 50, after: $after) {
      edges { node { id tenantCode tenantName kind name description asset points currentPoints onSale stock minTier } }
      pageInfo { hasNextPage endCursor } } }`,
    { filter, after },
  );
  return data.rewards;
}

export async function redeemReward(rewardId, idempotencyKey) {
  const data = await run(
    `mutation($i: RedeemRewardInput!) { redeemReward(input: $i) {
      redemption { id status points } balance { asset available held }
      userErrors { field code message } } }`,
    { i: { rewardId, idempotencyKey, quantity: 1 } },
  );
  return data.redeemReward;
}

export async function loadRedemptions(after) {
  const data = await run(
    `query($after: String) { redemptions(first: 20, after: $after) {
      edges { node { id status quantity points asset createdAt closedAt cancelReason
        reward { name tenantName } } }
      pageInfo { hasNextPage endCursor } } }`,
    { after },
  );
  return data.redemptions;
}
