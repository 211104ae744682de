"""The shared points ledger: double-entry transactions, lots with provenance, holds, balances.

The books are written only by SQL functions (``migrations/sql/0002_ledger_functions.sql``);
this package validates requests, calls them, and reads balances and history.
"""
