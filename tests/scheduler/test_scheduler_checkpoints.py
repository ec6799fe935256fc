"""Where a replacement run resumes, against the session's S3: the last completed round's
checkpoint once the artifacts service wrote it, else the newest earlier one."""

import secrets

from rondo.contracts.storage import S3Client
from rondo.scheduler.checkpoints import ResumePoint, find_resume_point, round_checkpoint_key

PREFIX = "jobs/digits/"


def bucket_with_rounds(s3: S3Client, *rounds: int) -> str:
    bucket = f"resume-{secrets.token_hex(4)}"
    s3.create_bucket(Bucket=bucket)
    for round_number in rounds:
        s3.put_object(Bucket=bucket, Key=round_checkpoint_key(PREFIX, round_number), Body=b"w")
    return bucket


def test_resumes_after_the_last_completed_round(s3: S3Client) -> None:
    bucket = bucket_with_rounds(s3, 0, 1)
    assert find_resume_point(s3, bucket, PREFIX, 2, wait_s=0) == ResumePoint(
        2, "jobs/digits/model_out/model_round_1.pt"
    )
    assert find_resume_point(s3, bucket, PREFIX, 0, wait_s=0) == ResumePoint(0, None)


def test_waits_for_the_checkpoint_being_written(s3: S3Client) -> None:
    bucket = bucket_with_rounds(s3, 0)
    written: list[float] = []

    def artifacts_writes_round_1(seconds: float) -> None:
        written.append(seconds)
        s3.put_object(Bucket=bucket, Key=round_checkpoint_key(PREFIX, 1), Body=b"w")

    found = find_resume_point(s3, bucket, PREFIX, 2, wait_s=5, sleep=artifacts_writes_round_1)
    assert found == ResumePoint(2, "jobs/digits/model_out/model_round_1.pt")
    assert len(written) == 1


def test_falls_back_to_an_earlier_round_then_to_the_start(s3: S3Client) -> None:
    bucket = bucket_with_rounds(s3, 0)
    assert find_resume_point(s3, bucket, PREFIX, 3, wait_s=0.3) == ResumePoint(
        1, "jobs/digits/model_out/model_round_0.pt"
    )
    empty = bucket_with_rounds(s3)
    assert find_resume_point(s3, empty, PREFIX, 3, wait_s=0) == ResumePoint(0, None)
