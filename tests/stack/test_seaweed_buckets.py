"""The local S3 server keeps taking writes however many buckets users make.

SeaweedFS gives every bucket its own collection of volumes; left to size its volume limit
from free disk, it stops accepting writes to new buckets after a few dozen (67 on a disk with
68 GB free)."""

import secrets
from concurrent.futures import ThreadPoolExecutor

from rondo.contracts.storage import S3Client

BUCKETS = 100  # more than the disk-derived limit on any disk with under ~100 GB free


def test_a_hundred_new_buckets_each_take_a_write(s3: S3Client) -> None:
    names = [f"many-{i}-{secrets.token_hex(3)}" for i in range(BUCKETS)]

    def create_and_write(name: str) -> None:
        s3.create_bucket(Bucket=name)
        s3.put_object(Bucket=name, Key="model.pt", Body=b"weights")

    try:
        with ThreadPoolExecutor(max_workers=8) as pool:
            list(pool.map(create_and_write, names))
        for name in names:
            assert s3.get_object(Bucket=name, Key="model.pt")["Body"].read() == b"weights"
    finally:
        with ThreadPoolExecutor(max_workers=8) as pool:
            list(pool.map(lambda name: _remove_bucket(s3, name), names))


def _remove_bucket(s3: S3Client, name: str) -> None:
    """Deleting the bucket drops its collection, giving its volume back to later tests."""
    s3.delete_object(Bucket=name, Key="model.pt")
    s3.delete_bucket(Bucket=name)
