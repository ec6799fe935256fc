"""Jobs in the dashboard, in a real browser on a real stack: the demo job submitted through the
New job form runs to FINISHED while the pages follow it live; its outputs are browsed, viewed
in Monaco and downloaded; a failed job explains itself; a running job is cancelled."""

import re
import zipfile
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from playwright.sync_api import Locator, Page, expect
from support.examples import DIGITS_DIR, digits_job_files, load_script
from support.platform import Platform

from rondo.contracts.database import make_engine
from rondo.gateway.job_logs import JobLogStore

from .dashboard_helpers import Dashboard

DEMO_ROUNDS = 3
JOB_URL = re.compile(r"/jobs/([0-9a-f-]{36})$")
# The training function runs out of memory on the worker, as a too-large batch would on a GPU.
OUT_OF_MEMORY = """

def fl_train_model(payload, out_dir, logger=None):
    raise MemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")
"""


# Uses torch without importing it: the gateway's checks refuse it before anything runs.
UNDEFINED_NAME = """
class Net(torch.nn.Module):
    pass


def fl_train_model(payload, out_dir, logger=None):
    return {}
"""


def state_badge(page: Page) -> Locator:
    return page.locator(".page-header .badge")


def submit_through_the_form(dashboard: Dashboard, name: str, shards: list[Path]) -> str:
    """Fill the three steps of New job and submit; returns the new job's id."""
    page = dashboard.page
    dashboard.open("/jobs/new")
    page.get_by_label("Job name").fill(name)
    page.set_input_files("#file-model_def", DIGITS_DIR / "model_def.py")
    page.set_input_files("#file-requirements", DIGITS_DIR / "requirements.txt")
    page.set_input_files("#file-shards", shards)
    expect(page.locator("[data-field=worker-count]")).to_contain_text("runs on 2 workers")
    dashboard.screenshot("new-job-1-files")

    page.get_by_role("button", name="Next").click()
    page.get_by_label("Rounds").fill(str(DEMO_ROUNDS))
    dashboard.screenshot("new-job-2-config")

    page.get_by_role("button", name="Next").click()
    expect(page.locator("[data-review=shards]")).to_contain_text("2 worker(s)")
    dashboard.screenshot("new-job-3-review")

    page.get_by_role("button", name="Upload and submit").click()
    expect(page).to_have_url(JOB_URL, timeout=30_000)
    found = JOB_URL.search(page.url)
    assert found is not None
    return found[1]


@pytest.mark.timeout(300)
def test_demo_job_from_the_form_runs_to_finished_live_and_its_outputs_open(
    dashboard: Dashboard, platform: Platform, tmp_path: Path
) -> None:
    jobs_tab = dashboard.another_tab(platform.state.user.api_key)
    jobs_tab.mark_document()
    shards = load_script(DIGITS_DIR, "make_shards").make_shards(2, tmp_path)

    job_id = submit_through_the_form(dashboard, "digits-ui", shards)
    page = dashboard.page
    dashboard.mark_document()

    # The Jobs tab hears of the new job, and then of every change, without a reload.
    row = jobs_tab.page.locator(f'tr[data-job-id="{job_id}"]')
    expect(row).to_be_visible()

    expect(state_badge(page)).to_have_text("RUNNING", timeout=120_000)
    expect(page.locator("[data-stat=connected] .value")).to_have_text("2")
    dashboard.screenshot("job-detail-running")

    expect(state_badge(page)).to_have_text("FINISHED", timeout=180_000)
    expect(page.locator("[data-field=round]")).to_have_text(f"Round {DEMO_ROUNDS} / {DEMO_ROUNDS}")
    expect(page.locator("[data-stat=total] .value")).to_have_text("2")
    expect(page.locator(".timeline li strong")).to_have_text(["PENDING", "RUNNING", "FINISHED"])
    charts = page.locator(".chart")
    expect(charts.locator("figcaption > span:first-child")).to_have_text(["loss", "accuracy"])
    expect(charts.first.locator("circle")).to_have_count(DEMO_ROUNDS)
    expect(page.locator(".log-view")).not_to_contain_text("No server log lines here")
    # The outputs become final moments after FINISHED: the page hears it live.
    expect(page.locator("[data-field=outputs]")).to_contain_text("Written", timeout=60_000)
    dashboard.assert_not_reloaded()
    dashboard.screenshot("job-detail-finished")

    expect(row.locator(".badge")).to_have_text("FINISHED")
    expect(row.locator("[data-col=round]")).to_contain_text(f"{DEMO_ROUNDS} / {DEMO_ROUNDS}")
    expect(row.locator("[data-col=workers]")).to_have_text(re.compile(r"^\d/2$"))
    jobs_tab.assert_not_reloaded()
    jobs_tab.screenshot("jobs")

    # Browse Job Files -> files_out/ -> metrics.json in Monaco, read-only.
    page.get_by_role("link", name="Browse Job Files").click()
    expect(page).to_have_url(re.compile(r"/files\?prefix=jobs%2Fdigits-ui%2F$"))
    dashboard.screenshot("files-job-folder")
    page.get_by_role("link", name="files_out/").click()
    expect(page.get_by_role("link", name="metrics.json")).to_be_visible()
    dashboard.screenshot("files-files-out")
    page.get_by_role("link", name="metrics.json").click()
    expect(page.locator(".monaco-editor .view-lines")).to_contain_text('"rounds"')
    editor = page.evaluate(
        """() => {
            const editor = monaco.editor.getEditors()[0];
            return {
                readOnly: editor.getOption(monaco.editor.EditorOption.readOnly),
                language: editor.getModel().getLanguageId(),
                text: editor.getValue(),
            };
        }"""
    )
    assert editor["readOnly"] is True
    assert editor["language"] == "json"
    assert editor["text"] == platform.read("jobs/digits-ui/files_out/metrics.json").decode()
    dashboard.screenshot("viewer-metrics-json")

    # model_out/global_model.pt: each Download asks for a fresh presigned URL.
    page.get_by_role("link", name="digits-ui").click()
    page.get_by_role("link", name="model_out/").click()
    page.get_by_role("link", name="global_model.pt").click()
    expect(page.get_by_text("No preview for .pt files")).to_be_visible()
    dashboard.screenshot("viewer-checkpoint")
    url_requests: list[str] = []
    page.on(
        "request",
        lambda request: (
            url_requests.append(request.url)
            if request.url.endswith("/api/files/download-url")
            else None
        ),
    )
    stored = platform.read("jobs/digits-ui/model_out/global_model.pt")
    for _ in range(2):
        with page.expect_download() as download:
            page.get_by_role("button", name="Download").click()
        assert Path(download.value.path()).read_bytes() == stored
    assert len(url_requests) == 2

    dashboard.assert_no_console_errors()
    jobs_tab.assert_no_console_errors()


@pytest.mark.timeout(180)
def test_failed_job_shows_its_message_cause_and_hint(
    dashboard: Dashboard, platform: Platform, tmp_path: Path
) -> None:
    files = digits_job_files(tmp_path)
    model_def = (DIGITS_DIR / "model_def.py").read_text() + OUT_OF_MEMORY
    files["scripts/model_def.py"] = model_def.encode()
    platform.upload_job("oom-ui", files)
    response = platform.submit("oom-ui", num_rounds=2)
    assert response.status_code == 201, response.text

    page = dashboard.page
    dashboard.open(f"/jobs/{response.json()['id']}")
    expect(state_badge(page)).to_have_text("FAILED", timeout=150_000)
    failure = page.locator("[data-failure]")
    expect(failure.locator("[data-field=message]")).to_contain_text("out of memory")
    expect(failure.locator("[data-field=cause]")).to_have_text("Out of memory")
    expect(failure.locator("[data-field=hint]")).to_contain_text("lower batch_size")
    expect(page.get_by_role("link", name="Browse Job Files")).to_be_visible()
    expect(page.get_by_role("button", name="Cancel")).to_have_count(0)
    expect(page.locator(".log-view")).not_to_contain_text("No server log lines here")
    dashboard.screenshot("job-detail-failed")

    # Once the gateway deleted the ended job's lines, the log panel leads to the complete log
    # that artifacts wrote into the bucket.
    engine = make_engine(platform.state.databases["gateway"])
    try:
        assert JobLogStore(engine).prune(datetime.now(UTC) + timedelta(days=1)) > 0
    finally:
        engine.dispose()
    assert not platform.wait_for_objects({"jobs/oom-ui/files_out/server.log"})
    page.reload()
    expect(page.locator(".log-view")).to_contain_text("No server log lines here")
    page.get_by_role("link", name="Complete log file").click()
    expect(page).to_have_url(
        re.compile(r"/files/view\?key=jobs%2Foom-ui%2Ffiles_out%2Fserver\.log")
    )
    expect(page.locator(".monaco-editor .view-lines")).to_contain_text("server")
    dashboard.assert_no_console_errors()


@pytest.mark.timeout(180)
def test_cancel_from_the_job_page_after_confirming(
    dashboard: Dashboard, platform: Platform, tmp_path: Path
) -> None:
    platform.upload_job("cancel-ui", digits_job_files(tmp_path))
    response = platform.submit("cancel-ui", num_rounds=500)
    assert response.status_code == 201, response.text

    page = dashboard.page
    dashboard.open(f"/jobs/{response.json()['id']}")
    expect(state_badge(page)).to_have_text("RUNNING", timeout=120_000)

    page.get_by_role("button", name="Cancel").click()
    dialog = page.get_by_role("dialog")
    expect(dialog).to_contain_text("ends CANCELLED")
    dashboard.screenshot("job-detail-cancel-dialog")
    page.keyboard.press("Escape")  # backing out changes nothing
    expect(dialog).to_have_count(0)
    expect(state_badge(page)).to_have_text("RUNNING")

    page.get_by_role("button", name="Cancel").click()
    dialog.get_by_role("button", name="Cancel job").click()
    expect(state_badge(page)).to_have_text("CANCELLED", timeout=60_000)
    expect(page.get_by_role("link", name="Browse Job Files")).to_be_visible()
    assert platform.job(response.json()["id"])["state"] == "CANCELLED"
    dashboard.assert_no_console_errors()


def test_new_job_form_shows_each_problem_the_api_finds_next_to_its_file(
    dashboard: Dashboard, platform: Platform, tmp_path: Path
) -> None:
    model_def = tmp_path / "model_def.py"
    model_def.write_text(UNDEFINED_NAME)
    shard = tmp_path / "shard_0.zip"
    with zipfile.ZipFile(shard, "w") as archive:
        archive.writestr("data/sample.txt", "no manifest at the root")

    page = dashboard.page
    dashboard.open("/jobs/new")
    page.get_by_label("Job name").fill("broken-ui")
    page.set_input_files("#file-model_def", model_def)
    page.set_input_files("#file-shards", shard)  # no requirements.txt: an empty one goes up
    page.get_by_role("button", name="Next").click()
    page.get_by_role("button", name="Next").click()
    page.get_by_role("button", name="Upload and submit").click()

    expect(page.get_by_role("alert").first).to_contain_text("The job was not submitted")
    expect(page.locator("[data-review=model_def] .field-error")).to_contain_text(
        "name 'torch' is not defined"
    )
    expect(page.locator("[data-review=shards] .field-error")).to_contain_text("manifest.ndjson")
    expect(page.locator("[data-review=requirements] .field-error")).to_have_count(0)
    dashboard.screenshot("new-job-refused")

    page.get_by_role("button", name="Back").click()
    page.get_by_role("button", name="Back").click()
    expect(page.locator("[data-slot=model_def] .field-error")).to_contain_text("torch")
    expect(page.locator("[data-slot=shards] .field-error")).to_contain_text("manifest.ndjson")
    assert all(job["name"] != "broken-ui" for job in platform.api.get("/api/jobs").json()["items"])
    dashboard.assert_no_console_errors("status of 400")
