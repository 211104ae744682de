"""Webhook signatures (Standard Webhooks style, hex-encoded).

Each request carries ``Alliance-Webhook-Id`` (the event id: the same on every retry, for
de-duplication), ``Alliance-Webhook-Timestamp`` (Unix seconds when this attempt was signed) and
``Alliance-Webhook-Signature``: ``v1=<hex HMAC-SHA256(secret, f"{id}.{timestamp}.{body}")>``,
space-separated when a rotated-out secret still signs too. The key is the secret string as
UTF-8 bytes. `verify` is what a receiver does (the README shows the same in a few lines).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from collections.abc import Mapping, Sequence

SECRET_PREFIX = "whsec_"
ID_HEADER = "Alliance-Webhook-Id"
TIMESTAMP_HEADER = "Alliance-Webhook-Timestamp"
SIGNATURE_HEADER = "Alliance-Webhook-Signature"
EVENT_HEADER = "Alliance-Webhook-Event"
ATTEMPT_HEADER = "Alliance-Webhook-Attempt"
TOLERANCE_SECONDS = 300  # receivers should refuse older (or future) timestamps: replay protection


def new_secret() -> str:
    """256 random bits; shown to the merchant once, at creation or rotation."""
    return SECRET_PREFIX + secrets.token_urlsafe(32)


def signature(secret: str, event_id: str, timestamp: int, body: bytes) -> str:
    signed = f"{event_id}.{timestamp}.".encode() + body
    return "v1=" + hmac.new(secret.encode(), signed, hashlib.sha256).hexdigest()


def signature_header(signing_secrets: Sequence[str], event_id: str, timestamp: int, body: bytes) -> str:
    assert signing_secrets, "an endpoint always has a current secret"
    return " ".join(signature(secret, event_id, timestamp, body) for secret in signing_secrets)


def verify(secret: str, headers: Mapping[str, str], body: bytes, now: float | None = None) -> bool:
    """A receiver's check: a fresh timestamp and one matching signature (constant-time)."""
    lowered = {key.lower(): value for key, value in headers.items()}
    event_id = lowered.get(ID_HEADER.lower(), "")
    stamp = lowered.get(TIMESTAMP_HEADER.lower(), "")
    if not event_id or not stamp.isdigit():
        return False
    if abs((time.time() if now is None else now) - int(stamp)) > TOLERANCE_SECONDS:
        return False
    expected = signature(secret, event_id, int(stamp), body)
    offered = lowered.get(SIGNATURE_HEADER.lower(), "").split()
    return any(hmac.compare_digest(expected, candidate) for candidate in offered)
