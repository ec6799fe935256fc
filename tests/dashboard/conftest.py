"""The dashboard against a real local stack (`rondo up`), in Debian's headless Chromium."""

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from playwright.sync_api import Browser, sync_playwright
from support.browser import launch_chromium
from support.platform import Platform, running_platform

from .dashboard_helpers import DESKTOP, Dashboard


@pytest.fixture(scope="package")
def platform(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Platform]:
    with running_platform(Path(tmp_path_factory.mktemp("dashboard-platform"))) as platform:
        yield platform


@pytest.fixture(scope="package")
def browser(platform: Platform) -> Iterator[Browser]:
    """Chromium, started after the platform and closed before it: while Playwright's sync API
    runs, its event loop is this thread's running loop, and `rondo up`/`down` call
    `asyncio.run`, which refuses to start inside one."""
    with sync_playwright() as playwright:
        browser = launch_chromium(playwright)
        yield browser
        browser.close()


@contextmanager
def open_tab(browser: Browser, platform: Platform) -> Iterator[Dashboard]:
    """A new browser context (own session storage, so no shared sign-in) and its one tab."""
    context = browser.new_context(viewport=DESKTOP, accept_downloads=True)
    try:
        yield Dashboard(page=context.new_page(), base_url=platform.state.gateway_url)
    finally:
        context.close()


@pytest.fixture
def anonymous(browser: Browser, platform: Platform) -> Iterator[Dashboard]:
    """A fresh browser tab, not signed in."""
    with open_tab(browser, platform) as tab:
        yield tab


@pytest.fixture
def dashboard(browser: Browser, platform: Platform) -> Iterator[Dashboard]:
    """A browser tab signed in as the stack's default user (through the sign-in page)."""
    with open_tab(browser, platform) as tab:
        tab.sign_in(platform.state.user.api_key)
        yield tab
