"""Member tokens from an external OpenID Connect issuer (a partner's member app or an IdP).

An issuer is configured with its ``issuer``, ``jwks_url`` and ``audience``
(``ALLIANCE_MEMBER_OIDC_ISSUERS``, a JSON list). Its ID/access tokens are verified against the
issuer's published keys (fetched over HTTPS, cached, refetched at most once a minute when an
unknown ``kid`` appears); the member is the one whose phone is the token's verified
``phone_number`` claim. A token for a phone that is not an alliance member is refused.
"""

from __future__ import annotations

import base64
import json
import time
from dataclasses import dataclass, field
from typing import Any

import httpx
from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import KeySet

from alliance.auth.tokens import InvalidToken
from alliance.errors import DomainError
from alliance.members.phone import normalize_phone

ALGORITHMS = ["RS256", "ES256", "PS256"]
REFETCH_AFTER_SECONDS = 60.0
FETCH_TIMEOUT_SECONDS = 5.0


@dataclass
class ExternalIssuer:
    issuer: str
    jwks_url: str
    audience: str
    keys: KeySet = field(default_factory=lambda: KeySet([]))
    fetched_at: float = 0.0

    async def refresh(self) -> None:
        async with httpx.AsyncClient(timeout=FETCH_TIMEOUT_SECONDS) as client:
            response = await client.get(self.jwks_url)
            response.raise_for_status()
        self.keys = KeySet.import_key_set(response.json())
        self.fetched_at = time.monotonic()


def unverified_claim(token: str, name: str) -> object:
    """A claim of a token, read without verification: to choose how to verify it (``iss``), or
    from a token already verified (``exp``)."""
    try:
        payload = token.split(".")[1]
        claims = json.loads(_b64decode(payload))
    except (IndexError, ValueError):
        return None
    return claims.get(name) if isinstance(claims, dict) else None


def unverified_issuer(token: str) -> str | None:
    """The ``iss`` a token claims, read without verification, to choose how to verify it."""
    issuer = unverified_claim(token, "iss")
    return issuer if isinstance(issuer, str) else None


def _b64decode(segment: str) -> bytes:
    return base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))


async def verified_phone(external: ExternalIssuer, token: str) -> str:
    """The E.164 phone of a valid token from ``external``; `InvalidToken` otherwise."""
    for attempt in range(2):
        if not external.keys.keys or (
            attempt == 1 and time.monotonic() - external.fetched_at > REFETCH_AFTER_SECONDS
        ):
            try:
                await external.refresh()
            except (httpx.HTTPError, ValueError, JoseError) as exc:
                raise InvalidToken("the issuer's keys are unavailable") from exc
        try:
            decoded = jwt.decode(token, external.keys, algorithms=ALGORITHMS)
            break
        except JoseError as exc:
            if attempt == 1:
                raise InvalidToken(str(exc)) from exc
    claims: dict[str, Any] = decoded.claims
    try:
        jwt.JWTClaimsRegistry(
            leeway=0,
            iss={"essential": True, "value": external.issuer},
            aud={"essential": True, "value": external.audience},
            exp={"essential": True},
            phone_number={"essential": True},
        ).validate(claims)
    except JoseError as exc:
        raise InvalidToken(str(exc)) from exc
    if claims.get("phone_number_verified") is False:
        raise InvalidToken("the phone number is not verified")
    try:
        return normalize_phone(str(claims["phone_number"]))
    except DomainError as exc:
        raise InvalidToken("malformed phone_number") from exc
