"""Helpers for the gateway tests: auth headers, job folders, bus probes, SSE parsing."""

import asyncio
import json
import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import httpx
from fastapi import FastAPI
from nats.aio.msg import Msg
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from support import job_files

from rondo.contracts.storage import S3Client
from rondo.gateway.users import CreatedUser


@dataclass
class Gateway:
    """The app under test, where it listens, and the spans it finished."""

    url: str
    app: FastAPI
    spans: InMemorySpanExporter


def auth(user: CreatedUser) -> dict[str, str]:
    return {"Authorization": f"Bearer {user.api_key}"}


def job_name() -> str:
    return f"job-{secrets.token_hex(3)}"


VALID_SHARD = job_files.shard("a")
VALID_MODEL_DEF = job_files.model_def(b"")


def placeholder(key: str) -> bytes:
    """Contents that pass the gateway's checks of a job file with this name."""
    valid = {".zip": VALID_SHARD, ".py": VALID_MODEL_DEF, ".json": b"{}"}
    for suffix, content in valid.items():
        if key.endswith(suffix):
            return content
    return b""


def upload_job(
    s3: S3Client,
    bucket: str,
    name: str,
    *,
    shards: tuple[str, ...] = ("shard_0.zip", "shard_1.zip"),
    model_def: bool = True,
    requirements: bool = True,
    extra: tuple[str, ...] = (),
) -> None:
    """Put a job folder under jobs/{name}/ (contents that pass the checks: names matter)."""
    keys = [f"shards/{shard}" for shard in shards] + list(extra)
    if model_def:
        keys.append("scripts/model_def.py")
    if requirements:
        keys.append("requirements/requirements.txt")
    for key in keys:
        s3.put_object(Bucket=bucket, Key=f"jobs/{name}/{key}", Body=placeholder(key))


async def submitted_job(client: httpx.AsyncClient, user: CreatedUser, s3: S3Client) -> str:
    """Upload a placeholder job folder for `user` and submit it; returns the job's id."""
    name = job_name()
    upload_job(s3, user.bucket, name)
    response = await client.post("/api/jobs", json={"name": name}, headers=auth(user))
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


def bucket_listing(s3: S3Client, bucket: str) -> list[tuple[str, str]]:
    pages = s3.get_paginator("list_objects_v2").paginate(Bucket=bucket)
    return [(o["Key"], o["ETag"]) for page in pages for o in page.get("Contents", [])]


def assert_error(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    """The response is the error envelope with this status and code."""
    assert response.status_code == status, response.text
    body = response.json()
    # `problems` comes with `invalid_job` only.
    assert set(body) - {"problems"} == {"code", "message", "hint"}, body
    assert body["code"] == code, body
    assert body["message"], body
    return dict(body)


@dataclass
class BusProbe:
    """Collects the JSON payloads published on one core NATS subject."""

    subject: str
    received: list[dict[str, Any]] = field(default_factory=list)

    async def handle(self, msg: Msg) -> None:
        self.received.append(json.loads(msg.data))

    def matching(self, **fields: Any) -> list[dict[str, Any]]:
        return [m for m in self.received if all(m.get(k) == v for k, v in fields.items())]

    async def wait_for(self, timeout: float = 5.0, **fields: Any) -> dict[str, Any]:
        async with asyncio.timeout(timeout):
            while not (found := self.matching(**fields)):
                await asyncio.sleep(0.02)
        return found[0]


async def sse_events(response: httpx.Response) -> AsyncIterator[tuple[str, dict[str, Any]]]:
    """(event, JSON data) pairs of a text/event-stream response; comments are skipped."""
    event, data = "message", []
    async for line in response.aiter_lines():
        if line.startswith(":"):
            continue
        if not line:
            if data:
                yield event, json.loads("\n".join(data))
            event, data = "message", []
        elif line.startswith("event:"):
            event = line.removeprefix("event:").strip()
        elif line.startswith("data:"):
            data.append(line.removeprefix("data:").strip())


async def eventually(check: Any, timeout: float = 5.0) -> Any:
    """Await `check()` (sync or async) until it returns a truthy value."""
    async with asyncio.timeout(timeout):
        while True:
            result = check()
            if asyncio.iscoroutine(result):
                result = await result
            if result:
                return result
            await asyncio.sleep(0.05)
