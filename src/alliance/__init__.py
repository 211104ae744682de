"""Alliance: a coalition loyalty-points platform.

Partner merchants (tenants) share one points currency. The domain packages
(`tenants`, `members`, `auth`, `ledger`) hold models and service functions;
`api` is the thin GraphQL layer on top; `db` owns connections, the embedded
PostgreSQL and the tenant context that row-level security keys on.
"""

__version__ = "0.1.0"
