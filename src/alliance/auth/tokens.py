"""RFC 9068-style JWT access tokens for API clients and members, and their verification."""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass
from typing import Any

from joserfc import jwt
from joserfc.errors import JoseError

from alliance.auth.keys import ALGORITHM, KeyRing
from alliance.auth.models import ApiClient
from alliance.auth.principal import DEFAULT_SCOPES, Principal
from alliance.config import Settings

MAX_REMEMBERED_TOKENS = 10_000


class InvalidToken(Exception):
    """The bearer token is malformed, expired, for another audience, or not signed by us."""


@dataclass(frozen=True, slots=True)
class IssuedToken:
    access_token: str
    expires_in: int
    scope: str


class TokenIssuer:
    def __init__(self, settings: Settings, keyring: KeyRing) -> None:
        self.settings = settings
        self.keyring = keyring
        # token -> (keys loaded at, expiry, principal): a client sends the same token with every
        # request until it expires, and an ES256 verification costs more CPU than the rest of an
        # earn's handling in Python. Entries die with the token or the next key reload.
        self._verified: dict[str, tuple[float, float, Principal]] = {}

    def _sign(self, claims: dict[str, Any]) -> str:
        key = self.keyring.signing_key
        assert key is not None, "key ring not loaded"
        header = {"alg": ALGORITHM, "typ": "at+jwt", "kid": key.kid}
        return jwt.encode(header, claims, key, algorithms=[ALGORITHM])

    def _base_claims(self, subject: str, ttl: int, now: int | None) -> dict[str, Any]:
        issued_at = int(time.time()) if now is None else now
        return {
            "iss": self.settings.issuer,
            "aud": self.settings.audience,
            "sub": subject,
            "iat": issued_at,
            "exp": issued_at + ttl,
            "jti": secrets.token_urlsafe(16),
        }

    def for_client(self, client: ApiClient, tenant_code: str | None, now: int | None = None) -> IssuedToken:
        ttl = self.settings.access_token_ttl_seconds
        scope = " ".join(sorted(client.scopes))
        claims = self._base_claims(client.client_id, ttl, now)
        claims |= {"client_id": client.client_id, "scope": scope, "role": client.role}
        if client.role == "merchant":
            assert client.tenant_id is not None and tenant_code is not None
            claims |= {"tenant": tenant_code, "tenant_id": client.tenant_id}
        return IssuedToken(self._sign(claims), ttl, scope)

    def for_member(self, member_id: int, member_number: str, now: int | None = None) -> IssuedToken:
        ttl = self.settings.member_token_ttl_seconds
        scope = " ".join(sorted(DEFAULT_SCOPES["member"]))
        claims = self._base_claims(f"member:{member_number}", ttl, now)
        claims |= {"scope": scope, "role": "member", "member_id": member_id, "member_number": member_number}
        return IssuedToken(self._sign(claims), ttl, scope)

    def verify(self, token: str) -> Principal:
        """The principal a token of ours stands for; `InvalidToken` for anything else."""
        remembered = self._verified.get(token)
        if remembered is not None:
            loaded_at, expires, principal = remembered
            if loaded_at == self.keyring.loaded_at and time.time() < expires:
                return principal
            del self._verified[token]
        principal, expires = self._verify(token)
        if len(self._verified) >= MAX_REMEMBERED_TOKENS:
            self._verified.clear()
        self._verified[token] = (self.keyring.loaded_at, expires, principal)
        return principal

    def _verify(self, token: str) -> tuple[Principal, float]:
        try:
            decoded = jwt.decode(token, self.keyring.verification_keys, algorithms=[ALGORITHM])
            jwt.JWTClaimsRegistry(
                leeway=0,
                iss={"essential": True, "value": self.settings.issuer},
                aud={"essential": True, "value": self.settings.audience},
                exp={"essential": True},
                sub={"essential": True},
            ).validate(decoded.claims)
        except (JoseError, ValueError) as exc:
            raise InvalidToken(str(exc)) from exc
        claims = decoded.claims
        role = claims.get("role")
        if role not in DEFAULT_SCOPES:
            raise InvalidToken("unknown role")
        scopes = frozenset(str(claims.get("scope", "")).split()) & DEFAULT_SCOPES[role]
        expires = float(claims["exp"])
        if role == "member":
            return Principal("member", claims["sub"], scopes, member_id=int(claims["member_id"])), expires
        tenant_id = int(claims["tenant_id"]) if role == "merchant" else None
        principal = Principal(role, claims["sub"], scopes, client_id=claims["client_id"], tenant_id=tenant_id)
        return principal, expires
