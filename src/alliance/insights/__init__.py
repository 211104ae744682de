"""Merchant insights: summaries of the ledger refreshed by a job, read by requests, privacy-safe."""
