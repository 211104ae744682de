"""API clients, signing keys, access tokens and the principal a request acts as."""
