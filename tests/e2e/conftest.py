from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from tests.e2e.stack import Stack

# Playwright's sync API runs an event loop in this thread; the ORM calls the tests
# make between browser steps are still plain synchronous calls.
os.environ.setdefault("DJANGO_ALLOW_ASYNC_UNSAFE", "true")

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-quic",
    "--disable-sync",
]
SCREENSHOTS = Path(
    os.environ.get(
        "VERITY_SCREENSHOT_DIR", Path(__file__).resolve().parents[2] / "var" / "screenshots"
    )
)


@pytest.fixture
def stack(transactional_db, tmp_path, settings, shipped_onnx):
    settings.MEDIA_ROOT = tmp_path / "media"
    s = Stack(tmp_path)
    s.start_web()
    s.start_worker()
    yield s
    s.stop()


# Module scope: Playwright's sync API holds an event loop on this thread while open,
# which would clash with the asyncio tests that run after the browser tests.
@pytest.fixture(scope="module")
def browser():
    if not Path(CHROMIUM).exists():
        pytest.skip("Debian's chromium is not installed (make test installs it)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        yield b
        b.close()


@pytest.fixture
def page(browser):
    ctx = browser.new_context(viewport={"width": 1280, "height": 900})
    pg = ctx.new_page()
    # Surface the page's own errors in the test output.
    pg.on("pageerror", lambda exc: print(f"[page error] {exc}"))
    pg.on(
        "console",
        lambda msg: (
            print(f"[console.{msg.type}] {msg.text}") if msg.type in ("error", "warning") else None
        ),
    )
    yield pg
    ctx.close()


def screenshot(page, name: str) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=True)


def sign_in(page, base: str, username: str, password: str) -> None:
    page.goto(f"{base}/accounts/login/")
    page.fill("#id_username", username)
    page.fill("#id_password", password)
    page.click("button[type=submit]")
    page.wait_for_url(f"{base}/")


__all__ = ["screenshot", "shutil", "sign_in"]
