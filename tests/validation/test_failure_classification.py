"""`classify` on the error texts agents really send: their own errors, a process exit with its
log tail, and a run's end with each site's exception (texts as seen on a real stack)."""

import pytest

from rondo.contracts.events import FailureCause
from rondo.scheduler.failures import HINTS, classify

RUN_ENDED = (
    "Result from site-0-0 is bad, error code: EXECUTION_EXCEPTION. ScatterAndGather exiting at "
    "round 0.\nsite-0-0: {}"
)
# NVFlare's own log lines mention timeouts, files and NCCL settings in passing.
NOISY_TAIL = (
    "client process exited with code {}; last log lines:\n"
    "2026-11-25 INFO heart_beat_timeout=10.0 timed out waiting is not an error here\n"
    "2026-11-25 INFO looking for NCCL_SOCKET_IFNAME: No such file or directory\n"
    "2026-11-25 ERROR {}"
)


@pytest.mark.parametrize(
    ("text", "cause"),
    [
        (
            RUN_ENDED.format(
                "RuntimeError: [enforce fail at alloc_cpu.cpp:127] err == 0. DefaultCPUAllocator: "
                "can't allocate memory: you tried to allocate 2147483648 bytes. Error code 12 "
                "(Cannot allocate memory)"
            ),
            FailureCause.OOM,
        ),
        (RUN_ENDED.format("MemoryError: "), FailureCause.OOM),
        (
            RUN_ENDED.format(
                "OutOfMemoryError: CUDA out of memory. Tried to allocate 20.00 GiB (GPU 0)"
            ),
            FailureCause.OOM,
        ),
        ("client process exited with code -9; last log lines:\nepoch 1", FailureCause.OOM),
        (RUN_ENDED.format("NameError: name 'nnx' is not defined"), FailureCause.NAME_NOT_DEFINED),
        (
            "shard jobs/j/shards/shard_0.zip: manifest.ndjson missing at the ZIP root (found at "
            "'digits/manifest.ndjson'); re-zip so manifest.ndjson is at the root",
            FailureCause.MANIFEST_MISSING,
        ),
        (
            RUN_ENDED.format("FileNotFoundError: manifest.ndjson not found at the shard root"),
            FailureCause.MANIFEST_MISSING,
        ),
        (
            "Missing file: s3://rondo-default/jobs/j/shards/shard_0.zip does not exist",
            FailureCause.MISSING_FILE,
        ),
        (
            "shard jobs/j/shards/shard_0.zip: not found in the bucket (HTTP 404)",
            FailureCause.MISSING_FILE,
        ),
        (
            RUN_ENDED.format("FileNotFoundError: [Errno 2] No such file or directory: 'x.csv'"),
            FailureCause.MISSING_FILE,
        ),
        (
            "installing requirements.txt took longer than 5 s:\nCollecting hang @ "
            "http://127.0.0.1:1/hang-1.0-py3-none-any.whl",
            FailureCause.WORKER_TIMEOUT,
        ),
        (
            "the run did not start within 120 s; still waiting for worker 0 (site-0-0 on a)",
            FailureCause.WORKER_TIMEOUT,
        ),
        (
            RUN_ENDED.format("RuntimeError: NCCL error in: ProcessGroupNCCL.cpp:1269, unhandled"),
            FailureCause.NCCL_ERROR,
        ),
    ],
)
def test_real_error_texts_name_their_cause(text: str, cause: FailureCause) -> None:
    failure = classify(text)
    assert failure.cause == cause, text
    assert failure.hint == HINTS[cause]


def test_the_error_wins_over_words_in_the_log_tail() -> None:
    crash = classify(NOISY_TAIL.format(1, "NameError: name 'torch' is not defined"))
    assert crash.cause == FailureCause.NAME_NOT_DEFINED
    oom = classify(NOISY_TAIL.format(-9, "round 3 started"))
    assert oom.cause == FailureCause.OOM
    # Without a signal in the error itself, the log line nearest the end decides.
    assert classify(NOISY_TAIL.format(1, "epoch 2 done")).cause == FailureCause.MISSING_FILE


def test_anything_else_is_other_with_its_last_lines() -> None:
    failure = classify(RUN_ENDED.format("ValueError: label 12 is out of range"))
    assert failure.cause == FailureCause.OTHER
    assert failure.hint == (
        "last lines: Result from site-0-0 is bad, error code: EXECUTION_EXCEPTION. "
        "ScatterAndGather exiting at round 0. | site-0-0: ValueError: label 12 is out of range"
    )
    assert classify(None).cause == FailureCause.OTHER
    assert classify("").hint == "see the job's logs"
