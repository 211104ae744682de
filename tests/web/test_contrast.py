"""Text contrast (WCAG 2.x, success criterion 1.4.3) on the main screens, measured in Chromium.

Every visible element that renders text is checked: its computed colour against the first
opaque background behind it (its own or an ancestor's, composited over white), at least 4.5:1,
or 3:1 for large text (≥ 24 px, or ≥ 18.66 px bold). Disabled controls are exempt, as in WCAG.
"""

from __future__ import annotations

from typing import Any

from playwright.sync_api import expect

from tests.web.test_console import sign_in as console_sign_in
from tests.web.test_member_app import persona, sign_in_as

# Runs in the page: a list of {text, ratio, required, color, background} for failing elements.
MEASURE = """
() => {
  const parse = (value) => {
    const m = value.match(/rgba?\\(([^)]+)\\)/);
    if (!m) return null;
    const [r, g, b, a = 1] = m[1].split(/[ ,/]+/).filter(Boolean).map(Number);
    return { r, g, b, a };
  };
  const over = (top, bottom) => ({
    r: top.r * top.a + bottom.r * (1 - top.a),
    g: top.g * top.a + bottom.g * (1 - top.a),
    b: top.b * top.a + bottom.b * (1 - top.a),
    a: 1,
  });
  const background = (element) => {
    const layers = [];
    for (let node = element; node; node = node.parentElement) {
      const color = parse(getComputedStyle(node).backgroundColor);
      if (color && color.a > 0) {
        layers.push(color);
        if (color.a === 1) break;
      }
    }
    return layers.reduceRight((below, layer) => over(layer, below), { r: 255, g: 255, b: 255, a: 1 });
  };
  const luminance = ({ r, g, b }) => {
    const channel = (v) => {
      const s = v / 255;
      return s <= 0.03928 ? s / 12.92 : ((s + 0.055) / 1.055) ** 2.4;
    };
    return 0.2126 * channel(r) + 0.7152 * channel(g) + 0.0722 * channel(b);
  };
  const failures = [];
  for (const element of document.querySelectorAll("body *")) {
    const ownText = [...element.childNodes].some((n) => n.nodeType === Node.TEXT_NODE && n.textContent.trim());
    if (!ownText || element.closest("[disabled], [aria-disabled=true], [hidden], svg, canvas")) continue;
    const style = getComputedStyle(element);
    const box = element.getBoundingClientRect();
    if (style.visibility !== "visible" || Number(style.opacity) === 0 || box.width === 0 || box.height === 0) continue;
    const bg = background(element);
    const fg = over(parse(style.color), bg);
    const [light, dark] = [luminance(fg), luminance(bg)].sort((x, y) => y - x);
    const ratio = (light + 0.05) / (dark + 0.05);
    const size = parseFloat(style.fontSize);
    const large = size >= 24 || (size >= 18.66 && Number(style.fontWeight) >= 700);
    const required = large ? 3 : 4.5;
    if (ratio < required) {
      failures.push({
        text: element.textContent.trim().slice(0, 60),
        ratio: Math.round(ratio * 100) / 100,
        required,
        color: style.color,
        background: `rgb(${Math.round(bg.r)}, ${Math.round(bg.g)}, ${Math.round(bg.b)})`,
      });
    }
  }
  return failures;
}
"""


def low_contrast(page: Any) -> list[dict[str, Any]]:
    return page.evaluate(MEASURE)


def test_member_app_screens_have_readable_text(server: Any, mobile_page: Any) -> None:
    page = mobile_page
    page.goto("/app/")
    expect(page.get_by_role("heading", level=2).first).to_be_visible()
    assert low_contrast(page) == [], "member sign-in"
    sign_in_as(page, persona(server, 1)["name"])
    expect(page.locator("[data-balance=POINTS]")).to_be_visible()
    assert low_contrast(page) == [], "member home"
    page.get_by_role("link", name="Rewards").click()
    expect(page.locator("ul.rewards")).to_have_attribute("aria-busy", "false")
    assert low_contrast(page) == [], "rewards"
    page.get_by_role("link", name="History").click()
    expect(page.get_by_role("heading", name="History")).to_be_visible()
    assert low_contrast(page) == [], "history"


def test_console_screens_have_readable_text(page: Any) -> None:
    page.goto("/console/")
    expect(page.get_by_role("heading", name="Sign in to the console", level=1)).to_be_visible()
    assert low_contrast(page) == [], "console sign-in"
    console_sign_in(page, "Alliance operator")
    expect(page.get_by_role("heading", name="Settlement", level=1)).to_be_visible()
    assert low_contrast(page) == [], "operator settlement"


def test_the_measure_catches_grey_on_white(page: Any) -> None:
    """The check above is only worth something if it fails on a real low-contrast text."""
    page.goto("/console/")
    expect(page.get_by_role("heading", name="Sign in to the console", level=1)).to_be_visible()
    page.evaluate(
        """() => { const p = document.createElement("p"); p.textContent = "faint";
        p.style.color = "#aaaaaa"; p.style.background = "#ffffff"; document.body.append(p); }"""
    )
    (failure,) = low_contrast(page)
    assert failure["text"] == "faint" and failure["ratio"] == 2.32 and failure["required"] == 4.5
