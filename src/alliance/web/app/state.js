// What the screens share while signed in: the latest balances, and who hears about changes.

const listeners = new Set();
let balances = [];

export function currentBalance(asset) {
  return balances.find((balance) => balance.asset === asset) ?? { asset, available: 0, held: 0, expiringSoon: [] };
}

// Replaces the balances of the assets in `updated` (a mutation answer may carry one asset only).
export function setBalances(updated) {
  const changed = updated.some((balance) => currentBalance(balance.asset).available !== balance.available);
  const byAsset = new Map(balances.map((balance) => [balance.asset, balance]));
  for (const balance of updated) byAsset.set(balance.asset, { ...byAsset.get(balance.asset), ...balance });
  balances = [...byAsset.values()];
  if (changed) for (const listener of listeners) listener(balances);
}

export function onBalancesChange(listener) {
  listeners.add(listener);
  return () => listeners.delete(listener);
}

export function resetState() {
  balances = [];
}
