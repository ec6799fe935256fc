"""Where a replacement run resumes: the newest round checkpoint already in the user's bucket.

The artifacts service writes `jobs/{name}/model_out/model_round_{r}.pt` (docs/design.md, bucket
layout) shortly after the scheduler hears that round `r` completed. A replacement run loads the
last completed round's checkpoint and starts at the next round; if that file is not there
after a short wait, an earlier round's is used and the rounds after it are trained again (the
artifacts service keeps each round once, so nothing is counted twice).

Calls are blocking (S3): run them in a worker thread.
"""

import time
from collections.abc import Callable
from dataclasses import dataclass

from botocore.exceptions import ClientError

from rondo.contracts.layout import model_out_key, model_round_name
from rondo.contracts.storage import S3Client, is_not_found

POLL_INTERVAL_S = 0.25


@dataclass(frozen=True)
class ResumePoint:
    """The round a run starts at, and the checkpoint it loads (None: the job's own start,
    i.e. its warm start or fresh weights)."""

    start_round: int
    checkpoint_key: str | None


def round_checkpoint_key(prefix: str, round_number: int) -> str:
    """The key of round `round_number`'s global model under the job folder `prefix`."""
    return model_out_key(prefix, model_round_name(round_number))


def find_resume_point(
    s3: S3Client,
    bucket: str,
    prefix: str,
    completed_rounds: int,
    wait_s: float,
    *,
    sleep: Callable[[float], None] = time.sleep,
    monotonic: Callable[[], float] = time.monotonic,
) -> ResumePoint:
    """Resume after round `completed_rounds - 1` once its checkpoint is in the bucket.

    Waits up to `wait_s` for that checkpoint, then falls back to the newest earlier one. With
    no round completed, or no checkpoint at all, the run starts at round 0.
    """
    if completed_rounds <= 0:
        return ResumePoint(start_round=0, checkpoint_key=None)
    last = completed_rounds - 1
    deadline = monotonic() + wait_s
    while not _exists(s3, bucket, round_checkpoint_key(prefix, last)):
        if monotonic() >= deadline:
            return _newest_before(s3, bucket, prefix, last)
        sleep(POLL_INTERVAL_S)
    return ResumePoint(start_round=last + 1, checkpoint_key=round_checkpoint_key(prefix, last))


def _newest_before(s3: S3Client, bucket: str, prefix: str, round_number: int) -> ResumePoint:
    for earlier in range(round_number - 1, -1, -1):
        key = round_checkpoint_key(prefix, earlier)
        if _exists(s3, bucket, key):
            return ResumePoint(start_round=earlier + 1, checkpoint_key=key)
    return ResumePoint(start_round=0, checkpoint_key=None)


def _exists(s3: S3Client, bucket: str, key: str) -> bool:
    try:
        s3.head_object(Bucket=bucket, Key=key)
    except ClientError as error:
        if is_not_found(error):
            return False
        raise
    return True
