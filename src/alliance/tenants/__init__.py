"""Partner merchants (tenants) and their stores."""
