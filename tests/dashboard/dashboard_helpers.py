"""Driving the dashboard in headless Chromium: signing in, console errors, screenshots."""

from dataclasses import dataclass, field
from pathlib import Path

from playwright.sync_api import ConsoleMessage, Error, Page, expect

SCREENSHOTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "screenshots"
DESKTOP = {"width": 1280, "height": 800}
PHONE = {"width": 390, "height": 844}
# Monaco lays itself out on the next animation frame after a resize.
RELAYOUT_MS = 300


@dataclass
class Dashboard:
    """One browser tab on the dashboard, recording every error its console reports."""

    page: Page
    base_url: str
    console_errors: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.page.on("console", self._on_console)
        self.page.on("pageerror", self._on_page_error)

    def _on_console(self, message: ConsoleMessage) -> None:
        if message.type == "error":
            self.console_errors.append(f"{message.text} ({message.location.get('url')})")

    def _on_page_error(self, error: Error) -> None:
        self.console_errors.append(f"uncaught: {error.message}")

    def open(self, path: str) -> None:
        self.page.goto(self.base_url + path)

    def sign_in(self, api_key: str) -> None:
        self.open("/signin")
        self.page.get_by_label("API key").fill(api_key)
        self.page.get_by_role("button", name="Sign in").click()
        expect(self.page.get_by_role("heading", name="Jobs", exact=True)).to_be_visible()

    def another_tab(self, api_key: str) -> "Dashboard":
        """A second signed-in tab in the same browser (session storage is per tab)."""
        tab = Dashboard(page=self.page.context.new_page(), base_url=self.base_url)
        tab.sign_in(api_key)
        return tab

    def screenshot(self, name: str) -> None:
        """Save the whole page at 1280 px and at phone width: `<name>-1280.png`, `-phone.png`."""
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        # From the top: a page scrolled by the test would draw its sticky sidebar mid-page.
        self.page.evaluate("window.scrollTo(0, 0)")
        for label, viewport in (("1280", DESKTOP), ("phone", PHONE)):
            self.page.set_viewport_size(viewport)
            self.page.wait_for_timeout(RELAYOUT_MS)
            self.page.screenshot(path=SCREENSHOTS / f"{name}-{label}.png", full_page=True)
        self.page.set_viewport_size(DESKTOP)

    def mark_document(self) -> None:
        """Tag the loaded document; `assert_not_reloaded` fails if the page loads again."""
        self.page.evaluate("window.__rondoTestMark = true")

    def assert_not_reloaded(self) -> None:
        assert self.page.evaluate("window.__rondoTestMark === true"), "the page was reloaded"

    def assert_no_console_errors(self, *expected: str) -> None:
        """No console error, except those containing one of `expected`."""
        unexpected = [e for e in self.console_errors if not any(x in e for x in expected)]
        assert not unexpected, unexpected
