// Live balances: a feed that calls back with the member's balances whenever they may have changed.
//
// Today it polls (every POLL_MS while the page is visible, and at once when it becomes visible
// again). When the API has the `balanceChanged` subscription, a SubscriptionFeed with the same
// start/stop shape replaces PollingFeed in `balanceFeed()` and nothing else changes.

import { loadBalances } from "./api.js";

export const POLL_MS = 5000;

class PollingFeed {
  constructor(onBalances, intervalMs) {
    this.onBalances = onBalances;
    this.intervalMs = intervalMs;
    this.timer = null;
    this.visibility = () => {
      if (document.visibilityState === "visible") this.tick();
    };
  }

  start() {
    document.addEventListener("visibilitychange", this.visibility);
    this.schedule();
  }

  schedule() {
    clearTimeout(this.timer);
    this.timer = setTimeout(() => this.tick(), this.intervalMs);
  }

  async tick() {
    if (document.visibilityState === "visible") {
      try {
        this.onBalances(await loadBalances());
      } catch {
        // a failed poll (offline, signed out) is retried at the next tick; sign-out is handled globally
      }
    }
    if (this.timer !== null) this.schedule();
  }

  stop() {
    document.removeEventListener("visibilitychange", this.visibility);
    clearTimeout(this.timer);
    this.timer = null;
  }
}

export function balanceFeed(onBalances) {
  return new PollingFeed(onBalances, POLL_MS);
}
