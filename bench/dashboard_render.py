"""Time to first render of the dashboard's Jobs page for a user with many jobs (500).

Starts a local stack (`rondo up`, one worker) in a temporary folder, stores the jobs for its
default user straight into the gateway's database as `api_latency.py` does (the read model the
page lists; submitting 500 real jobs would measure the scheduler instead), then opens /jobs in
Debian's headless Chromium again and again. For each load it records, in the page, how long
after navigation start the first page of rows was in the document, and prints the median and
the worst.

    .venv/bin/python bench/dashboard_render.py [--jobs 500] [--loads 10]
"""

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path

from api_latency import store_jobs
from playwright.sync_api import Page, sync_playwright

# The stack and browser helpers of the test suite: one way to start both.
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from support.browser import launch_chromium
from support.platform import running_platform

from rondo.gateway.config import GatewaySettings

# Runs in the page before its own scripts: notes when the first job row is in the document.
RECORD_FIRST_ROWS = """
new MutationObserver((_, observer) => {
    if (document.querySelector('table[aria-label="Jobs"] tbody tr')) {
        window.__firstRowsMs = performance.now();
        observer.disconnect();
    }
}).observe(document, { childList: true, subtree: true });
"""


def first_render_ms(page: Page, url: str) -> float:
    page.goto(url)
    page.wait_for_selector('table[aria-label="Jobs"] tbody tr')
    return float(page.evaluate("window.__firstRowsMs"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=500)
    parser.add_argument("--loads", type=int, default=10)
    args = parser.parse_args()

    with (
        tempfile.TemporaryDirectory(prefix="rondo-bench-") as folder,
        running_platform(Path(folder), workers=1) as platform,
    ):
        user = platform.state.user
        assert user.user_id is not None, "rondo up did not record the default user's id"
        gateway = GatewaySettings(gateway_database_url=platform.state.databases["gateway"])
        store_jobs(gateway, user.user_id, user.bucket, args.jobs)
        with sync_playwright() as playwright:
            browser = launch_chromium(playwright)
            context = browser.new_context(viewport={"width": 1280, "height": 800})
            key = platform.state.user.api_key
            context.add_init_script(f"sessionStorage.setItem('rondo.apiKey', {json.dumps(key)});")
            context.add_init_script(RECORD_FIRST_ROWS)
            page = context.new_page()
            url = f"{platform.state.gateway_url}/jobs"
            first_render_ms(page, url)  # warm-up: caches, Python's lazy imports
            samples = [first_render_ms(page, url) for _ in range(args.loads)]
            rows = page.locator('table[aria-label="Jobs"] tbody tr').count()
            browser.close()

    print(
        f"Jobs page, {args.jobs} jobs ({rows} rows on the first page), time to first render "
        f"over {args.loads} loads: median {statistics.median(samples):.0f} ms, "
        f"max {max(samples):.0f} ms"
    )


if __name__ == "__main__":
    main()
