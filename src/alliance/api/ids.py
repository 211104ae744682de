"""Global IDs (``base64url("Type:123")``) and keyset cursors, opaque to clients."""

from __future__ import annotations

import base64
import binascii
import re

from alliance.errors import DomainError

_PK = re.compile(r"[0-9]{1,18}")  # a positive bigint, never beyond its range


def _encode(raw: str) -> str:
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def _decode(token: str) -> str:
    try:
        return base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode()
    except (binascii.Error, UnicodeDecodeError, ValueError) as exc:
        raise DomainError("INVALID_ID", "malformed id or cursor") from exc


def to_global_id(type_name: str, pk: int) -> str:
    return _encode(f"{type_name}:{pk}")


def from_global_id(global_id: str, field: str = "id") -> tuple[str, int]:
    type_name, _, pk = _decode(global_id).partition(":")
    if not type_name or not _PK.fullmatch(pk):
        raise DomainError("INVALID_ID", "malformed global id", field)
    return type_name, int(pk)


def to_cursor(pk: int) -> str:
    return _encode(f"k:{pk}")


def from_cursor(cursor: str | None) -> int | None:
    if cursor is None:
        return None
    prefix, _, pk = _decode(cursor).partition(":")
    if prefix != "k" or not _PK.fullmatch(pk):
        raise DomainError("INVALID_CURSOR", "malformed cursor", "after")
    return int(pk)
