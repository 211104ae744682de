"""Reward catalogs: merchants' rewards, redemptions with fulfilment, and points as payment."""
