"""Settlement between merchants: terms, batches built from the ledger's provenance, netting,
approval and payment; expiry of lots into breakage.

The arithmetic is set-based SQL (``migrations/sql/0003_settlement.sql``); this package decides
periods, calls it, and reads the results.
"""
