"""Shards are checked from S3 by ranged reads of their ZIP directory, never downloaded whole
(real SeaweedFS)."""

import os
import secrets
import zipfile
from typing import Any

from support.job_files import manifest_line, model_def, zip_bytes

from rondo.contracts.storage import S3Client, make_s3_client
from rondo.contracts.training import TrainingConfig
from rondo.gateway.ranged_reader import S3RangeReader
from rondo.gateway.validation import inspect_job_folder
from rondo.stack.servers import S3Credentials, SeaweedS3

LARGE_ENTRY_BYTES = 24 * 1024 * 1024


def large_shard(samples: int = 200) -> bytes:
    """A shard of about 24 MB: small samples, then one large incompressible file."""
    entries = {f"samples/{i}.txt": str(i).encode() for i in range(samples)}
    entries["manifest.ndjson"] = b"".join(
        manifest_line(str(i), f"samples/{i}.txt") for i in range(samples)
    )
    entries["weights.bin"] = os.urandom(LARGE_ENTRY_BYTES)
    return zip_bytes(entries)


def counting_client(s3_server: SeaweedS3, s3_admin: S3Credentials) -> tuple[S3Client, list[int]]:
    """A client of its own, and the body sizes of the GetObject calls it makes."""
    client = make_s3_client(s3_server.endpoint, s3_admin.access_key, s3_admin.secret_key)
    sizes: list[int] = []

    def count(parsed: dict[str, Any], **_: Any) -> None:
        sizes.append(int(parsed["ContentLength"]))

    client.meta.events.register("after-call.s3.GetObject", count)
    return client, sizes


def test_the_reader_serves_zipfile_from_ranges(s3: S3Client) -> None:
    bucket = f"stream-{secrets.token_hex(4)}"
    s3.create_bucket(Bucket=bucket)
    data = large_shard()
    s3.put_object(Bucket=bucket, Key="shard.zip", Body=data)

    reader = S3RangeReader(s3, bucket, "shard.zip", len(data))
    with zipfile.ZipFile(reader) as archive:
        names = archive.namelist()
        manifest = archive.read("manifest.ndjson")
        assert archive.read("samples/7.txt") == b"7"

    assert len(names) == 202
    assert manifest.count(b"\n") == 200
    assert reader.requests <= 4, reader.requests
    assert reader.bytes_fetched < 300 * 1024, reader.bytes_fetched
    # Reads past the end and seeks behave like a file's.
    reader.seek(-3, 2)
    assert reader.read(10) == data[-3:]
    assert reader.read() == b""


def test_a_large_shard_is_checked_with_few_bytes_read(
    s3: S3Client, s3_server: SeaweedS3, s3_admin: S3Credentials
) -> None:
    bucket = f"stream-{secrets.token_hex(4)}"
    s3.create_bucket(Bucket=bucket)
    shard = large_shard()
    for key, body in {
        "jobs/big/scripts/model_def.py": model_def(b""),
        "jobs/big/requirements/requirements.txt": b"",
        "jobs/big/shards/shard_0.zip": shard,
    }.items():
        s3.put_object(Bucket=bucket, Key=key, Body=body)
    client, fetched = counting_client(s3_server, s3_admin)

    folder = inspect_job_folder(client, bucket, "big", TrainingConfig())

    assert folder.shard_keys == ["jobs/big/shards/shard_0.zip"]
    small_files = len(model_def(b""))
    shard_bytes = sum(fetched) - small_files
    assert shard_bytes < len(shard) / 100, (shard_bytes, len(shard))
    assert len(fetched) <= 5, fetched
