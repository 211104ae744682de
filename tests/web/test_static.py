"""The apps are served from the package with a strict CSP, and the page loads in Chromium."""

import httpx


def test_member_app_is_served_with_a_strict_content_security_policy(server):
    response = httpx.get(f"{server.url}/app/")
    assert response.status_code == 200
    assert '<script type="module" src="main.js">' in response.text
    csp = response.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "'unsafe-inline'" not in csp
    assert response.headers["referrer-policy"] == "no-referrer"
    shared = httpx.get(f"{server.url}/shared/graphql.js")
    assert shared.status_code == 200 and "javascript" in shared.headers["content-type"]
    assert httpx.get(f"{server.url}/", follow_redirects=False).headers["location"] == "/app/"


def test_the_sign_in_page_loads_its_modules_under_the_policy(page):
    page.goto("/app/")
    page.get_by_role("heading", name="Sign in", exact=True).wait_for()  # rendered by the ES modules
