"""Gateway API pieces without servers: object key checks, the per-key token bucket, the
hosted task's folder paths, default bucket names."""

import pytest

from rondo.gateway.compat import CompatTaskCreate, task_job_name
from rondo.gateway.errors import ApiError
from rondo.gateway.rate_limit import TokenBucketLimiter
from rondo.gateway.user_files import check_key
from rondo.gateway.users import BUCKET_PATTERN, default_bucket


@pytest.mark.parametrize(
    "key", ["", "/jobs/a", "jobs/../b", "..", "a/\x00", "a\tb", "a\x7f", "k" * 1025]
)
def test_unsafe_keys_are_refused(key: str) -> None:
    with pytest.raises(ApiError) as refused:
        check_key(key)
    assert (refused.value.status_code, refused.value.body.code) == (400, "invalid_key")


def test_safe_keys_pass_unchanged() -> None:
    for key in ("jobs/a/files_out/client_0/round_1/out.txt", "é/ü.txt", "a b/c.d"):
        assert check_key(key) == key
    assert check_key("", allow_empty=True) == ""


def test_token_bucket_allows_a_burst_then_the_rate() -> None:
    now = [0.0]
    limiter = TokenBucketLimiter(rate_per_s=2.0, burst=3, clock=lambda: now[0])
    assert [limiter.acquire("k") for _ in range(3)] == [0.0, 0.0, 0.0]
    assert limiter.acquire("k") == pytest.approx(0.5)
    assert limiter.acquire("other") == 0.0  # per key
    now[0] = 0.5
    assert limiter.acquire("k") == 0.0
    with pytest.raises(ApiError) as limited:
        limiter.check("k")
    assert limited.value.status_code == 429
    assert limited.value.headers == {"Retry-After": "1"}


def _task(**paths: str) -> CompatTaskCreate:
    fields = {
        "name": "My Job",
        "shardsDirPath": "/jobs/my-job/shards",
        "trainingScriptsFolderPath": "/jobs/my-job/scripts/",
        "trainingConfigFolderPath": "jobs/my-job/configs",
        "trainingRequirementsFolderPath": "/jobs/my-job/requirements",
    }
    return CompatTaskCreate.model_validate({**fields, **paths})


def test_hosted_task_paths_name_one_job_folder() -> None:
    assert task_job_name(_task()) == "my-job"
    assert task_job_name(_task(modelFolderPath="/jobs/my-job/model")) == "my-job"
    for bad in (
        {"shardsDirPath": "/jobs/other/shards"},
        {"shardsDirPath": "/jobs/my-job/data"},
        {"trainingScriptsFolderPath": "/scripts"},
        {
            "shardsDirPath": "/jobs/My Job/shards",
            "trainingScriptsFolderPath": "/jobs/My Job/scripts",
            "trainingConfigFolderPath": "/jobs/My Job/configs",
            "trainingRequirementsFolderPath": "/jobs/My Job/requirements",
        },
    ):
        with pytest.raises(ApiError) as refused:
            task_job_name(_task(**bad))
        assert refused.value.body.code == "invalid_task_paths"


def test_default_buckets_are_valid_bucket_names() -> None:
    assert default_bucket("Erin.Ops@lab") == "rondo-erin-ops-lab"
    assert all(BUCKET_PATTERN.match(default_bucket(name)) for name in ("a", "X" * 64, "a_b"))
