"""A bounded schemathesis run against `/openapi.json` of a real gateway process: no answer is a
5xx, and every error answer is the `{code, message, hint}` envelope.

The gateway runs as `python -m rondo.gateway` (its own process and event loop: schemathesis
calls it synchronously), on the session's nats-server and SeaweedFS, as a user with a bucket
and S3 key. Live streams are left out: a valid stream never ends.
"""

import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error
from sqlmodel import Session

from rondo.contracts.config import ServiceSettings
from rondo.gateway.config import GatewaySettings
from rondo.gateway.db import init_db, make_engine
from rondo.gateway.secret_box import load_secret_box
from rondo.gateway.storage_admin import SeaweedIamAdmin
from rondo.gateway.users import add_user
from rondo.stack.ports import free_port
from rondo.stack.processes import kill_tree, spawn, wait_until
from rondo.stack.servers import http_ok

EXAMPLES_PER_OPERATION = 12
STREAMS = r"/events$"  # SSE: /api/events, /api/jobs/{job_id}/events


@dataclass(frozen=True)
class RunningGateway:
    url: str
    api_key: str


@pytest.fixture(scope="module")
def gateway_process(
    service_settings: ServiceSettings, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RunningGateway]:
    folder = tmp_path_factory.mktemp("schemathesis-gateway")
    port = free_port()
    env = {
        **os.environ,
        "RONDO_NATS_URL": service_settings.nats_url,
        "RONDO_S3_ENDPOINT": service_settings.s3_endpoint,
        "RONDO_S3_ACCESS_KEY": service_settings.s3_access_key,
        "RONDO_S3_SECRET_KEY": service_settings.s3_secret_key,
        "RONDO_DATA_DIR": str(folder),
        "RONDO_GATEWAY_PORT": str(port),
        "RONDO_GATEWAY_DATABASE_URL": f"sqlite:///{folder / 'gateway.db'}",
        "RONDO_GATEWAY_RATE_LIMIT_PER_S": "10000",
        "RONDO_GATEWAY_RATE_LIMIT_BURST": "10000",
    }
    settings = GatewaySettings(
        **service_settings.model_dump(exclude={"data_dir"}),
        data_dir=folder,
        gateway_database_url=env["RONDO_GATEWAY_DATABASE_URL"],
    )
    engine = make_engine(settings.database_url)
    init_db(engine)
    with Session(engine) as session:
        box = load_secret_box(settings)  # the gateway below reads the same key file
        user = add_user(
            session,
            SeaweedIamAdmin(settings),
            box,
            "fuzzer",
            "fuzzer-bucket",
            platform_bucket=settings.platform_bucket,
        )
    engine.dispose()

    process = spawn([sys.executable, "-m", "rondo.gateway"], folder / "gateway.log", env=env)
    url = f"http://127.0.0.1:{port}"
    try:
        if not wait_until(lambda: http_ok(f"{url}/healthz"), timeout_s=30, interval_s=0.1):
            log = Path(folder / "gateway.log").read_text(errors="replace")[-3000:]
            pytest.fail(f"the gateway did not start:\n{log}")
        yield RunningGateway(url=url, api_key=user.api_key)
    finally:
        kill_tree(process.pid)


@schemathesis.check
def error_envelope(
    ctx: schemathesis.CheckContext, response: schemathesis.Response, case: schemathesis.Case
) -> None:
    """Every 4xx/5xx answer is `{code, message, hint}` (a 401/413/422/429 as much as a 404)."""
    if response.status_code < 400:
        return
    body = response.json()
    assert isinstance(body, dict) and {"code", "message", "hint"} <= set(body), body
    assert body["code"] and body["message"], body


def test_no_5xx_and_every_error_in_the_envelope(gateway_process: RunningGateway) -> None:
    schema = schemathesis.openapi.from_url(f"{gateway_process.url}/openapi.json")
    headers = {"Authorization": f"Bearer {gateway_process.api_key}"}
    operations = [result.ok() for result in schema.exclude(path_regex=STREAMS).get_all_operations()]
    assert len(operations) > 20

    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(
            max_examples=EXAMPLES_PER_OPERATION,
            deadline=None,
            suppress_health_check=list(HealthCheck),
            derandomize=True,
            database=None,
        )
        def call(case: schemathesis.Case) -> None:
            case.call_and_validate(
                headers=headers, checks=[not_a_server_error, error_envelope], timeout=30
            )

        call()
