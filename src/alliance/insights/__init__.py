"""Insights: what the ledger teaches merchants and the operator, served from summary tables."""
