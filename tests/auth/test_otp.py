"""Member sign-in by phone and one-time code: single use, expiry, limits, lockout, no enumeration."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest
from sqlalchemy import text

from alliance.api.app import create_app
from alliance.auth.otp import digest
from alliance.config import Settings
from alliance.db import Database
from tests.conftest import Api, random_phone, unique

PHONE_OTP = "urn:alliance:params:oauth:grant-type:phone-otp"
VIEWER = "{ viewer { kind member { memberNumber phone } } }"
ENROLL = "mutation($i: EnrollMemberInput!) { enrollMember(input: $i) { member { memberNumber } } }"
# Generous limits unless a test is about one of them.
RELAXED = {"otp_resend_seconds": 0, "otp_phone_per_hour": 50, "otp_ip_per_hour": 1000}


@asynccontextmanager
async def sign_in_server(
    settings: Settings, **overrides: Any
) -> AsyncIterator[Callable[..., httpx.AsyncClient]]:
    """An app with the in-memory SMS sender; yields a factory of clients, each from its own IP."""
    app = create_app(
        settings.database_url,  # type: ignore[arg-type]
        settings.model_copy(update={"sms_sender": "memory", "access_log": False} | overrides),
    )
    clients: list[httpx.AsyncClient] = []

    def client(ip: str | None = None) -> httpx.AsyncClient:
        transport = httpx.ASGITransport(app=app, client=(ip or f"10.{len(clients)}.0.{id(app) % 250}", 4000))
        made = httpx.AsyncClient(transport=transport, base_url="http://alliance.test")
        made.app = app  # type: ignore[attr-defined]
        clients.append(made)
        return made

    async with app.router.lifespan_context(app):
        try:
            yield client
        finally:
            for made in clients:
                await made.aclose()


def sent_code(http: httpx.AsyncClient, phone: str) -> str | None:
    message = http.app.state.sms_sender.last_to(phone)  # type: ignore[attr-defined]
    if message is None:
        return None
    match = re.search(r"\b(\d{6})\b", message)
    assert match, message
    return match.group(1)


async def ask(http: httpx.AsyncClient, phone: str) -> httpx.Response:
    return await http.post("/oauth/otp", data={"phone": phone})


async def exchange(http: httpx.AsyncClient, phone: str, code: str) -> httpx.Response:
    return await http.post("/oauth/token", data={"grant_type": PHONE_OTP, "phone": phone, "code": code})


@pytest.fixture
async def member_phone(make_merchant) -> str:  # type: ignore[no-untyped-def]
    merchant = await make_merchant()
    phone = random_phone()
    await merchant.api(ENROLL, i={"phone": phone, "externalRef": unique("c")})
    return phone


async def test_a_member_signs_in_with_the_code_sent_to_their_phone_once(settings, member_phone):
    async with sign_in_server(settings, **RELAXED) as client:
        http = client()
        answer = await ask(http, member_phone[3:])  # a CN mobile without +86 is the same phone
        assert answer.status_code == 200
        assert answer.json()["expires_in"] == 300
        assert answer.headers["cache-control"] == "no-store"
        code = sent_code(http, member_phone)
        assert code is not None

        token = await exchange(http, member_phone, code)
        assert token.status_code == 200, token.text
        body = token.json()
        assert body["token_type"] == "Bearer" and body["expires_in"] > 0
        viewer = await Api(http, body["access_token"])(VIEWER)
        assert viewer["viewer"]["kind"] == "MEMBER"
        assert viewer["viewer"]["member"]["phone"] == member_phone

        again = await exchange(http, member_phone, code)
        assert again.status_code == 400
        assert again.json()["error"] == "invalid_grant"


async def test_a_phone_that_is_no_member_gets_the_same_answer_and_no_sms(settings, member_phone):
    async with sign_in_server(settings, **RELAXED) as client:
        http = client()
        stranger = random_phone()
        member_answer = await ask(http, member_phone)
        stranger_answer = await ask(http, stranger)
        assert (stranger_answer.status_code, stranger_answer.json()) == (
            member_answer.status_code,
            member_answer.json(),
        )
        assert sent_code(http, stranger) is None
        assert sent_code(http, member_phone) is not None
        guessed = await exchange(http, stranger, "123456")
        assert guessed.status_code == 400 and guessed.json()["error"] == "invalid_grant"


async def test_an_expired_code_is_refused(settings, db: Database, member_phone):
    async with sign_in_server(settings, **RELAXED) as client:
        http = client()
        await ask(http, member_phone)
        code = sent_code(http, member_phone)
        engine = db.owner_engine()
        try:
            async with engine.begin() as conn:
                await conn.execute(
                    text("UPDATE otp_codes SET expires_at = now() - interval '1 second' WHERE phone = :p"),
                    {"p": member_phone},
                )
        finally:
            await engine.dispose()
        refused = await exchange(http, member_phone, code)  # type: ignore[arg-type]
        assert refused.status_code == 400 and refused.json()["error"] == "invalid_grant"


async def test_a_new_code_voids_the_earlier_one(settings, member_phone):
    async with sign_in_server(settings, **RELAXED) as client:
        http = client()
        await ask(http, member_phone)
        first = sent_code(http, member_phone)
        await ask(http, member_phone)
        second = sent_code(http, member_phone)
        if first != second:
            assert (await exchange(http, member_phone, first)).status_code == 400  # type: ignore[arg-type]
        assert (await exchange(http, member_phone, second)).status_code == 200  # type: ignore[arg-type]


async def test_codes_are_stored_hashed(settings, db: Database, member_phone):
    async with sign_in_server(settings, **RELAXED) as client:
        http = client()
        await ask(http, member_phone)
        code = sent_code(http, member_phone)
    engine = db.owner_engine()
    try:
        async with engine.connect() as conn:
            stored = (
                await conn.execute(
                    text("SELECT code_hash FROM otp_codes WHERE phone = :p ORDER BY id DESC LIMIT 1"),
                    {"p": member_phone},
                )
            ).scalar_one()
    finally:
        await engine.dispose()
    assert code not in stored
    salt = stored.split("$")[1]
    assert stored == digest(member_phone, code, salt)  # type: ignore[arg-type]


async def test_a_code_is_void_after_too_many_wrong_guesses(settings, member_phone):
    async with sign_in_server(settings, **RELAXED, otp_max_attempts=3) as client:
        http = client()
        await ask(http, member_phone)
        code = sent_code(http, member_phone)
        wrong = f"{(int(code) + 1) % 10**6:06d}"  # type: ignore[arg-type]
        for _ in range(3):
            assert (await exchange(http, member_phone, wrong)).status_code == 400
        refused = await exchange(http, member_phone, code)  # type: ignore[arg-type]
        assert refused.status_code == 400 and refused.json()["error"] == "invalid_grant"


async def test_a_phone_is_locked_after_too_many_wrong_codes_even_with_new_codes(settings, member_phone):
    async with sign_in_server(settings, **RELAXED, otp_max_attempts=3, otp_failures_per_hour=5) as client:
        # Wrong guesses from several addresses all count against the phone.
        for attempt in range(5):
            http = client()
            if attempt % 3 == 0:
                await ask(http, member_phone)
            assert (await exchange(http, member_phone, "000000" if attempt else "999999")).status_code == 400
        http = client()
        await ask(http, member_phone)
        code = sent_code(http, member_phone)
        locked = await exchange(http, member_phone, code)  # type: ignore[arg-type]
        assert locked.status_code == 400
        assert "too many wrong codes" in locked.json()["error_description"]


async def test_codes_for_one_phone_are_rate_limited(settings, member_phone):
    async with sign_in_server(settings, otp_resend_seconds=60, otp_phone_per_hour=5) as client:
        http = client()
        assert (await ask(http, member_phone)).status_code == 200
        too_soon = await client().post("/oauth/otp", json={"phone": member_phone})  # another address
        assert too_soon.status_code == 429
        assert too_soon.json()["error"] == "slow_down"
        assert 1 <= int(too_soon.headers["retry-after"]) <= 60

    async with sign_in_server(settings, otp_resend_seconds=0, otp_phone_per_hour=2) as client:
        phone = random_phone()  # the same answer for a phone that is no member
        assert (await ask(client(), phone)).status_code == 200
        assert (await ask(client(), phone)).status_code == 200
        over = await ask(client(), phone)
        assert over.status_code == 429 and int(over.headers["retry-after"]) > 60


async def test_codes_from_one_address_are_rate_limited(settings):
    async with sign_in_server(settings, otp_resend_seconds=0, otp_ip_per_hour=3) as client:
        ip = f"192.0.2.{int(unique('x')[-2:], 16) % 250}"
        answers = [(await ask(client(ip), random_phone())).status_code for _ in range(4)]
        assert answers == [200, 200, 200, 429]
        assert (await ask(client(), random_phone())).status_code == 200  # another address is not limited


async def test_malformed_requests_get_rfc6749_errors(settings):
    async with sign_in_server(settings, **RELAXED) as client:
        http = client()
        bad_phone = await ask(http, "12345")
        assert bad_phone.status_code == 400 and bad_phone.json()["error"] == "invalid_request"
        no_code = await http.post("/oauth/token", data={"grant_type": PHONE_OTP, "phone": random_phone()})
        assert no_code.status_code == 400 and no_code.json()["error"] == "invalid_request"


async def test_phone_sign_in_is_off_without_an_sms_sender(http):
    assert (await http.post("/oauth/otp", data={"phone": random_phone()})).status_code == 404
    refused = await http.post(
        "/oauth/token", data={"grant_type": PHONE_OTP, "phone": random_phone(), "code": "1"}
    )
    assert refused.status_code == 400 and refused.json()["error"] == "unsupported_grant_type"
    options = (await http.get("/oauth/providers")).json()
    assert options == {"phoneOtp": False, "demo": False, "providers": []}
