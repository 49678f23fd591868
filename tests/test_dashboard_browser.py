"""The dashboard in a real browser: Debian's Chromium driven by Playwright.

Screenshots go to test-artifacts/. Under CI=true a missing browser (or Playwright) fails the
test; elsewhere it is skipped with the reason.
"""

from __future__ import annotations

import os
import random
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from sluice.usage import UsageRecord
from tests.conftest import IN_CI, ROOT, Gateway, launch_gateway, openai_config
from tests.fakes.openai_fake import FakeOpenAI
from tests.usage_seed import insert_key, insert_usage, storage_url

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


def _missing(reason: str) -> None:
    if IN_CI:
        pytest.fail(f"{reason} (required under CI=true)")
    pytest.skip(reason)


def _rows(now: float, n: int, prefix: str) -> list[UsageRecord]:
    rng = random.Random(prefix)
    out = []
    for i in range(n):
        status = rng.choice([200] * 8 + [429, 502])
        out.append(
            UsageRecord(
                ts=now - 1800 * (n - i) if prefix == "seed" else now,
                request_id=f"req_{prefix}_{i:03d}",
                method="POST",
                path="/v1/chat/completions",
                status=status,
                error_code={429: "RATE_LIMITED", 502: "EXTERNAL_SERVICE_ERROR"}.get(status),
                model=MODELS[i % 3],
                provider="openai",
                team=TEAMS[i % 2],
                key_id=f"key_{TEAMS[i % 2]}01",
                prompt_tokens=rng.randint(50, 900),
                completion_tokens=rng.randint(10, 400),
                cost_usd=None if MODELS[i % 3] == "gpt-4.1" else rng.uniform(0.0005, 0.02),
                latency_ms=rng.uniform(80, 2400),
                cache_hit=i % 7 == 0,
            )
        )
    return out


@pytest.fixture(scope="module")
def gw(fake_openai: FakeOpenAI, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    config = openai_config(fake_openai, auth={"admin_key": ADMIN})
    g = launch_gateway(tmp_path_factory.mktemp("dash-browser"), config)
    insert_usage(storage_url(g.config_path), _rows(time.time(), 40, "seed"))
    yield g
    g.stop()


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


def test_login_usage_charts_and_requests(page: Any, gw: Gateway) -> None:
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
    page.locator("#chart-requests svg rect.ok").first.wait_for()
    assert page.locator("#chart-tokens svg rect.in").count() > 5
    assert page.locator("#chart-latency svg path.p95").count() == 1
    totals = page.locator("#totals").inner_text()
    assert "Requests\n40" in totals, totals
    assert page.locator("#top table").count() == 4
    assert "gpt-4o-mini" in page.locator("#top").inner_text()
    # The key lives in this tab's session storage only, never in the URL or local storage.
    assert page.evaluate("sessionStorage.getItem('sluice.adminKey')") == ADMIN
    assert page.evaluate("localStorage.length") == 0
    shot(page, "usage")

    # A filter narrows the charts and totals to one team.
    page.locator("#panel-usage").get_by_label("Team", exact=True).select_option("red")
    page.locator("#usage-form").get_by_role("button", name="Apply").click()
    expect(page.locator("#totals")).to_contain_text("Requests20Errors")

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
    assert rows.count() == 40
    assert "req_seed_039" in rows.first.inner_text()

    # The live view picks up new rows without a reload.
    insert_usage(storage_url(gw.config_path), _rows(time.time(), 2, "live"))
    page.locator("#requests-table tbody tr.new", has_text="req_live_001").wait_for(timeout=12_000)
    assert rows.count() == 42
    shot(page, "requests")

    page.locator("#requests-form").get_by_label("Status").select_option("error")
    page.locator("#requests-form").get_by_role("button", name="Apply").click()
    expect(rows).not_to_have_count(42)
    statuses = page.locator("#requests-table tbody tr td:nth-child(2)").all_inner_texts()
    assert statuses and all(int(s) >= 400 for s in statuses), statuses

    assert all(u.startswith(gw.url) for u in seen), [u for u in seen if not u.startswith(gw.url)]
    assert not any(ADMIN in u for u in seen)


def test_keys_health_phone_width_and_sign_out(page: Any, gw: Gateway) -> None:
    sign_in(page, gw)
    page.get_by_role("tab", name="Keys").click()
    access = httpx.get(gw.url + "/admin/keys", headers={"Authorization": f"Bearer {ADMIN}"})
    if access.status_code == 404:
        # The access endpoints are not in this build: the page says so and disables creating.
        page.get_by_text("Team keys are not available on this gateway").wait_for()
        assert page.get_by_role("button", name="Create key").is_disabled()
    else:
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
        row.get_by_role("button", name="Revoke").click()
        page.locator("#keys-table tbody tr.revoked", has_text="browser key").wait_for()
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


def test_key_management_flows_against_seed_shapes(page: Any, gw: Gateway) -> None:
    """Create (shown once, copy), rotate, limits, revoke — the page's side of each flow.

    The access endpoints are answered here in the shapes of the access branch (seed 003's
    for /tokens) until it is merged;
    PATCH /admin/keys/{id} is the gateway's own, against a key stored in its database.
    """
    import orjson

    insert_key(
        storage_url(gw.config_path),
        "key_stub01",
        "red",
        "ci key",
        "sk_stub0001_" + "b" * 40,
        time.time(),
    )
    calls: list[str] = []
    created = "sk_new00001_" + "c" * 40

    def key(key_id: str, name: str, prefix: str) -> dict[str, Any]:
        """A key as the access branch's GET /admin/keys lists it (KeyRecord.public())."""
        return {
            "id": key_id,
            "team_id": "red",
            "name": name,
            "prefix": prefix,
            "created_at": time.time(),
            "revoked_at": None,
            "rotated_to": None,
            "active": True,
            "allowed_models": None,
            "limits": {},
            "metadata": {},
        }

    keys = [key("key_stub01", "ci key", "sk_stub0001")]

    def stub(route: Any) -> None:
        req = route.request
        path = req.url.removeprefix(gw.url)
        calls.append(f"{req.method} {path}")
        assert req.headers.get("authorization") == f"Bearer {ADMIN}"
        body: Any
        if req.method == "GET" and path == "/admin/keys":
            # Like the real list, show what the database holds for the stored key.
            stored = httpx.patch(f"{gw.url}/admin/keys/key_stub01", json={}, headers=AUTH).json()
            keys[0].update(allowed_models=stored["allowedModels"], limits=stored["limits"] or {})
            body = {"keys": keys}
        elif req.method == "GET" and path == "/admin/teams":
            active = sum(k["active"] for k in keys)
            body = {
                "teams": [
                    {
                        "id": "red",
                        "name": "Red team",
                        "created_at": time.time(),
                        "active_keys": active,
                    }
                ]
            }
        elif req.method == "POST" and path == "/tokens":
            sent = orjson.loads(req.post_data)
            keys.append(key("key_new01", sent["name"], "sk_new00001"))
            body = {"apiKey": created, **sent, "createdAt": "2026-11-23T18:00:00.000Z"}
        elif req.method == "POST" and path == f"/tokens/{created}/refresh":
            body = {"apiKey": "sk_rot00001_" + "d" * 40, "teamId": "red", "name": "new key"}
            body["createdAt"] = "2026-11-23T18:01:00.000Z"
        elif req.method == "DELETE" and path == "/admin/keys/key_new01":
            keys[-1].update(revoked_at=time.time(), active=False)
            body = {"id": "key_new01", "revoked": True, "revoked_at": keys[-1]["revoked_at"]}
        else:
            route.continue_()
            return
        route.fulfill(status=200, content_type="application/json", body=orjson.dumps(body))

    page.route(f"{gw.url}/admin/keys**", stub)
    page.route(f"{gw.url}/admin/teams", stub)
    page.route(f"{gw.url}/tokens**", stub)
    page.on("dialog", lambda d: d.accept())
    sign_in(page, gw)
    page.get_by_role("tab", name="Keys").click()
    page.locator("#keys-table tbody tr", has_text="ci key").wait_for()
    assert "Red team" in page.locator("#teams-table").inner_text()

    page.get_by_label("Team id").fill("red")
    page.get_by_label("Name", exact=True).fill("new key")
    page.get_by_role("button", name="Create key").click()
    expect(page.locator("#new-key-value")).to_have_value("sk_new00001_" + "c" * 40)
    page.get_by_role("button", name="Copy", exact=True).click()
    expect(page.locator("#copy-status")).to_have_text("Copied to the clipboard.")
    new_row = page.locator("#keys-table tbody tr", has_text="new key")
    new_row.wait_for()
    assert "sk_new00001_c" not in page.locator("#keys-table").inner_text()

    # Rotation (seed 003) takes the key itself: the dialog asks for it and checks its prefix.
    new_row.get_by_role("button", name="Rotate").click()
    rotate = page.get_by_role("dialog")
    rotate.get_by_label("Current key").fill("sk_other001_" + "e" * 40)
    rotate.get_by_role("button", name="Rotate").click()
    expect(rotate).to_contain_text("should start with sk_new00001")
    rotate.get_by_label("Current key").fill(created)
    rotate.get_by_role("button", name="Rotate").click()
    expect(page.locator("#new-key-value")).to_have_value("sk_rot00001_" + "d" * 40)
    expect(rotate).to_be_hidden()

    # Limits and allowed models go to the gateway's own PATCH /admin/keys/{id}.
    page.locator("#keys-table tbody tr", has_text="ci key").get_by_role(
        "button", name="Limits"
    ).click()
    dialog = page.get_by_role("dialog")
    dialog.get_by_label("Allowed models").fill("gpt-4o*, gpt-4.1")
    dialog.get_by_label("Requests / min").fill("60")
    dialog.get_by_label("Budget (USD)").fill("25")
    dialog.get_by_label("Budget period").select_option("week")
    shot(page, "key-limits")
    dialog.get_by_role("button", name="Save").click()
    expect(dialog).to_be_hidden()
    ci_row = page.locator("#keys-table tbody tr", has_text="ci key")
    expect(ci_row).to_contain_text("gpt-4o*, gpt-4.1")
    expect(ci_row).to_contain_text("rpm 60, budget $25.00, per week")
    stored = httpx.patch(
        gw.url + "/admin/keys/key_stub01", json={}, headers={"Authorization": f"Bearer {ADMIN}"}
    ).json()
    assert stored["allowedModels"] == ["gpt-4o*", "gpt-4.1"]
    assert stored["limits"] == {"rpm": 60, "budget_usd": 25, "budget_period": "week"}

    new_row.get_by_role("button", name="Revoke").click()
    page.locator("#keys-table tbody tr.revoked", has_text="new key").wait_for()
    shot(page, "keys-managed")
    assert "DELETE /admin/keys/key_new01" in calls and f"POST /tokens/{created}/refresh" in calls
