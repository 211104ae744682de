"""Phone numbers normalised to E.164, the member's alliance-wide identity key.

Without a ``+`` prefix a number is read as a mainland-China number (the alliance's home
market): an 11-digit mobile number starting with 1 becomes ``+86…``.
"""

from __future__ import annotations

import re

from alliance.errors import DomainError

_SEPARATORS = re.compile(r"[\s\-().]")
_E164 = re.compile(r"\+[1-9][0-9]{6,14}")
_CN_MOBILE = re.compile(r"1[3-9][0-9]{9}")


def normalize_phone(raw: str, field: str = "phone") -> str:
    compact = _SEPARATORS.sub("", raw.strip())
    if compact.startswith("00"):
        compact = "+" + compact[2:]
    if not compact.startswith("+"):
        if _CN_MOBILE.fullmatch(compact):
            compact = "+86" + compact
        else:
            raise DomainError("INVALID_PHONE", "phone must be E.164 (+8613800138000) or a CN mobile", field)
    if compact.startswith("+86") and not _CN_MOBILE.fullmatch(compact[3:]):
        raise DomainError("INVALID_PHONE", "a +86 number must be an 11-digit mobile number", field)
    if not _E164.fullmatch(compact):
        raise DomainError("INVALID_PHONE", "phone must be E.164 (+8613800138000) or a CN mobile", field)
    return compact


def mask_phone(phone: str) -> str:
    """``+8613800138000`` → ``+86138****8000``: for logs and merchant screens that need no more."""
    if len(phone) < 8:
        return "*" * len(phone)
    return phone[:-8] + "****" + phone[-4:]
