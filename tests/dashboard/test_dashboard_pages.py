"""Sign-in, the Workers page, and the Files page's uploads and deletes, in a real browser."""

import io
import re

from PIL import Image
from playwright.sync_api import expect
from support.platform import Platform

from .dashboard_helpers import Dashboard


def test_sign_in_refuses_a_wrong_key_then_signs_in_and_out(
    anonymous: Dashboard, platform: Platform
) -> None:
    page = anonymous.page
    anonymous.open("/jobs")
    expect(page).to_have_url(re.compile(r"/signin\?next=%2Fjobs$"))
    anonymous.screenshot("signin")

    page.get_by_label("API key").fill("rsk_live_" + "x" * 40)
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("alert")).to_contain_text("unknown or revoked")

    page.get_by_label("API key").fill(platform.state.user.api_key)
    page.get_by_role("button", name="Sign in").click()
    expect(page).to_have_url(re.compile(r"/jobs$"))
    expect(page.get_by_role("heading", name="Jobs", exact=True)).to_be_visible()
    assert page.evaluate("sessionStorage.getItem('rondo.apiKey')") == platform.state.user.api_key

    page.get_by_role("button", name="Sign out").click()
    expect(page).to_have_url(re.compile(r"/signin$"))
    assert page.evaluate("sessionStorage.getItem('rondo.apiKey')") is None
    anonymous.assert_no_console_errors("status of 401")


def test_workers_page_lists_every_online_worker(dashboard: Dashboard, platform: Platform) -> None:
    page = dashboard.page
    dashboard.open("/workers")
    for agent in platform.state.agents:
        row = page.locator(f'tr[data-agent-id="{agent.agent_id}"]')
        expect(row.locator(".badge")).to_have_text("Online")
        expect(row).to_contain_text("free of")
    expect(page.get_by_role("group", name="Fleet")).to_contain_text(
        f"{len(platform.state.agents)}Online"
    )
    dashboard.screenshot("workers")
    dashboard.assert_no_console_errors()


# Both uploads of the Files page: one presigned PUT, and S3 multipart (over 50 MiB: 2 parts).
DROP_FILES = """async (bigSize) => {
    const big = new Uint8Array(bigSize);
    for (let i = 0; i < bigSize; i += 1) big[i] = i % 251;
    const transfer = new DataTransfer();
    const notes = new File(["hello from the dashboard\\n"], "notes.txt", { type: "text/plain" });
    transfer.items.add(notes);
    transfer.items.add(new File([big], "big.bin"));
    const zone = document.querySelector(".dropzone");
    for (const type of ["dragenter", "dragover", "drop"]) {
        zone.dispatchEvent(new DragEvent(type, { dataTransfer: transfer, bubbles: true }));
    }
}"""
BIG_SIZE = 51 * 1024 * 1024


def test_files_page_uploads_dropped_files_and_deletes_after_confirming(
    dashboard: Dashboard, platform: Platform
) -> None:
    page = dashboard.page
    dashboard.open("/files?prefix=uploads/")
    expect(page.get_by_text("This folder is empty")).to_be_visible()

    page.evaluate(DROP_FILES, BIG_SIZE)
    expect(page.locator(".upload-row.done")).to_have_count(2, timeout=60_000)
    expect(page.get_by_role("link", name="big.bin")).to_be_visible()
    assert platform.read("uploads/notes.txt") == b"hello from the dashboard\n"
    pattern = bytes(range(251))
    expected = (pattern * (BIG_SIZE // len(pattern) + 1))[:BIG_SIZE]
    assert platform.read("uploads/big.bin") == expected
    dashboard.screenshot("files-uploaded")

    page.get_by_role("button", name="Delete notes.txt").click()
    dialog = page.get_by_role("dialog")
    expect(dialog).to_contain_text("uploads/notes.txt is removed from your bucket")
    dialog.get_by_role("button", name="Delete").click()
    expect(page.get_by_role("link", name="notes.txt")).to_have_count(0)
    assert set(platform.objects("uploads/")) == {"uploads/big.bin"}

    page.get_by_role("link", name="Bucket").click()
    expect(page.get_by_role("link", name="uploads/")).to_be_visible()
    dashboard.screenshot("files-bucket")
    dashboard.assert_no_console_errors()


def test_viewer_caps_a_large_text_file_and_previews_an_image(
    dashboard: Dashboard, platform: Platform
) -> None:
    platform.s3.put_object(Bucket=platform.bucket, Key="viewer/big.log", Body=b"a line\n" * 300_000)
    image = io.BytesIO()
    Image.new("RGB", (48, 32), "#4f46e5").save(image, format="PNG")
    platform.s3.put_object(Bucket=platform.bucket, Key="viewer/logo.png", Body=image.getvalue())

    page = dashboard.page
    dashboard.open("/files/view?key=viewer/big.log")
    expect(page.locator("[data-truncated]")).to_contain_text("of 2.0 MiB")
    expect(page.locator(".monaco-editor .view-lines")).to_contain_text("a line")
    assert page.evaluate("monaco.editor.getEditors()[0].getModel().getLanguageId()") == "plaintext"
    dashboard.screenshot("viewer-large-log")

    dashboard.open("/files/view?key=viewer/logo.png")
    preview = page.get_by_role("img", name="logo.png")
    expect(preview).to_be_visible()
    assert preview.evaluate("img => img.naturalWidth") == 48
    dashboard.screenshot("viewer-image")
    dashboard.assert_no_console_errors()
