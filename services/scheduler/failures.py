"""Why a job failed, in the user's terms: the cause and hint table of the product spec.

The error text of a failure comes from the agents: a process's error (a rejected shard, a
download, a requirements install that timed out), a process exit with its last log lines, or
an NVFlare run's end with each site's exception. `classify` looks for the causes' signals in
its first line, then in the text above the log tail, then in the log tail from its last line
up: the line nearest the crash decides, not a word an earlier log line used in passing.
"""

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

# Where an agent's error text starts quoting a process's log (`RunManager`).
LOG_TAIL_MARKER = "last log lines:"

# Checked in this order within each part of the text: the first match names the cause. The
# manifest comes before missing files ("FileNotFoundError: manifest.ndjson" is the shard's
# layout), a NameError before memory (a NameError's traceback may quote allocation code).
_SIGNALS: tuple[tuple[FailureCause, re.Pattern[str]], ...] = (
    (
        FailureCause.MANIFEST_MISSING,
        re.compile(
            r"manifest\.ndjson\W+(?:is\s+)?(?:missing|not\s+(?:found|at))"
            r"|(?:FileNotFoundError|No such file or directory)\b.*manifest\.ndjson",
            re.I,
        ),
    ),
    (FailureCause.NAME_NOT_DEFINED, re.compile(r"\bNameError\b|name '[^']+' is not defined")),
    (
        FailureCause.OOM,
        re.compile(
            r"CUDA out of memory|OutOfMemoryError|\bMemoryError\b|can't allocate memory"
            r"|Cannot allocate memory|Unable to allocate|std::bad_alloc|oom[- _]?kill"
            r"|killed by signal 9\b|exited with code (?:-9|137)\b",
            re.I,
        ),
    ),
    (FailureCause.NCCL_ERROR, re.compile(r"\bNCCL\b|nccl\w*Error|ProcessGroupNCCL", re.I)),
    (
        FailureCause.MISSING_FILE,
        re.compile(
            r"NoSuchKey|NoSuchBucket|FileNotFoundError|No such file or directory|Missing file"
            r"|not found in the bucket",
            re.I,
        ),
    ),
    (
        FailureCause.WORKER_TIMEOUT,
        re.compile(
            r"took longer than|timed out|TimeoutError|deadline exceeded|no heartbeat"
            r"|stopped sending heartbeats|did not start within|no round completed within"
            r"|not registered in time",
            re.I,
        ),
    ),
)

LAST_LINES = 3


@dataclass(frozen=True)
class Failure:
    cause: FailureCause
    hint: str


def classify(error_text: str | None) -> Failure:
    """The cause and hint for an error text (see the module docstring for where it comes
    from). Unrecognised errors are `other`, and their hint quotes the text's last lines."""
    text = error_text or ""
    above_log, _, log_tail = text.partition(LOG_TAIL_MARKER)
    first_line = next((line for line in text.splitlines() if line.strip()), "")
    for part in (first_line, above_log, *reversed(log_tail.splitlines())):
        if (cause := _cause_in(part)) is not None:
            return Failure(cause, HINTS[cause])
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    tail = " | ".join(lines[-LAST_LINES:])
    return Failure(FailureCause.OTHER, f"last lines: {tail}" if tail else "see the job's logs")


def _cause_in(text: str) -> FailureCause | None:
    return next((cause for cause, pattern in _SIGNALS if pattern.search(text)), None)
