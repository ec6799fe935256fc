"""`python -m rondo.artifacts` starts from RONDO_* variables, answers health, stops on SIGTERM.

It runs against its own nats-server so its durable consumers never share the session's work.
"""

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path

import nats
import pytest

from rondo.contracts.events import HealthReply
from rondo.contracts.subjects import health_subject
from rondo.stack.servers import NatsServer, SeaweedS3


@pytest.mark.timeout(60)
async def test_module_entry_point_answers_health(tmp_path: Path, s3_server: SeaweedS3) -> None:
    server = NatsServer(store_dir=tmp_path / "nats")
    server.start(tmp_path / "nats.log")
    env = {
        **os.environ,
        "RONDO_NATS_URL": server.url,
        "RONDO_S3_ENDPOINT": s3_server.endpoint,
        "RONDO_DATA_DIR": str(tmp_path / "data"),
        "RONDO_ARTIFACTS_LOG_FLUSH_INTERVAL_S": "0.5",
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "rondo.artifacts"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    client = await nats.connect(server.url)
    try:
        reply: HealthReply | None = None
        for _ in range(100):
            try:
                message = await client.request(health_subject("artifacts"), b"", timeout=0.5)
            except (nats.errors.NoRespondersError, nats.errors.TimeoutError):
                await asyncio.sleep(0.2)
                continue
            reply = HealthReply.model_validate_json(message.data)
            break
        assert reply is not None and reply.healthy and reply.service == "artifacts"
        assert (tmp_path / "data" / "artifacts.db").exists()
        process.send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(process.wait, 20) == 0
        assert (tmp_path / "data" / "logs" / "artifacts.log").exists()
    finally:
        await client.close()
        if process.poll() is None:
            process.kill()
        server.stop()
