"""Connections to PostgreSQL: the embedded server, the owner and application roles, and
the per-transaction access context that row-level security keys on."""

from alliance.db.database import AccessContext, Database

__all__ = ["AccessContext", "Database"]
