import json
import os
import shutil

import pytest

CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]


@pytest.fixture(scope="session")
def browser():
    if not shutil.which(CHROMIUM) and not os.path.exists(CHROMIUM):
        if os.environ.get("CI"):
            pytest.fail("Chromium is missing (CI must have it)")
        pytest.skip("Chromium is missing")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        yield b
        b.close()


@pytest.fixture(scope="session")
def passwords(instance):
    return json.loads((instance.settings.hub_dir / "demo-users.json").read_text())


@pytest.fixture
def login(browser, instance, passwords):
    """login(user) -> a logged-in page on the hub's home."""
    contexts = []

    def _login(user: str):
        ctx = browser.new_context(accept_downloads=True)
        contexts.append(ctx)
        page = ctx.new_page()
        page.goto(f"{instance.url}/hub/login")
        page.fill("input[name=username]", user)
        page.fill("input[name=password]", passwords[user])
        page.click("input[type=submit], button[type=submit]")
        page.wait_for_url(lambda url: "/hub/login" not in url)
        return page

    yield _login
    for ctx in contexts:
        ctx.close()
