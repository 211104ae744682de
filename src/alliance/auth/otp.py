"""Phone + one-time-code sign-in for members: issuing codes, checking them, and the limits.

* A code is 6 random digits, valid for ``otp_ttl_seconds`` (5 minutes), good for one sign-in;
  a new code voids the phone's earlier ones. Only a salted SHA-256 digest is stored: a code
  lives minutes and allows a handful of guesses, so a slow hash would add nothing.
* Every phone gets the same answer, member or not (nobody learns who is a member): a code is
  stored for any phone, and only a member's is sent.
* Limits, shared by every replica through PostgreSQL (rows in ``auth_throttle``, counted under
  a transaction-scoped advisory lock per phone and per IP): one code per phone per
  ``otp_resend_seconds``, ``otp_phone_per_hour`` per phone, ``otp_ip_per_hour`` per client IP.
* Brute force: a code is void after ``otp_max_attempts`` wrong guesses, and a phone with
  ``otp_failures_per_hour`` wrong guesses in the last hour is locked until they age out.

Everything runs in the token endpoint's narrow ``auth`` context.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import text
from sqlmodel.ext.asyncio.session import AsyncSession

from alliance.config import Settings
from alliance.db.database import run_sql
from alliance.errors import DomainError

CODE = re.compile(r"[0-9]{6}")
HOUR = timedelta(hours=1)
KEEP_RECORDS = timedelta(days=1)
CLEANUP_BATCH = 200  # old rows deleted per issued code, so cleanup keeps pace without a job


class RateLimited(DomainError):
    """Too many codes asked for; ``retry_after`` seconds until the next may be."""

    def __init__(self, message: str, retry_after: int) -> None:
        super().__init__("RATE_LIMITED", message, "phone")
        self.retry_after = max(1, retry_after)


@dataclass(frozen=True, slots=True)
class IssuedCode:
    code: str
    expires_in: int
    member: bool  # send it only then; the caller answers the same either way


@dataclass(frozen=True, slots=True)
class SignedIn:
    member_id: int
    member_number: str


@dataclass(frozen=True, slots=True)
class Refused:
    reason: str  # INVALID_CODE | LOCKED
    message: str


def digest(phone: str, code: str, salt: str) -> str:
    value = hashlib.sha256(f"{salt}:{phone}:{code}".encode()).hexdigest()
    return f"sha256${salt}${value}"


def _matches(stored: str, phone: str, code: str) -> bool:
    _, salt, _ = stored.split("$", 2)
    return hmac.compare_digest(stored, digest(phone, code, salt))


async def _lock(session: AsyncSession, key: str) -> None:
    await run_sql(session, text("SELECT pg_advisory_xact_lock(hashtextextended(:key, 0))"), {"key": key})


async def _events_since(session: AsyncSession, kind: str, subject: str, window: timedelta) -> list[datetime]:
    """When ``subject`` had ``kind`` events inside the window, oldest first."""
    rows = await run_sql(
        session,
        text(
            "SELECT created_at FROM auth_throttle WHERE kind = :kind AND subject = :subject"
            " AND created_at > now() - make_interval(secs => :seconds) ORDER BY created_at"
        ),
        {"kind": kind, "subject": subject, "seconds": window.total_seconds()},
    )
    return [row[0] for row in rows]


async def _record(session: AsyncSession, kind: str, subject: str) -> None:
    await run_sql(
        session,
        text("INSERT INTO auth_throttle (kind, subject) VALUES (:kind, :subject)"),
        {"kind": kind, "subject": subject},
    )


async def _now(session: AsyncSession) -> datetime:
    return (await run_sql(session, text("SELECT now()"))).scalar_one()


def _retry_after(events: list[datetime], limit: int, window: timedelta, now: datetime) -> int | None:
    """Seconds until fewer than ``limit`` events remain in the window; None when under it."""
    if len(events) < limit:
        return None
    oldest_that_counts = events[len(events) - limit]
    return int((oldest_that_counts + window - now).total_seconds()) + 1


async def issue_code(session: AsyncSession, phone: str, client_ip: str, settings: Settings) -> IssuedCode:
    """A new code for ``phone`` (already normalised), or `RateLimited`."""
    await _lock(session, f"otp-phone:{phone}")
    await _lock(session, f"otp-ip:{client_ip}")
    now = await _now(session)
    sent = await _events_since(session, "otp_sent_phone", phone, HOUR)
    if (
        sent
        and settings.otp_resend_seconds
        and now - sent[-1] < timedelta(seconds=settings.otp_resend_seconds)
    ):
        wait = settings.otp_resend_seconds - int((now - sent[-1]).total_seconds())
        raise RateLimited("a code was sent moments ago; wait before asking for another", wait)
    wait_phone = _retry_after(sent, settings.otp_phone_per_hour, HOUR, now)
    if wait_phone is not None:
        raise RateLimited("too many codes for this phone; try again later", wait_phone)
    from_ip = await _events_since(session, "otp_sent_ip", client_ip, HOUR)
    wait_ip = _retry_after(from_ip, settings.otp_ip_per_hour, HOUR, now)
    if wait_ip is not None:
        raise RateLimited("too many codes asked for from this address; try again later", wait_ip)

    await _record(session, "otp_sent_phone", phone)
    await _record(session, "otp_sent_ip", client_ip)
    await run_sql(
        session,
        text("UPDATE otp_codes SET expires_at = now() WHERE phone = :phone AND expires_at > now()"),
        {"phone": phone},
    )
    code = f"{secrets.randbelow(10**6):06d}"
    await run_sql(
        session,
        text(
            "INSERT INTO otp_codes (phone, code_hash, expires_at)"
            " VALUES (:phone, :hash, now() + make_interval(secs => :ttl))"
        ),
        {"phone": phone, "hash": digest(phone, code, secrets.token_hex(8)), "ttl": settings.otp_ttl_seconds},
    )
    await _forget_old_records(session)
    member = await member_by_phone(session, phone)
    return IssuedCode(code=code, expires_in=settings.otp_ttl_seconds, member=member is not None)


async def check_code(session: AsyncSession, phone: str, code: str, settings: Settings) -> SignedIn | Refused:
    """Sign in with a code. A wrong guess is *recorded*, not raised: the caller commits it."""
    await _lock(session, f"otp-phone:{phone}")
    failures = await _events_since(session, "otp_failed_phone", phone, HOUR)
    if len(failures) >= settings.otp_failures_per_hour:
        return Refused("LOCKED", "too many wrong codes for this phone; try again later")
    row = (
        await run_sql(
            session,
            text(
                "SELECT id, code_hash FROM otp_codes WHERE phone = :phone AND consumed_at IS NULL"
                " AND expires_at > now() AND attempts < :max ORDER BY id DESC LIMIT 1 FOR UPDATE"
            ),
            {"phone": phone, "max": settings.otp_max_attempts},
        )
    ).first()
    if row is None or not CODE.fullmatch(code) or not _matches(row.code_hash, phone, code):
        if row is not None:
            await run_sql(
                session, text("UPDATE otp_codes SET attempts = attempts + 1 WHERE id = :id"), {"id": row.id}
            )
        await _record(session, "otp_failed_phone", phone)
        return Refused("INVALID_CODE", "the code is wrong, used or expired")
    await run_sql(session, text("UPDATE otp_codes SET consumed_at = now() WHERE id = :id"), {"id": row.id})
    member = await member_by_phone(session, phone)
    if member is None:  # nobody was sent this code; a lucky guess still signs nobody in
        return Refused("INVALID_CODE", "the code is wrong, used or expired")
    return member


async def member_by_phone(session: AsyncSession, phone: str) -> SignedIn | None:
    row = (
        await run_sql(
            session,
            text("SELECT member_id, member_number FROM auth_member_by_phone(:phone)"),
            {"phone": phone},
        )
    ).first()
    return None if row is None else SignedIn(member_id=row.member_id, member_number=row.member_number)


async def _forget_old_records(session: AsyncSession) -> None:
    for table, column in (("auth_throttle", "created_at"), ("otp_codes", "expires_at")):
        await run_sql(
            session,
            text(
                f"DELETE FROM {table} WHERE id IN (SELECT id FROM {table}"
                f" WHERE {column} < now() - make_interval(secs => :keep) ORDER BY {column} LIMIT :batch)"
            ),
            {"keep": KEEP_RECORDS.total_seconds(), "batch": CLEANUP_BATCH},
        )


def sms_text(code: str, ttl_seconds: int) -> str:
    minutes = max(1, ttl_seconds // 60)
    return (
        f"【联盟积分】登录验证码 {code}，{minutes} 分钟内有效。"
        f"Alliance sign-in code {code}, valid {minutes} min."
    )
