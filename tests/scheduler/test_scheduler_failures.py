"""classify(): the spec's failure causes and hints."""

import pytest

from rondo.contracts.events import FailureCause
from rondo.scheduler.failures import HINTS, classify


@pytest.mark.parametrize(
    ("text", "cause"),
    [
        ("torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2 GiB", FailureCause.OOM),
        ("Traceback ...\nMemoryError", FailureCause.OOM),
        ("client process killed by signal 9", FailureCause.OOM),
        ("NameError: name 'torch' is not defined", FailureCause.NAME_NOT_DEFINED),
        (
            "shard_1.zip rejected: manifest.ndjson is not at the ZIP root",
            FailureCause.MANIFEST_MISSING,
        ),
        ("RuntimeError: NCCL error in: ProcessGroupNCCL.cpp:1269", FailureCause.NCCL_ERROR),
        ("botocore NoSuchKey: jobs/a/shards/shard_0.zip", FailureCause.MISSING_FILE),
        (
            "FileNotFoundError: [Errno 2] No such file or directory: 'x.csv'",
            FailureCause.MISSING_FILE,
        ),
        ("pip install timed out after 600 s", FailureCause.WORKER_TIMEOUT),
    ],
)
def test_known_causes(text: str, cause: FailureCause) -> None:
    failure = classify(text)
    assert failure.cause == cause
    assert failure.hint == HINTS[cause]


def test_manifest_wins_over_missing_file() -> None:
    assert classify("FileNotFoundError: manifest.ndjson").cause == FailureCause.MANIFEST_MISSING


def test_other_quotes_the_last_lines() -> None:
    failure = classify("Traceback (most recent call last):\n  line 1\n  line 2\nValueError: bad\n")
    assert failure.cause == FailureCause.OTHER
    assert failure.hint == "last lines: line 1 | line 2 | ValueError: bad"
    assert classify(None).cause == FailureCause.OTHER
