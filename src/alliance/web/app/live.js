// Live balances: a feed that calls back with the member's balances whenever they change.
//
// It holds the `balanceChanged` subscription open over WebSocket. While there is none (not yet
// open, or the socket closed) it polls instead (every POLL_MS while the page is visible, and at
// once when it becomes visible again) and reconnects after about RETRY_MIN_MS, doubling up to
// RETRY_MAX_MS. A new subscription starts with the current balances, so nothing is missed between.

import { loadBalances, loadMemberNumber, watchBalances } from "./api.js";

export const POLL_MS = 5000;
const RETRY_MIN_MS = 1000;
const RETRY_MAX_MS = 60_000;

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
    if (this.timer !== null) return; // already polling: keep the pace
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
        const balances = await loadBalances();
        if (this.timer !== null) this.onBalances(balances); // not when stopped meanwhile: it may be stale
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

class SubscriptionFeed {
  constructor(onBalances) {
    this.onBalances = onBalances;
    this.polling = new PollingFeed(onBalances, POLL_MS);
    this.memberNumber = null;
    this.subscription = null;
    this.retryTimer = null;
    this.retryMs = RETRY_MIN_MS;
    this.running = false;
  }

  start() {
    this.running = true;
    this.polling.start();
    this.connect();
  }

  async connect() {
    this.retryTimer = null;
    try {
      this.memberNumber ??= await loadMemberNumber();
    } catch {
      if (this.running) this.retry();
      return;
    }
    if (!this.running) return;
    this.subscription = watchBalances(this.memberNumber, {
      onStarted: () => this.polling.stop(),
      onBalance: (balance) => {
        this.retryMs = RETRY_MIN_MS; // the subscription works: a later drop starts backing off afresh
        this.onBalances([balance]);
      },
      onEnd: () => {
        this.subscription = null;
        if (!this.running) return;
        this.polling.start();
        this.retry();
      },
    });
  }

  retry() {
    // Jittered, so that the members of a restarted gateway do not all come back at once.
    this.retryTimer = setTimeout(() => this.connect(), this.retryMs * (0.5 + Math.random() / 2));
    this.retryMs = Math.min(this.retryMs * 2, RETRY_MAX_MS);
  }

  stop() {
    this.running = false;
    clearTimeout(this.retryTimer);
    if (this.subscription) this.subscription.close();
    this.subscription = null;
    this.polling.stop();
  }
}

export function balanceFeed(onBalances) {
  return new SubscriptionFeed(onBalances);
}
