"""Asking every part of a local stack whether it is healthy.

nats-server: its monitor `/healthz` (JetStream included). SeaweedFS: any HTTP answer from S3.
Services: a reply on `rondo.health.<service>` (core NATS request). The gateway must also
answer `GET /healthz` with 200.
"""

import asyncio
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass

import nats
from nats.errors import NoRespondersError, NoServersError
from nats.errors import TimeoutError as NatsTimeoutError
from pydantic import ValidationError

from rondo.contracts.config import split_server_urls
from rondo.contracts.events import HealthReply
from rondo.stack.servers import http_ok
from rondo.stack.services import ServicePart
from rondo.stack.state import StackState

NATS_PART = "nats"
S3_PART = "seaweedfs"
SERVER_PARTS = (NATS_PART, S3_PART)


@dataclass(frozen=True)
class Probe:
    healthy: bool
    detail: str


def probe_stack(
    state: StackState, parts: Sequence[ServicePart], timeout_s: float = 1.0
) -> dict[str, Probe]:
    """One probe of each server and of each service in `parts`, keyed by part name."""
    probes = {
        NATS_PART: _probe_http(state.nats_health_url, "JetStream ready"),
        S3_PART: _probe_http(state.s3_endpoint, "S3 answering"),
    }
    if parts:
        options = state.nats_connect_options()  # the operator's identity
        probes.update(asyncio.run(_ask_services(state.nats_url, parts, timeout_s, options)))
    if "gateway" in probes and probes["gateway"].healthy:
        healthz = f"{state.gateway_url}/healthz"
        if not _http_200(healthz):
            probes["gateway"] = Probe(False, f"GET {healthz} did not answer 200")
    return probes


def _probe_http(url: str, healthy_detail: str) -> Probe:
    return Probe(True, healthy_detail) if http_ok(url) else Probe(False, f"{url} not answering")


def _http_200(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError):
        return False


async def _ask_services(
    nats_url: str,
    parts: Sequence[ServicePart],
    timeout_s: float,
    connect_options: dict[str, str],
) -> dict[str, Probe]:
    async def quiet(_: Exception) -> None:
        return None

    try:
        connection = await nats.connect(
            split_server_urls(nats_url),
            connect_timeout=timeout_s,
            allow_reconnect=False,
            max_reconnect_attempts=0,
            error_cb=quiet,
            **connect_options,  # type: ignore[arg-type]
        )
    except (NoServersError, OSError, TimeoutError):
        return {part.name: Probe(False, "NATS unreachable") for part in parts}
    try:
        replies = await asyncio.gather(*(_ask(connection, part, timeout_s) for part in parts))
    finally:
        await connection.close()
    return {part.name: probe for part, probe in zip(parts, replies, strict=True)}


async def _ask(connection: nats.NATS, part: ServicePart, timeout_s: float) -> Probe:
    try:
        message = await connection.request(part.health_subject, b"", timeout=timeout_s)
    except NoRespondersError:
        return Probe(False, f"nothing answers {part.health_subject}")
    except (NatsTimeoutError, TimeoutError):
        return Probe(False, f"no reply on {part.health_subject} within {timeout_s:g} s")
    try:
        reply = HealthReply.model_validate_json(message.data)
    except ValidationError:
        return Probe(False, f"unreadable health reply: {message.data[:120]!r}")
    detail = ", ".join(f"{k}={v}" for k, v in reply.detail.items()) or reply.instance
    return Probe(reply.healthy, detail)
