"""Member tiers, alliance-wide: the operator's definitions, each member's tier and its audit.

Qualification is computed in PostgreSQL from the ledger (``migrations/sql/0004_tiers.sql``):
points earned (earn, award, compensate, net of their reversals) over a rolling 12 months. A
member moves up the moment they qualify (the ledger's earn path calls
``tier_upgrade_if_qualified``) and down only at the nightly ``alliance tiers evaluate``, once
they have stayed below their tier's threshold for the grace period.
"""
