"""Why a job failed, in the user's terms: the cause and hint table of the product spec."""

import re
from dataclasses import dataclass

from rondo.contracts.events import FailureCause

HINTS: dict[FailureCause, str] = {
    FailureCause.WORKER_TIMEOUT: "check imports and requirements.txt; check the shard",
    FailureCause.OOM: "lower batch_size, or ask for more GPU memory",
    FailureCause.MISSING_FILE: "upload it; the message names the exact key",
    FailureCause.NCCL_ERROR: "transient; resubmit",
    FailureCause.NAME_NOT_DEFINED: "put every import in model_def.py",
    FailureCause.MANIFEST_MISSING: "re-zip so manifest.ndjson is at the root",
    FailureCause.VALIDATION: "fix the job and submit it again",
}

# Checked in order: the first pattern found in the error text names the cause. The manifest
# comes before missing files ("manifest.ndjson not found" is about the shard's layout).
_PATTERNS: tuple[tuple[FailureCause, re.Pattern[str]], ...] = (
    (FailureCause.MANIFEST_MISSING, re.compile(r"manifest\.ndjson", re.I)),
    (FailureCause.NAME_NOT_DEFINED, re.compile(r"\bNameError\b|name '[^']+' is not defined")),
    (
        FailureCause.OOM,
        re.compile(
            r"CUDA out of memory|OutOfMemoryError|\bMemoryError\b|killed by signal 9|"
            r"signal 9\b|SIGKILL|exit(?:ed with)? code (?:-9|137)\b|oom[- ]kill",
            re.I,
        ),
    ),
    (FailureCause.NCCL_ERROR, re.compile(r"\bNCCL\b|ncclInternalError|ProcessGroupNCCL", re.I)),
    (
        FailureCause.MISSING_FILE,
        re.compile(r"NoSuchKey|NoSuchBucket|FileNotFoundError|No such file|Missing file", re.I),
    ),
    (
        FailureCause.WORKER_TIMEOUT,
        re.compile(r"timed? ?out|TimeoutError|deadline exceeded|no heartbeat", re.I),
    ),
)

LAST_LINES = 3


@dataclass(frozen=True)
class Failure:
    cause: FailureCause
    hint: str


def classify(error_text: str | None) -> Failure:
    """The cause and hint for an error text (a process's error with its last log lines).

    Unrecognised errors are `other`, and their hint quotes the last lines of the text.
    """
    text = error_text or ""
    for cause, pattern in _PATTERNS:
        if pattern.search(text):
            return Failure(cause, HINTS[cause])
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    tail = " | ".join(lines[-LAST_LINES:])
    return Failure(FailureCause.OTHER, f"last lines: {tail}" if tail else "see the job's logs")
