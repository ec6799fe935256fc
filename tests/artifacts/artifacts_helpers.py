"""Helpers of the artifacts tests: a producer on the bus, polling, bucket reads."""

import asyncio
import time
from collections.abc import Callable
from pathlib import Path

from faststream.nats import NatsBroker
from nats.js.errors import NotFoundError
from nats.js.object_store import ObjectStore

from rondo.contracts.bus import publish
from rondo.contracts.events import Event
from rondo.contracts.storage import S3Client


class Bus:
    """A producer's view of the bus: publish events, stage objects."""

    def __init__(self, broker: NatsBroker, staging: ObjectStore) -> None:
        self.broker = broker
        self.staging = staging

    async def publish(self, event: Event) -> None:
        await publish(self.broker, event)

    async def stage(self, name: str, data: bytes) -> None:
        await self.staging.put(name, data)

    async def is_staged(self, name: str) -> bool:
        try:
            await self.staging.get_info(name)
        except NotFoundError:
            return False
        return True

    async def wait_deleted(self, name: str, timeout_s: float = 10.0) -> None:
        """The consumer deletes a staged object once it handled (or refused) it."""
        deadline = time.monotonic() + timeout_s
        while await self.is_staged(name):
            assert time.monotonic() < deadline, f"staged object {name} was not deleted"
            await asyncio.sleep(0.1)


async def eventually(check: Callable[[], bool], timeout_s: float = 15.0, what: str = "") -> None:
    """Poll `check` until it is true; fail after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if check():
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what or check}")


def read_key(s3: S3Client, bucket: str, key: str) -> bytes | None:
    try:
        return s3.get_object(Bucket=bucket, Key=key)["Body"].read()
    except s3.exceptions.NoSuchKey:
        return None


def list_keys(s3: S3Client, bucket: str, prefix: str) -> set[str]:
    pages = s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
    return {item["Key"] for page in pages for item in page.get("Contents", [])}


def download(s3: S3Client, bucket: str, key: str, into: Path) -> Path:
    path = into / key.replace("/", "_")
    s3.download_file(bucket, key, str(path))
    return path
