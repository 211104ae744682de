"""The ``alliance`` command, run as an operator would run it: a separate process reading its
settings from the environment, against the test database."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys

from alliance.config import Settings
from tests.conftest import Api, random_phone

ENROLL = "mutation($i: EnrollMemberInput!) { enrollMember(input: $i) { member { memberNumber } } }"


async def enrolled(api: Api, ref: str) -> str:
    """The member number of a new member enrolled through ``api``."""
    data = await api(ENROLL, i={"phone": random_phone(), "externalRef": ref})
    return data["enrollMember"]["member"]["memberNumber"]


def cli_env(settings: Settings) -> dict[str, str]:
    env = {name: value for name, value in os.environ.items() if not name.startswith("ALLIANCE_")}
    assert settings.database_url is not None
    env["DATABASE_URL"] = settings.database_url
    env["ALLIANCE_APP_ROLE"] = settings.app_role
    return env


def run_cli(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "alliance.cli", *args],
        env=cli_env(settings),
        capture_output=True,
        text=True,
        timeout=120,
    )


async def run_cli_async(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    return await asyncio.to_thread(run_cli, settings, *args)


async def test_client_create_prints_working_credentials(http, settings) -> None:
    result = await run_cli_async(settings, "client", "create", "--role", "operator", "--name", "x", "--json")
    assert result.returncode == 0, result.stderr
    credentials = json.loads(result.stdout)
    assert set(credentials) == {"client_id", "client_secret"}

    response = await http.post(
        "/oauth/token",
        data={"grant_type": "client_credentials"},
        auth=(credentials["client_id"], credentials["client_secret"]),
    )
    assert response.status_code == 200, response.text
    operator = Api(http, response.json()["access_token"])
    viewer = (await operator("{ viewer { kind clientId } }"))["viewer"]
    assert viewer == {"kind": "OPERATOR", "clientId": credentials["client_id"]}


async def test_client_create_for_a_merchant_with_scopes(http, settings, make_merchant) -> None:
    m = await make_merchant()
    result = await run_cli_async(
        settings,
        *("client", "create", "--role", "merchant", "--tenant", m.code, "--name", "pos"),
        *("--scopes", "tenants:read,members:read", "--json"),
    )
    assert result.returncode == 0, result.stderr
    credentials = json.loads(result.stdout)
    response = await http.post(
        "/oauth/token",
        data={"grant_type": "client_credentials"},
        auth=(credentials["client_id"], credentials["client_secret"]),
    )
    assert response.status_code == 200, response.text
    assert response.json()["scope"] == "members:read tenants:read"
    viewer = (await Api(http, response.json()["access_token"])("{ viewer { kind tenant { code } } }"))[
        "viewer"
    ]
    assert viewer == {"kind": "MERCHANT", "tenant": {"code": m.code}}


def test_client_create_for_an_unknown_tenant_fails(settings) -> None:
    result = run_cli(
        settings, "client", "create", "--role", "merchant", "--tenant", "no-such-tenant", "--name", "x"
    )
    assert result.returncode == 2
    assert "TENANT_NOT_FOUND" in result.stderr
    assert "client_secret" not in result.stdout


def test_client_create_refuses_scopes_beyond_the_role(settings) -> None:
    result = run_cli(
        settings, "client", "create", "--role", "operator", "--name", "x", "--scopes", "everything", "--json"
    )
    assert result.returncode == 2
    assert "INVALID_SCOPE" in result.stderr
    assert result.stdout == ""


async def test_token_member_prints_a_working_member_token(http, settings, make_merchant) -> None:
    m = await make_merchant()
    number = await enrolled(m.api, "CLI-1")
    result = await run_cli_async(settings, "token", "member", number)
    assert result.returncode == 0, result.stderr
    token = result.stdout.strip()
    member = Api(http, token)
    viewer = (await member("{ viewer { kind member { memberNumber } } }"))["viewer"]
    assert viewer == {"kind": "MEMBER", "member": {"memberNumber": number}}


def test_token_member_for_an_unknown_member_fails(settings) -> None:
    result = run_cli(settings, "token", "member", "0000000000")
    assert result.returncode == 2
    assert "no member" in result.stderr
    assert result.stdout == ""


async def test_jobs_run_from_the_command_line(settings) -> None:
    """The CronJobs' commands: expiry (two concurrent loops), birthdays and settlement succeed."""
    expire = await run_cli_async(settings, "expire", "--workers", "2", "--chunk", "50")
    assert expire.returncode == 0, expire.stderr
    assert "moved to breakage" in expire.stdout
    birthdays = await run_cli_async(settings, "birthdays")
    assert birthdays.returncode == 0 and "birthday gifts" in birthdays.stdout, birthdays.stderr
    settle = await run_cli_async(settings, "settle", "--asset", "GREEN", "--period", "2001-01")
    assert settle.returncode == 0, settle.stderr
    assert "draft" in settle.stdout
