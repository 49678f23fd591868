"""The dashboard in a real browser: Debian's Chromium driven by Playwright.

Screenshots go to test-artifacts/. Under CI=true a missing browser (or Playwright) fails the
test; elsewhere it is skipped with the reason.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import IN_CI, ROOT, Gateway, launch_gateway, openai_config
from tests.fakes.openai_fake import FakeOpenAI
from tests.traffic_util import fresh_window

ADMIN = "adm-browser-test-9c4a1b"
AUTH = {"Authorization": f"Bearer {ADMIN}"}
CHROMIUM = os.environ.get("SLUICE_TEST_CHROMIUM", "/usr/bin/chromium")
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ARTIFACTS = ROOT / "test-artifacts"
MODELS = ["gpt-4o", "gpt-4o-mini", "gpt-4.1"]
TEAMS = ["red", "blue"]
REQUESTS = 12  # real chat requests sent before the browser starts


def _missing(reason: str) -> None:
    if IN_CI:
        pytest.fail(f"{reason} (required under CI=true)")
    pytest.skip(reason)


def chat(gw: Gateway, key: str, model: str, rid: str, stream: bool = False) -> httpx.Response:
    """One real chat request through the gateway with a team key."""
    body = {"model": model, "stream": stream, "messages": [{"role": "user", "content": rid}]}
    headers = {"Authorization": f"Bearer {key}", "X-Request-ID": rid}
    r = httpx.post(gw.url + "/v1/chat/completions", json=body, headers=headers, timeout=30)
    if stream and r.status_code == 200:
        assert r.text.rstrip().endswith("data: [DONE]"), r.text[-200:]
    return r


def wait_rows(gw: Gateway, n: int, timeout: float = 10.0) -> list[dict[str, Any]]:
    """The newest usage rows once at least `n` are stored (the usage writer batches)."""
    end = time.monotonic() + timeout
    while True:
        rows = httpx.get(gw.url + "/admin/requests?limit=500", headers=AUTH).json()["data"]
        if len(rows) >= n or time.monotonic() > end:
            assert len(rows) >= n, f"{len(rows)} rows stored, {n} expected"
            return list(rows)
        time.sleep(0.1)


@pytest.fixture(scope="module")
def gw(fake_openai: FakeOpenAI, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    """A gateway in front of the fake OpenAI, team keys on, with an admin key."""
    config = openai_config(fake_openai, auth={"admin_key": ADMIN, "keys": True})
    g = launch_gateway(tmp_path_factory.mktemp("dash-browser"), config)
    yield g
    g.stop()


def create_key(gw: Gateway, team: str, name: str) -> str:
    """A new team key through the real POST /tokens (seed 003)."""
    made = httpx.post(gw.url + "/tokens", json={"teamId": team, "name": name}, headers=AUTH)
    assert made.status_code == 200, made.text
    return str(made.json()["apiKey"])


@pytest.fixture(scope="module")
def traffic(gw: Gateway) -> dict[str, str]:
    """Real requests from two teams' keys (every third streamed, the last one refused by
    the upstream with a 400), stored by the usage writer; the keys by team."""
    keys = {team: create_key(gw, team, f"{team} ci") for team in TEAMS}
    for i in range(REQUESTS):
        failing = i == REQUESTS - 1
        model = MODELS[i % 3] + ("-400" if failing else "")
        r = chat(gw, keys[TEAMS[i % 2]], model, f"req_real_{i:03d}", stream=i % 3 == 1)
        assert r.status_code == (400 if failing else 200), r.text
    rows = wait_rows(gw, REQUESTS)
    assert {r["request_id"] for r in rows} == {f"req_real_{i:03d}" for i in range(REQUESTS)}
    assert sum(r["stream"] for r in rows) == REQUESTS // 3
    assert [r["status"] for r in rows if r["status"] >= 400] == [400]
    return keys


@pytest.fixture
def page(tmp_path: Path) -> Iterator[Any]:
    if not Path(CHROMIUM).exists():
        _missing(f"Chromium is not installed at {CHROMIUM} (apt-get install chromium)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _missing("the playwright package is not installed (pip install -e '.[dev]')")
    ARTIFACTS.mkdir(exist_ok=True)
    profile = tmp_path / "chromium-profile"  # a new, empty profile for every test
    with sync_playwright() as p:
        ctx = p.chromium.launch_persistent_context(
            str(profile),
            executable_path=CHROMIUM,
            headless=True,
            args=ARGS,
            viewport={"width": 1280, "height": 900},
        )
        try:
            pg = ctx.pages[0] if ctx.pages else ctx.new_page()
            pg.set_default_timeout(15_000)
            yield pg
        finally:
            ctx.close()
    shutil.rmtree(profile, ignore_errors=True)


def expect(target: Any) -> Any:
    from playwright.sync_api import expect as pw_expect

    return pw_expect(target)


def shot(page: Any, name: str) -> None:
    page.screenshot(path=str(ARTIFACTS / f"dashboard-{name}.png"), full_page=True)


def sign_in(page: Any, gw: Gateway) -> None:
    page.goto(gw.url + "/ui")
    page.get_by_label("Admin key").fill(ADMIN)
    page.get_by_role("button", name="Sign in").click()
    page.get_by_role("tab", name="Usage").wait_for()


def test_login_usage_charts_and_requests(page: Any, gw: Gateway, traffic: dict[str, str]) -> None:
    seen: list[str] = []
    page.on("request", lambda r: seen.append(r.url))
    page.goto(gw.url + "/ui")
    key_field = page.get_by_label("Admin key")
    assert key_field.get_attribute("type") == "password"
    shot(page, "login")

    key_field.fill("not-the-admin-key")
    page.get_by_role("button", name="Sign in").click()
    page.get_by_text("That is not the admin key.").wait_for()

    key_field.fill(ADMIN)
    key_field.press("Enter")
    # The charts are drawn from the requests just sent: 11 answered, 1 refused upstream.
    page.locator("#chart-requests svg rect.ok").first.wait_for()
    assert page.locator("#chart-requests svg rect.err").count() >= 1
    desc = page.locator("#chart-requests svg desc").text_content()
    assert desc.startswith(f"Total {REQUESTS};"), desc
    assert page.locator("#chart-tokens svg rect.in").count() >= 1
    assert page.locator("#chart-tokens svg rect.out").count() >= 1
    assert page.locator("#chart-latency svg path.p95").count() == 1
    totals = page.locator("#totals").inner_text()
    assert f"Requests\n{REQUESTS}" in totals, totals
    assert page.locator("#top table").count() == 4
    assert "gpt-4o-mini" in page.locator("#top").inner_text()
    # The key lives in this tab's session storage only, never in the URL or local storage.
    assert page.evaluate("sessionStorage.getItem('sluice.adminKey')") == ADMIN
    assert page.evaluate("localStorage.length") == 0
    shot(page, "usage")

    # A filter narrows the charts and totals to one team.
    page.locator("#panel-usage").get_by_label("Team", exact=True).select_option("red")
    page.locator("#usage-form").get_by_role("button", name="Apply").click()
    expect(page.locator("#totals")).to_contain_text(f"Requests{REQUESTS // 2}Errors")

    # Every form control has a label, every button a name; focus is visible.
    unlabelled = page.evaluate(
        "[...document.querySelectorAll('input, select')]"
        ".filter(e => !e.labels.length && !e.getAttribute('aria-label')).map(e => e.id)"
    )
    assert unlabelled == []
    assert page.evaluate(
        "[...document.querySelectorAll('button')].every(b => b.innerText.trim() || b.ariaLabel)"
    )
    page.locator("#usage-form").get_by_role("button", name="Apply").focus()
    page.keyboard.press("Shift+Tab")
    page.keyboard.press("Tab")
    outline = page.evaluate("getComputedStyle(document.activeElement).outlineStyle")
    assert outline == "solid"

    # Keyboard: arrow keys move between tabs (WAI-ARIA tablist).
    page.get_by_role("tab", name="Usage").focus()
    page.keyboard.press("ArrowRight")
    requests_tab = page.get_by_role("tab", name="Requests")
    assert requests_tab.get_attribute("aria-selected") == "true"
    assert page.evaluate("document.activeElement.id") == "tab-requests"
    rows = page.locator("#requests-table tbody tr")
    rows.first.wait_for()
    assert rows.count() == REQUESTS
    newest = rows.first.inner_text()
    assert f"req_real_{REQUESTS - 1:03d}" in newest and "400" in newest, newest
    assert "EXTERNAL_SERVICE_ERROR" in newest and f"{MODELS[(REQUESTS - 1) % 3]}-400" in newest, (
        newest
    )
    table = page.locator("#requests-table").inner_text()
    assert all(m in table for m in MODELS) and "blue" in table, table

    # The live view picks up new requests without a reload.
    for i in range(2):
        assert chat(gw, traffic["red"], "gpt-4o", f"req_live_{i:03d}", stream=i == 1).is_success
    page.locator("#requests-table tbody tr.new", has_text="req_live_001").wait_for(timeout=12_000)
    assert rows.count() == REQUESTS + 2
    shot(page, "requests")

    page.locator("#requests-form").get_by_label("Status").select_option("error")
    page.locator("#requests-form").get_by_role("button", name="Apply").click()
    expect(rows).to_have_count(1)
    statuses = page.locator("#requests-table tbody tr td:nth-child(2)").all_inner_texts()
    assert statuses and all(int(s) >= 400 for s in statuses), statuses

    assert all(u.startswith(gw.url) for u in seen), [u for u in seen if not u.startswith(gw.url)]
    assert not any(ADMIN in u for u in seen)


def test_keys_health_phone_width_and_sign_out(page: Any, gw: Gateway) -> None:
    sign_in(page, gw)
    page.get_by_role("tab", name="Keys").click()
    page.on("dialog", lambda d: d.accept())
    page.get_by_label("Team id").fill("browser-team")
    page.get_by_label("Name", exact=True).fill("browser key")
    page.get_by_role("button", name="Create key").click()
    expect(page.locator("#new-key-value")).not_to_have_value("")
    secret = page.locator("#new-key-value").input_value()
    assert len(secret) > 16
    row = page.locator("#keys-table tbody tr", has_text="browser key")
    row.wait_for()
    assert secret not in page.locator("#keys-table").inner_text()
    # The key made in the page works at once, through the real gateway.
    assert chat(gw, secret, "gpt-4o", "req_uikey_ok").status_code == 200
    row.get_by_role("button", name="Revoke").click()
    page.locator("#keys-table tbody tr.revoked", has_text="browser key").wait_for()
    refused = chat(gw, secret, "gpt-4o", "req_uikey_revoked")
    assert refused.status_code == 401, refused.text
    assert refused.json()["error"]["code"] == "UNAUTHORIZED"
    shot(page, "keys")

    page.get_by_role("tab", name="Health").click()
    provider = page.locator("#health-table tbody tr", has_text="openai")
    provider.wait_for()
    assert "yes" in provider.inner_text()
    shot(page, "health")

    # Phone width: the page reflows, nothing but the tables' own scrollers is wider.
    page.set_viewport_size({"width": 390, "height": 844})
    page.get_by_role("tab", name="Usage").click()
    expect(page.locator("#status")).to_contain_text("Usage updated")
    assert 300 <= int(page.locator("#chart-requests svg").get_attribute("width")) < 390
    assert page.evaluate("document.documentElement.scrollWidth") <= 390
    shot(page, "usage-390px")
    for name in ("Requests", "Keys", "Health"):
        page.evaluate("document.querySelector('#status').textContent = ''")
        page.get_by_role("tab", name=name).click()
        expect(page.locator("#status")).to_contain_text("updated")
        assert page.evaluate("document.documentElement.scrollWidth") <= 390, name
    shot(page, "health-390px")

    page.get_by_role("button", name="Sign out").click()
    page.get_by_label("Admin key").wait_for()
    assert page.evaluate("sessionStorage.getItem('sluice.adminKey')") is None


def test_key_management_flows_on_real_keys(page: Any, gw: Gateway) -> None:
    """Create (shown once, copy), rotate by id, limits and models, revoke — each checked by
    sending real requests with the key through the gateway."""
    calls: list[str] = []
    page.on("request", lambda r: calls.append(f"{r.method} {r.url.removeprefix(gw.url)}"))
    page.on("dialog", lambda d: d.accept())
    sign_in(page, gw)
    page.get_by_role("tab", name="Keys").click()
    page.get_by_label("Team id").fill("green")
    page.get_by_label("Name", exact=True).fill("managed key")
    page.get_by_role("button", name="Create key").click()
    expect(page.locator("#new-key-value")).not_to_have_value("")
    first = page.locator("#new-key-value").input_value()
    page.get_by_role("button", name="Copy", exact=True).click()
    expect(page.locator("#copy-status")).to_have_text("Copied to the clipboard.")
    live = page.locator("#keys-table tbody tr:not(.revoked)", has_text="managed key")
    live.wait_for()
    assert first not in page.locator("#keys-table").inner_text()
    expect(page.locator("#teams-table")).to_contain_text("green")
    assert chat(gw, first, "gpt-4o", "req_managed_1").status_code == 200

    # Rotation goes by id: the dialog names the key by its prefix and asks for nothing secret.
    live.get_by_role("button", name="Rotate").click()
    rotate = page.get_by_role("dialog")
    expect(rotate).to_contain_text(first[:11])
    assert rotate.locator("input").count() == 0
    rotate.get_by_role("button", name="Rotate").click()
    expect(rotate).to_be_hidden()
    expect(page.locator("#new-key-value")).not_to_have_value(first)
    second = page.locator("#new-key-value").input_value()
    page.locator("#keys-table tbody tr.revoked", has_text="managed key").wait_for()
    assert chat(gw, first, "gpt-4o", "req_managed_2").status_code == 401
    assert chat(gw, second, "gpt-4o", "req_managed_3").status_code == 200

    # Limits and allowed models (PATCH /admin/keys/{id}) apply to the very next request.
    live.get_by_role("button", name="Limits").click()
    dialog = page.get_by_role("dialog")
    dialog.get_by_label("Allowed models").fill("gpt-4o*, gpt-4.1")
    dialog.get_by_label("Requests / min").fill("60")
    dialog.get_by_label("Budget (USD)").fill("25")
    dialog.get_by_label("Budget period").select_option("week")
    shot(page, "key-limits")
    dialog.get_by_role("button", name="Save").click()
    expect(dialog).to_be_hidden()
    expect(live).to_contain_text("gpt-4o*, gpt-4.1")
    expect(live).to_contain_text("rpm 60, budget $25.00, per week")
    fresh_window(20.0)  # the rpm count below must stay in one UTC minute
    refused = chat(gw, second, "gpt-3.5-turbo", "req_managed_4")
    assert refused.status_code == 403, refused.text
    assert chat(gw, second, "gpt-4o-mini", "req_managed_5").status_code == 200

    # Live state (GET /admin/limits): the one request since the limits were set is counted.
    live.get_by_role("button", name="Live").click()
    state = page.locator("#key-state")
    expect(state).to_contain_text("Live limits of “managed key”")
    rpm = state.locator("#key-state-limits tbody tr", has_text="rpm")
    expect(rpm).to_contain_text("60")
    assert rpm.locator("td").nth(3).inner_text() == "59"
    week = state.locator("#key-state-budgets tbody tr", has_text="week")
    expect(week).to_contain_text("$25.00")
    assert week.locator("td").nth(3).inner_text() != "$0.00"
    shot(page, "key-live-limits")

    live.get_by_role("button", name="Revoke").click()
    expect(page.locator("#keys-table tbody tr.revoked", has_text="managed key")).to_have_count(2)
    assert chat(gw, second, "gpt-4o", "req_managed_6").status_code == 401
    shot(page, "keys-managed")
    rotations = [c for c in calls if c.startswith("POST /admin/keys/") and c.endswith("/rotate")]
    assert len(rotations) == 1 and not any("/refresh" in c for c in calls), calls
