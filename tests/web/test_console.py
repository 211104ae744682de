"""The console (/console/) in headless Chromium against the demo alliance, through /graphql only.

The operator signs in with one click, settles the demo's closed month, reads the heatmap and
approves; a merchant finds its members but never another merchant's; a merchant makes an API
client and sees its secret once. Every screen is saved under test-artifacts/screenshots/.
"""

from __future__ import annotations

import re
import secrets
from datetime import datetime
from zoneinfo import ZoneInfo

import httpx
from playwright.sync_api import expect

from alliance.demo_history import last_month
from tests.web.conftest import allow_console_errors, screenshot

ENROLL = """mutation($i: EnrollMemberInput!) { enrollMember(input: $i) { member { memberNumber } userErrors { code } } }"""


def token(server, client_id: str) -> str:
    response = httpx.post(
        f"{server.url}/oauth/token",
        data={"grant_type": "client_credentials"},
        auth=(client_id, f"{client_id}-secret"),
    )
    assert response.status_code == 200, response.text
    return response.json()["access_token"]


def graphql(server, client_id: str, query: str, **variables) -> dict:
    response = httpx.post(
        f"{server.url}/graphql",
        json={"query": query, "variables": variables},
        headers={"Authorization": f"Bearer {token(server, client_id)}"},
    )
    body = response.json()
    assert "errors" not in body, body
    return body["data"]


def sign_in(page, persona: str) -> None:
    page.goto("/console/")
    page.get_by_role("button", name=persona).click()
    expect(page.get_by_role("button", name="Sign out")).to_be_visible()


def test_the_operator_settles_the_demo_month_reads_the_heatmap_and_approves(page, server, settings):
    page.goto("/console/")
    expect(page.get_by_role("heading", name="Sign in to the console", level=1)).to_be_visible()
    screenshot(page, "console-sign-in")
    page.get_by_role("button", name="Alliance operator").click()
    expect(page.get_by_role("heading", name="Settlement", level=1)).to_be_focused()

    # The period offered is the demo's closed month (last month in the alliance's time zone).
    month = last_month(datetime.now(ZoneInfo(settings.time_zone)).date())
    expect(page.get_by_label("Period (month)")).to_have_value(month.strftime("%Y-%m"))
    screenshot(page, "console-operator-settlement")
    page.get_by_role("button", name="Run settlement").click()

    expect(page.get_by_role("heading", level=1)).to_have_text(re.compile(r"^Settlement POINTS, "))
    heatmap = page.locator(".chart.heatmap[data-rendered]")
    expect(heatmap.locator("canvas").first).to_be_visible()
    expect(heatmap).to_have_attribute("aria-label", re.compile("Heatmap of points by issuer and redeemer"))
    lines = page.get_by_role("table", name="Lines")
    for issuer, redeemer in (
        ("sunrise-mart", "lakeview-hotel"),
        ("east-4s", "lakeview-hotel"),
        ("lakeview-hotel", "east-4s"),
        ("east-4s", "sunrise-mart"),
    ):
        expect(lines.get_by_role("row").filter(has_text=re.compile(rf"^{issuer}\s*{redeemer}"))).to_have_count(1)
    expect(lines.get_by_role("row").filter(has_text=re.compile(r"^lakeview-hotel\s*east-4s\s*5,000"))).to_have_count(1)
    expect(page.locator(".chart[data-rendered]")).to_have_count(2)  # the heatmap and the positions bar chart

    # Tables sort by a column header (on screen; aria-sort says how).
    points_header = lines.get_by_role("columnheader", name="Points")
    points_header.get_by_role("button").click()
    expect(points_header).to_have_attribute("aria-sort", "ascending")
    shown = [int(text.replace(",", "")) for text in lines.locator("tbody tr td:nth-child(3)").all_inner_texts()]
    assert shown == sorted(shown) and len(shown) >= 4
    screenshot(page, "console-operator-heatmap")

    # The statement exports as CSV, from /graphql.
    with page.expect_download() as download:
        page.get_by_role("button", name="Export CSV statement").click()
    assert "lakeview-hotel" in download.value.path().read_text()

    page.get_by_role("button", name="Approve batch").click()
    dialog = page.get_by_role("dialog", name="Approve this batch?")
    expect(dialog).to_be_visible()
    screenshot(page, "console-operator-approve-dialog")
    dialog.get_by_role("button", name="Approve batch").click()
    expect(page.locator(".facts .badge").first).to_have_text("Approved")
    expect(page.get_by_role("button", name="Approve batch")).to_have_count(0)
    batches = graphql(server, "demo-operator", "{ settlementBatches(first: 5) { edges { node { status periodStart } } } }")
    approved = [e["node"] for e in batches["settlementBatches"]["edges"] if e["node"]["status"] == "APPROVED"]
    assert approved, batches

    # Approved: each party's payment is recorded against an instruction.
    page.get_by_role("button", name="Mark east-4s paid").click()
    paid = page.get_by_role("dialog", name="Mark east-4s paid")
    paid.get_by_label("Payment reference").fill("BANK-2026-001")
    paid.get_by_role("button", name="Mark paid").click()
    instructions = page.get_by_role("table", name="Payment instructions")
    expect(instructions.get_by_role("row").filter(has_text="east-4s")).to_contain_text("BANK-2026-001")
    screenshot(page, "console-operator-approved")

    # The flow between categories now has a settled period; the audit log holds the approval.
    page.get_by_role("link", name="Points flow").click()
    expect(page.get_by_role("heading", name="Points flow", level=1)).to_be_focused()
    expect(page.locator(".chart[data-rendered] canvas").first).to_be_visible()
    expect(page.get_by_role("table", name="Flows")).to_contain_text("Supermarket")
    screenshot(page, "console-operator-flows")
    page.get_by_role("link", name="Audit log").click()
    audit = page.get_by_role("table", name="Audit log")
    expect(audit).to_contain_text("mutation:approveSettlement")
    screenshot(page, "console-operator-audit")

    # Connections page by their cursors. More than a page of records (refusals are audited too):
    operator_token = token(server, "demo-operator")
    for _ in range(26):
        httpx.post(
            f"{server.url}/graphql",
            json={"query": 'mutation { resolveDispute(input: {disputeId: "bm9wZTox", resolution: "x"}) { userErrors { code } } }'},
            headers={"Authorization": f"Bearer {operator_token}"},
        ).raise_for_status()
    page.get_by_role("button", name="Show").click()
    expect(page.get_by_text("Page 1 · 25 rows")).to_be_visible()
    first_page = audit.locator("tbody").inner_text()
    page.get_by_role("button", name="Next page").click()
    expect(page.get_by_text(re.compile(r"^Page 2 · \d+ rows$"))).to_be_visible()
    assert audit.locator("tbody").inner_text() != first_page
    page.get_by_role("button", name="Previous page").click()
    expect(page.get_by_text("Page 1 · 25 rows")).to_be_visible()
    assert audit.locator("tbody").inner_text() == first_page
    page.get_by_label("Operation (exact, optional)").fill("mutation:approveSettlement")
    page.get_by_role("button", name="Show").click()
    expect(audit.locator("tbody tr").first).to_contain_text("mutation:approveSettlement")
    assert set(audit.locator("tbody tr td:nth-child(2)").all_inner_texts()) == {"mutation:approveSettlement"}


def test_the_operators_other_screens(page):
    sign_in(page, "Alliance operator")
    page.get_by_role("link", name="Tenants & terms").click()
    expect(page.get_by_text("Provenance netting").first).to_be_visible()
    page.get_by_label("Open a tenant by code").fill("sunrise-mart")
    page.get_by_role("button", name="Open").click()
    expect(page.get_by_role("heading", name="Sunrise Supermarket")).to_be_visible()
    expect(page.get_by_role("table", name="Stores")).to_contain_text("SM-002")
    expect(page.get_by_text("100 points = ¥1, up to 50 % of a bill")).to_be_visible()
    screenshot(page, "console-operator-tenants")
    page.get_by_role("link", name="Breakage & expiry").click()
    expect(page.get_by_role("table", name="Breakage")).to_be_visible()
    expect(page.get_by_role("table", name="Points about to expire")).to_be_visible()
    screenshot(page, "console-operator-reports")
    # The operator makes a client for a merchant; the newest client is listed first.
    page.get_by_role("link", name="API clients").click()
    form = page.locator("#client-form")
    form.get_by_label("Name").fill("Sunrise self-checkout")
    form.get_by_label("Role").select_option("MERCHANT")
    form.get_by_label("Tenant").fill("sunrise-mart")
    form.get_by_role("button", name="Create client").click()
    dialog = page.get_by_role("dialog", name="Copy the secret now")
    client_id = dialog.locator("code.client-id").inner_text()
    dialog.get_by_role("button", name="I have stored it").click()
    clients = page.get_by_role("table", name="API clients")
    expect(clients.locator("tbody tr").first).to_contain_text(client_id)
    expect(clients.locator("tbody tr").first).to_contain_text("sunrise-mart")
    screenshot(page, "console-operator-clients")


def test_a_merchant_finds_its_members_but_never_another_merchants(page, server):
    # A customer of the hotel only: the supermarket must learn nothing about them.
    phone = "+86139" + "".join(secrets.choice("0123456789") for _ in range(8))
    enrolled = graphql(
        server, "demo-lakeview-hotel", ENROLL, i={"phone": phone, "externalRef": f"LV-{secrets.token_hex(3)}", "name": "Hotel Guest"}
    )
    stranger = enrolled["enrollMember"]["member"]["memberNumber"]

    sign_in(page, "Merchant: Sunrise Supermarket")
    expect(page.get_by_role("heading", name="Members", level=1)).to_be_focused()
    members = page.get_by_role("table", name="Members")
    expect(members.get_by_role("row")).to_have_count(4)  # the header and the three demo members
    screenshot(page, "console-merchant-members")

    search = page.get_by_label("Phone, member number or your customer reference")
    search.fill(phone[3:])
    page.get_by_role("button", name="Search").click()
    expect(members).to_contain_text("No member of yours matches.")
    li_wei = next(m for m in httpx.get(f"{server.url}/oauth/demo").json()["members"] if m["name"] == "Li Wei")
    search.fill("138 0013 8001")  # as a cashier types it
    page.get_by_role("button", name="Search").click()
    expect(members.get_by_role("row")).to_have_count(2)
    members.get_by_role("link", name=li_wei["memberNumber"]).click()
    expect(page.get_by_role("heading", name="Member Li Wei", level=1)).to_be_visible()
    expect(page.get_by_role("table", name="Balance across the alliance")).to_contain_text("POINTS")
    history = page.get_by_role("table", name="Your history with this member")
    expect(history).to_contain_text("SM-R-10231")
    expect(history).not_to_contain_text("LV-UPGRADE-7731")  # the hotel's redemption is not the supermarket's history
    screenshot(page, "console-merchant-member")

    page.goto(f"/console/#/members/{stranger}")
    expect(page.get_by_role("heading", name="Member not found", level=1)).to_be_visible()
    expect(page.get_by_role("alert")).to_have_text("No member with this number is enrolled with you.")
    content = page.content()
    assert "Hotel Guest" not in content and phone not in content and phone[-4:] not in content
    screenshot(page, "console-merchant-member-not-found")


def test_a_merchant_creates_an_api_client_sees_the_secret_once_and_revokes_it(page, server):
    sign_in(page, "Merchant: East Auto 4S Service")
    page.get_by_role("link", name="API clients").click()
    page.get_by_label("Name").fill("Workshop tablet")
    page.get_by_role("button", name="Create client").click()

    dialog = page.get_by_role("dialog", name="Copy the secret now")
    expect(dialog).to_be_visible()
    client_id = dialog.locator("code.client-id").inner_text()
    secret = dialog.locator("code.secret").inner_text()
    assert client_id.startswith("mc_") and len(secret) >= 40
    screenshot(page, "console-merchant-new-client-secret")
    response = httpx.post(f"{server.url}/oauth/token", data={"grant_type": "client_credentials"}, auth=(client_id, secret))
    assert response.status_code == 200

    dialog.get_by_role("button", name="I have stored it").click()
    expect(page.locator("dialog")).to_have_count(0)
    assert secret not in page.content()  # shown once: gone with the dialog
    clients = page.get_by_role("table", name="API clients")
    row = clients.get_by_role("row").filter(has_text=client_id)
    expect(row).to_contain_text("Active")
    expect(clients.get_by_role("row").filter(has_text="demo-east-4s")).to_contain_text("(signed in)")

    row.get_by_role("button", name=f"Revoke {client_id}").click()
    page.get_by_role("dialog", name="Revoke client").get_by_role("button", name="Revoke client").click()
    expect(row).to_contain_text("Revoked")
    screenshot(page, "console-merchant-clients")
    response = httpx.post(f"{server.url}/oauth/token", data={"grant_type": "client_credentials"}, auth=(client_id, secret))
    assert response.status_code == 401


def test_a_merchant_edits_its_catalog_and_earning_rules(page):
    sign_in(page, "Merchant: Lakeview Hotel")
    page.get_by_role("link", name="Catalog").click()
    name = f"Spa voucher {secrets.token_hex(2)}"
    form = page.locator("#reward-form")
    form.get_by_label("Name").fill(name)
    form.get_by_label("Kind").select_option("COUPON")
    form.get_by_label("Points").fill("2500")
    form.get_by_label("Stock").fill("10")
    form.get_by_role("button", name="Save reward").click()
    expect(page.get_by_role("status").filter(has_text=f"Saved {name}.")).to_be_visible()
    rewards = page.get_by_role("table", name="Your rewards")
    expect(rewards.get_by_role("row").filter(has_text=name)).to_contain_text("2,500 POINTS")

    rewards.get_by_role("button", name=f"Edit {name}").click()
    expect(form.get_by_label("Name")).to_be_focused()
    form.get_by_label("Points").fill("2200")
    form.get_by_role("button", name="Save reward").click()
    expect(rewards.get_by_role("row").filter(has_text=name)).to_contain_text("2,200 POINTS")
    screenshot(page, "console-merchant-catalog")

    page.get_by_role("link", name="Earning rules").click()
    rule_form = page.locator("#rule-form")
    rule_form.get_by_label("Code").fill("weekend-double")
    rule_form.get_by_label("Kind").select_option("MULTIPLIER")
    rule_form.get_by_role("button", name="Save rule").click()
    rules = page.get_by_role("table", name="Earning rules in force and past")
    expect(rules.get_by_role("row").filter(has_text="weekend-double")).to_contain_text("Multiplier")
    screenshot(page, "console-merchant-rules")


def test_keyboard_sign_in_bad_credentials_and_chinese(page, new_page):
    allow_console_errors(page, r"status of 401")  # the refused sign-in below
    page.goto("/console/")
    expect(page.get_by_role("heading", name="Sign in to the console")).to_be_focused()
    page.keyboard.press("Tab")
    expect(page.get_by_label("Client ID")).to_be_focused()
    page.keyboard.type("demo-operator")
    page.keyboard.press("Tab")
    page.keyboard.type("not-the-secret")
    page.keyboard.press("Enter")
    expect(page.get_by_role("alert")).to_have_text("These credentials are not valid (or the client was revoked).")
    screenshot(page, "console-sign-in-refused")

    page.get_by_label("Client secret").fill("demo-operator-secret")
    page.keyboard.press("Enter")
    expect(page.get_by_role("heading", name="Settlement", level=1)).to_be_focused()
    # The navigation is reachable and usable by keyboard; the new screen's heading takes focus.
    page.get_by_role("link", name="Tenants & terms").focus()
    page.keyboard.press("Enter")
    expect(page.get_by_role("heading", name="Tenants & terms", level=1)).to_be_focused()
    expect(page.get_by_role("link", name="Tenants & terms")).to_have_attribute("aria-current", "page")

    chinese = new_page(locale="zh-CN")
    chinese.goto("/console/")
    expect(chinese.get_by_role("heading", name="登录管理台")).to_be_visible()
    chinese.get_by_role("button", name="商户：Sunrise Supermarket").click()
    expect(chinese.get_by_role("heading", name="会员", level=1)).to_be_visible()
    expect(chinese.locator("html")).to_have_attribute("lang", "zh-CN")
    expect(chinese.get_by_role("table", name="会员").get_by_role("link")).to_have_count(3)
    screenshot(chinese, "console-merchant-members-zh-CN")
    chinese.get_by_label("语言").select_option("en")
    expect(chinese.get_by_role("heading", name="Members", level=1)).to_be_visible()


def demo_month_batch(server, settings) -> str:
    """The id of the demo month's POINTS batch (run now unless an earlier test did)."""
    month = last_month(datetime.now(ZoneInfo(settings.time_zone)).date())
    run = graphql(
        server,
        "demo-operator",
        "mutation($i: RunSettlementInput!) { runSettlement(input: $i) { batch { id } userErrors { code } } }",
        i={"asset": "POINTS", "periodStart": month.isoformat()},
    )["runSettlement"]
    if run["batch"]:
        return run["batch"]["id"]
    batches = graphql(server, "demo-operator", "{ settlementBatches(first: 20) { edges { node { id periodStart asset } } } }")
    return next(
        e["node"]["id"]
        for e in batches["settlementBatches"]["edges"]
        if e["node"]["asset"] == "POINTS" and datetime.fromisoformat(e["node"]["periodStart"]).astimezone(ZoneInfo(settings.time_zone)).date() == month
    )


def test_a_merchant_disputes_its_line_and_the_operator_resolves_it(page, new_page, server, settings):
    batch_id = demo_month_batch(server, settings)
    sign_in(page, "Merchant: Lakeview Hotel")
    page.goto(f"/console/#/settlement/{batch_id}")
    lines = page.get_by_role("table", name="Lines")
    # The hotel sees only lines it is a party to.
    expect(lines).not_to_contain_text("sunrise-mart\u00a0east-4s")
    for row in lines.locator("tbody tr").all_inner_texts():
        assert "lakeview-hotel" in row, row
    lines.get_by_role("button", name="Dispute sunrise-mart → lakeview-hotel").click()
    raise_it = page.get_by_role("dialog", name="Dispute sunrise-mart → lakeview-hotel")
    raise_it.get_by_label("Reason").fill("Room upgrade LV-UPGRADE-7731 was cancelled")
    raise_it.get_by_role("button", name="Dispute").click()
    disputes = page.get_by_role("table", name="Disputes")
    expect(disputes).to_contain_text("Room upgrade LV-UPGRADE-7731 was cancelled")
    expect(disputes).to_contain_text("Open")
    screenshot(page, "console-merchant-dispute")

    operator = new_page()
    sign_in(operator, "Alliance operator")
    operator.goto(f"/console/#/settlement/{batch_id}")
    operator_disputes = operator.get_by_role("table", name="Disputes")
    operator_disputes.get_by_role("button", name="Resolve the dispute on sunrise-mart → lakeview-hotel").click()
    resolve = operator.get_by_role("dialog", name="Resolve dispute")
    resolve.get_by_label("Resolution").fill("Refund posted in the open period")
    resolve.get_by_role("button", name="Resolve dispute").click()
    expect(operator_disputes).to_contain_text("Resolved")
    expect(operator_disputes).to_contain_text("Refund posted in the open period")
    screenshot(operator, "console-operator-dispute-resolved")
