"""The operator's insights screen in headless Chromium: liability by expiry month (a chart and
its table), by issuer, and merchant health, after an insights refresh of the demo alliance."""

from __future__ import annotations

from playwright.sync_api import expect

from alliance.db import Database
from alliance.insights.refresh import refresh
from tests.web.conftest import run_async, screenshot


async def _refresh(settings) -> None:
    """`alliance insights refresh`, folding everything posted so far."""
    db = Database(settings.database_url, settings)
    try:
        await refresh(db, settings.model_copy(update={"insights_refresh_lag_seconds": 0}))
    finally:
        await db.close()


def test_the_operator_reads_liability_by_expiry_month_and_merchant_health(page, server, settings):
    run_async(_refresh(settings))
    page.goto("/console/")
    page.get_by_role("button", name="Alliance operator").click()
    page.get_by_role("link", name="Insights").click()
    expect(page.get_by_role("heading", name="Insights", level=1)).to_be_focused()
    expect(page.get_by_text("Figures as of the last insights refresh")).to_be_visible()

    chart = page.locator(".chart.liability[data-rendered]")
    expect(chart.locator("canvas").first).to_be_visible()
    expect(chart).to_have_attribute(
        "aria-label", "Bar chart of outstanding points and expected breakage by expiry month"
    )
    by_month = page.get_by_role("table", name="Liability by expiry month")
    expect(by_month.get_by_role("row").nth(1)).to_contain_text("¥")
    expect(page.get_by_role("table", name="Liability by issuer")).to_contain_text("rate")
    health = page.get_by_role("table", name="Merchant health")
    expect(health).to_contain_text("Supermarket")
    expect(health.get_by_role("row").nth(1)).to_contain_text("%")
    screenshot(page, "console-operator-insights")
