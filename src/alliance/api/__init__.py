"""The HTTP surface: GraphQL gateway, OAuth2 token endpoint, JWKS and health probes.

Resolvers parse input, check the caller's scope, call one domain function inside a
tenant-scoped transaction and shape the answer. Business rules live in the domain packages.
"""
