"""Insights: what the ledger teaches merchants and the operator, served from summary tables that
`alliance insights refresh` keeps current (incrementally), read by requests, privacy-safe."""
