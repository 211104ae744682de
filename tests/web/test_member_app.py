"""The member app in Chromium: sign in, see the balance, redeem, watch it change, in two languages."""

from __future__ import annotations

import json
import re
import secrets
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
from playwright.sync_api import expect
from sqlalchemy import text

from alliance.db import Database
from alliance.demo import DEMO_MEMBERS
from tests.web.conftest import allow_console_errors, run_async, screenshot

EARN = """mutation($i: EarnPointsInput!) { earnPoints(input: $i) {
  balance { available } userErrors { code } } }"""


def merchant_earns(server: Any, tenant: str, member_number: str, amount: str) -> int:
    """Points earned at a demo merchant through the public API; returns the new balance."""
    with httpx.Client(base_url=server.url) as http:
        creds = (f"demo-{tenant}", f"demo-{tenant}-secret")
        token = http.post("/oauth/token", data={"grant_type": "client_credentials"}, auth=creds).json()
        key = secrets.token_hex(8)
        answer = http.post(
            "/graphql",
            json={
                "query": EARN,
                "variables": {
                    "i": {
                        "memberNumber": member_number,
                        "amount": amount,
                        "orderRef": key,
                        "idempotencyKey": key,
                    }
                },
            },
            headers={"Authorization": f"Bearer {token['access_token']}"},
        ).json()
    assert answer["data"]["earnPoints"]["userErrors"] == [], answer
    return answer["data"]["earnPoints"]["balance"]["available"]


def persona(server: Any, index: int) -> dict[str, str]:
    return httpx.get(f"{server.url}/oauth/demo").json()["members"][index]


def sign_in_as(page: Any, name: str) -> None:
    page.goto("/app/")
    page.get_by_role("button", name=f"Sign in as {name}").click()
    expect(page.get_by_role("heading", name=f"Hello, {name}")).to_be_visible()


def shown_balance(page: Any) -> int:
    return int(re.sub(r"\D", "", page.locator("[data-balance=POINTS]").inner_text()))


def test_a_demo_member_redeems_a_reward_and_sees_the_balance_drop(page, server):
    member = persona(server, 2)
    merchant_earns(server, "lakeview-hotel", member["memberNumber"], "1000")  # 2 points per CNY
    page.goto("/app/")
    screenshot(page, "member-sign-in")
    sign_in_as(page, member["name"])
    before = shown_balance(page)
    assert before >= 2000
    screenshot(page, "member-home")

    page.get_by_role("link", name="Rewards").click()
    page.get_by_label("Merchant").select_option(label="Lakeview Hotel")
    expect(page.locator("ul.rewards")).to_have_attribute("aria-busy", "false")
    expect(page.locator(".reward").first).to_contain_text("Lakeview Hotel")
    redeem = page.get_by_role("button", name="Redeem Late checkout until 16:00")
    redeem.focus()
    page.keyboard.press("Enter")  # keyboard opens the confirmation; Escape backs out of it
    dialog = page.get_by_role("dialog", name="Redeem this reward?")
    expect(dialog).to_be_visible()
    page.keyboard.press("Escape")
    expect(dialog).to_be_hidden()

    redeem.click()
    expect(dialog).to_contain_text(f"for 800 points. You will have {before - 800:,} points left.")
    screenshot(page, "member-redeem-confirm")
    dialog.get_by_role("button", name="Confirm redemption").click()
    expect(page.get_by_role("status").filter(has_text="Redeemed: Late checkout")).to_be_visible()
    screenshot(page, "member-rewards")

    page.get_by_role("link", name="Home").click()
    expect(page.locator("[data-balance=POINTS]")).to_have_text(f"{before - 800:,}")
    page.get_by_role("link", name="My redemptions").click()
    first = page.locator(".redemption").first
    expect(first).to_contain_text("Late checkout until 16:00")
    expect(first).to_contain_text("Pending")
    screenshot(page, "member-redemptions")


def test_history_lists_every_merchant_and_explains_an_earn(page, server):
    member = persona(server, 1)
    merchant_earns(server, "sunrise-mart", member["memberNumber"], "88")
    sign_in_as(page, member["name"])
    page.get_by_role("link", name="History").click()
    latest = page.locator(".tx").first
    expect(latest).to_contain_text("Sunrise Supermarket")
    expect(latest).to_contain_text("Earned · ¥88.00 spent")
    toggle = latest.get_by_role("button")
    expect(toggle).to_have_attribute("aria-expanded", "false")
    toggle.click()
    expect(toggle).to_have_attribute("aria-expanded", "true")
    expect(latest).to_contain_text("How the points were earned")
    expect(latest.get_by_role("listitem").first).to_contain_text("1 per CNY+88 Points")
    screenshot(page, "member-history")


def wait_until(page: Any, condition: Callable[[], bool], timeout_ms: int = 10_000) -> None:
    """Until ``condition()`` (which reads what Playwright's event handlers collect) holds."""
    deadline = time.monotonic() + timeout_ms / 1000
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        page.wait_for_timeout(50)  # lets Playwright dispatch events meanwhile


def balances_pushed(frames: list[str | bytes]) -> list[int]:
    """The POINTS balances the balanceChanged subscription sent over the socket."""
    messages = [json.loads(frame) for frame in frames]
    return [
        m["payload"]["data"]["balanceChanged"]["balance"]["available"]
        for m in messages
        if m["type"] == "next" and m["payload"]["data"]["balanceChanged"]["balance"]["asset"] == "POINTS"
    ]


def test_the_balance_is_pushed_over_a_subscription_when_points_are_earned_elsewhere(page, server):
    member = persona(server, 1)
    frames: list[str | bytes] = []
    sockets: list[Any] = []

    def opened(socket: Any) -> None:
        sockets.append(socket)
        socket.on("framereceived", lambda frame: frames.append(frame))

    page.on("websocket", opened)
    sign_in_as(page, member["name"])
    wait_until(page, lambda: bool(balances_pushed(frames)))  # subscribed: the current balance came
    assert [socket.url for socket in sockets] == [f"{server.url.replace('http', 'ws')}/graphql"]
    after = merchant_earns(server, "east-4s", member["memberNumber"], "123")
    # Polling (the fallback) would take up to 5 s.
    expect(page.locator("[data-balance=POINTS]")).to_have_text(f"{after:,}", timeout=2_000)
    assert balances_pushed(frames)[-1] == after


def test_without_a_socket_the_balance_is_polled_and_the_socket_retried(page, server):
    member = persona(server, 1)
    attempts: list[Any] = []

    def refuse(route: Any) -> None:  # the socket opens and closes at once, never reaching the server
        attempts.append(route)
        route.close()

    page.route_web_socket(re.compile(r"/graphql$"), refuse)
    sign_in_as(page, member["name"])
    page.locator("[data-balance=POINTS]").wait_for()
    after = merchant_earns(server, "east-4s", member["memberNumber"], "45")
    expect(page.locator("[data-balance=POINTS]")).to_have_text(f"{after:,}", timeout=8_000)
    assert len(attempts) >= 2, attempts  # reconnecting (backing off from 1 s) meanwhile


def test_points_expiring_within_30_days_are_a_warning_with_the_date(page, server, settings):
    member = persona(server, 0)
    merchant_earns(server, "sunrise-mart", member["memberNumber"], "40")

    async def expire_soon() -> None:
        db = Database(settings.database_url, settings)
        engine = db.owner_engine()
        try:
            async with engine.begin() as conn:
                await conn.execute(
                    text(
                        "UPDATE lots SET expires_at = timestamptz '2026-12-15 23:59:59+08'"
                        " WHERE id = (SELECT l.id FROM lots l JOIN members m ON m.id = l.member_id"
                        " WHERE m.member_number = :n AND l.remaining > 0 ORDER BY l.id DESC LIMIT 1)"
                    ),
                    {"n": member["memberNumber"]},
                )
        finally:
            await engine.dispose()
            await db.close()

    run_async(expire_soon())
    sign_in_as(page, member["name"])
    expect(page.locator("[data-expiring=POINTS]")).to_contain_text("expire on Dec 15, 2026")


def test_sign_in_with_a_code_sent_by_sms(page, server):
    phone, name, _ = DEMO_MEMBERS[1]
    page.goto("/app/")
    page.get_by_label("Mobile number").fill(phone[3:])
    page.get_by_role("button", name="Send code").click()
    expect(page.get_by_role("status").filter(has_text="We sent a 6-digit code")).to_be_visible()
    code = re.search(r"\b(\d{6})\b", server.last_sms_to(phone)).group(1)

    allow_console_errors(page, r"status of 400 .*@ .*/oauth/token")
    page.get_by_label("6-digit code").fill(f"{(int(code) + 1) % 10**6:06d}")
    page.get_by_role("button", name="Sign in", exact=True).click()
    expect(page.get_by_role("alert")).to_have_text("The code is wrong, used or expired.")
    page.get_by_label("6-digit code").fill(code)
    page.get_by_role("button", name="Sign in", exact=True).click()
    expect(page.get_by_role("heading", name=f"Hello, {name}")).to_be_visible()


def test_chinese_from_the_browser_and_a_language_switch(new_page, server):
    page = new_page(locale="zh-CN")
    page.goto("/app/")
    expect(page.get_by_role("heading", name="登录", exact=True)).to_be_visible()
    member = persona(server, 0)
    page.get_by_role("button", name=f"以 {member['name']} 登录").click()
    expect(page.get_by_role("heading", name=f"{member['name']}，您好")).to_be_visible()
    expect(page.get_by_role("link", name="首页")).to_have_attribute("aria-current", "page")
    screenshot(page, "member-home-zh")

    page.get_by_label("语言").select_option("en")
    expect(page.get_by_role("heading", name=f"Hello, {member['name']}")).to_be_visible()
    assert page.evaluate("document.documentElement.lang") == "en"
    page.reload()  # the choice is remembered
    expect(page.get_by_role("heading", name=f"Hello, {member['name']}")).to_be_visible()


def test_usable_at_375_px(mobile_page, server):
    member = persona(server, 0)
    sign_in_as(mobile_page, member["name"])
    screenshot(mobile_page, "member-home-375")
    for tab in ("History", "Rewards", "My redemptions"):
        mobile_page.get_by_role("link", name=tab).click()
        mobile_page.wait_for_load_state("networkidle")
        assert mobile_page.evaluate("document.documentElement.scrollWidth") <= 375, tab
    screenshot(mobile_page, "member-redemptions-375")
    mobile_page.get_by_role("link", name="Rewards").click()
    expect(mobile_page.locator(".reward").first).to_be_visible()
    screenshot(mobile_page, "member-rewards-375")


CREATE_OFFER = """mutation($i: CreateOfferInput!) { createOffer(input: $i) {
  offer { code } userErrors { code } } }"""


def test_a_member_in_a_segment_sees_the_offer_made_to_it_on_home(page, new_page, server, settings):
    member = persona(server, 1)

    async def put_in_a_segment() -> None:
        db = Database(settings.database_url, settings)
        engine = db.owner_engine()
        try:
            async with engine.begin() as conn:
                await conn.execute(
                    text(
                        "WITH s AS (INSERT INTO customer_segments (tenant_id, code, name, definition)"
                        " SELECT id, 'fruit-lovers', 'Fruit lovers', '{}' FROM tenants WHERE code = 'sunrise-mart'"
                        " RETURNING id, tenant_id)"
                        " INSERT INTO customer_segment_members (segment_id, tenant_id, member_id)"
                        " SELECT s.id, s.tenant_id, m.id FROM s, members m WHERE m.member_number = :n"
                    ),
                    {"n": member["memberNumber"]},
                )
        finally:
            await engine.dispose()
            await db.close()

    run_async(put_in_a_segment())
    now = datetime.now(UTC)
    with httpx.Client(base_url=server.url) as http:
        creds = ("demo-sunrise-mart", "demo-sunrise-mart-secret")
        token = http.post("/oauth/token", data={"grant_type": "client_credentials"}, auth=creds).json()
        offer = {
            "segmentCode": "fruit-lovers",
            "title": "Fresh fruit: double points",
            "description": "Two weeks of double points on fruit, for our regulars.",
            "kind": "CATEGORY",
            "category": "fruit",
            "multiplier": "2",
            "startsAt": now.isoformat(),
            "endsAt": (now + timedelta(days=14)).isoformat(),
        }
        answer = http.post(
            "/graphql",
            json={"query": CREATE_OFFER, "variables": {"i": offer}},
            headers={"Authorization": f"Bearer {token['access_token']}"},
        ).json()
    assert answer["data"]["createOffer"]["userErrors"] == [], answer

    sign_in_as(page, member["name"])
    offers = page.get_by_role("region", name="Offers for you")
    expect(offers).to_contain_text("Fresh fruit: double points")
    expect(offers).to_contain_text("×2 points at")
    screenshot(page, "member-home-offer")

    chinese = new_page(locale="zh-CN")
    chinese.goto("/app/")
    chinese.get_by_role("button", name=f"以 {member['name']} 登录").click()
    expect(chinese.get_by_role("region", name="专属优惠")).to_contain_text("2 倍积分")
    screenshot(chinese, "member-home-offer-zh")

    other = new_page()
    sign_in_as(other, persona(server, 0)["name"])
    expect(other.locator(".offers")).to_have_count(0)  # not in the segment: no offer shown
