"""Each runtime failure cause produced for real on a real stack, classified with the spec's hint;
a failed job leaves every object the user uploaded as it was."""

import socket
from collections.abc import Callable, Iterator

import pytest
from support.job_files import model_def, shard
from support.platform import Platform

from rondo.contracts.events import FailureCause
from rondo.contracts.states import JobState

from .conftest import MEMORY_LIMIT_MB, REQUIREMENTS_TIMEOUT_S

OUTPUTS = ("files_out/", "model_out/")
HINTS = {
    FailureCause.OOM: "lower batch_size, or ask for more GPU memory",
    FailureCause.NAME_NOT_DEFINED: "put every import in model_def.py",
    FailureCause.WORKER_TIMEOUT: "check imports and requirements.txt; check the shard",
    FailureCause.MISSING_FILE: "upload it; the message names the exact key",
    FailureCause.MANIFEST_MISSING: "re-zip so manifest.ndjson is at the root",
}


def job_files(
    train_body: bytes = b"", requirements: bytes = b"", module_tail: bytes = b""
) -> dict[str, bytes]:
    return {
        "scripts/model_def.py": model_def(train_body) + module_tail,
        "requirements/requirements.txt": requirements,
        "shards/shard_0.zip": shard("a", "b"),
    }


def user_files(platform: Platform, name: str) -> dict[str, str]:
    """The job folder's objects (key -> ETag) that are not outputs."""
    prefix = f"jobs/{name}/"
    return {
        key: etag
        for key, etag in platform.objects(prefix).items()
        if not key.removeprefix(prefix).startswith(OUTPUTS)
    }


def run_until_failed(
    platform: Platform,
    name: str,
    files: dict[str, bytes],
    after_submit: Callable[[], None] = lambda: None,
    timing: dict[str, float] | None = None,
) -> dict[str, str]:
    """Upload, submit (accepted), run `after_submit`, wait for FAILED; returns the job's error.
    The user's files are then as they were after `after_submit`, and no NVFlare process is
    left."""
    platform.upload_job(name, files)
    response = platform.submit(name, timing=timing, num_rounds=1)
    assert response.status_code == 201, response.text
    after_submit()
    uploaded = user_files(platform, name)

    job = platform.wait_for_state(response.json()["id"], timeout_s=120)

    assert job["state"] == JobState.FAILED, job
    assert user_files(platform, name) == uploaded, "a failed job changed the user's files"
    assert not platform.wait_no_nvflare_processes(), "NVFlare processes outlived the job"
    return dict(job["error"])


def assert_cause(error: dict[str, str], cause: FailureCause, *in_message: str) -> None:
    assert error["cause"] == cause, error
    assert error["hint"] == HINTS[cause], error
    for text in in_message:
        assert text in error["message"], error


@pytest.mark.timeout(180)
def test_allocating_past_the_memory_limit_is_oom(platform: Platform) -> None:
    hog_mb = 2 * MEMORY_LIMIT_MB
    train = f"    hog = torch.ones({hog_mb} * 1024 * 256)  # {hog_mb} MB of float32\n".encode()

    error = run_until_failed(platform, "fail-oom", job_files(train))

    assert_cause(error, FailureCause.OOM, "site-0-0", "can't allocate memory")


@pytest.mark.timeout(180)
def test_a_name_error_the_static_check_cannot_see_is_name_not_defined(
    platform: Platform,
) -> None:
    train = b'    layer = eval("nn" + "x.Linear(4, 1)")  # `nnx` exists only at run time\n'

    error = run_until_failed(platform, "fail-name", job_files(train))

    assert_cause(error, FailureCause.NAME_NOT_DEFINED, "NameError: name 'nnx' is not defined")


@pytest.fixture
def silent_url() -> Iterator[str]:
    """A wheel URL on a server that accepts connections and never answers."""
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(16)
        yield f"http://127.0.0.1:{server.getsockname()[1]}/hang-1.0-py3-none-any.whl"


@pytest.mark.timeout(180)
def test_a_requirements_install_that_hangs_is_a_worker_timeout(
    platform: Platform, silent_url: str
) -> None:
    requirements = f"hang @ {silent_url}\n".encode()

    error = run_until_failed(platform, "fail-hang", job_files(requirements=requirements))

    limit = f"took longer than {REQUIREMENTS_TIMEOUT_S} s"
    assert_cause(error, FailureCause.WORKER_TIMEOUT, "installing requirements.txt", limit)


@pytest.mark.timeout(180)
def test_a_model_def_import_that_hangs_is_a_worker_timeout(platform: Platform) -> None:
    hang = b"\nimport time\n\ntime.sleep(3600)  # waits for something that never comes\n"

    error = run_until_failed(
        platform, "fail-import", job_files(module_tail=hang), timing={"import_limit_s": 3}
    )

    assert_cause(error, FailureCause.WORKER_TIMEOUT, "importing model_def.py took longer than 3 s")


@pytest.mark.timeout(180)
def test_a_shard_deleted_after_submit_is_a_missing_file(platform: Platform) -> None:
    key = "jobs/fail-deleted/shards/shard_0.zip"

    error = run_until_failed(
        platform,
        "fail-deleted",
        job_files(),
        after_submit=lambda: platform.s3.delete_object(Bucket=platform.bucket, Key=key),
    )

    assert_cause(error, FailureCause.MISSING_FILE, key)


@pytest.mark.timeout(180)
def test_a_shard_rezipped_in_a_folder_after_submit_is_manifest_missing(
    platform: Platform,
) -> None:
    key = "jobs/fail-rezipped/shards/shard_0.zip"

    def rezip() -> None:
        body = shard("a", "b", folder="digits/")
        platform.s3.put_object(Bucket=platform.bucket, Key=key, Body=body)

    error = run_until_failed(platform, "fail-rezipped", job_files(), after_submit=rezip)

    assert_cause(error, FailureCause.MANIFEST_MISSING, key, "digits/manifest.ndjson")


@pytest.mark.timeout(180)
def test_any_other_error_is_other_with_its_last_lines(platform: Platform) -> None:
    train = b'    raise ValueError("label 12 is out of range for 10 classes")\n'

    error = run_until_failed(platform, "fail-other", job_files(train))

    assert error["cause"] == FailureCause.OTHER, error
    assert error["hint"].startswith("last lines: ")
    assert "ValueError: label 12 is out of range for 10 classes" in error["hint"]
