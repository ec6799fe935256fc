"""User code in NVFlare processes never sees the platform's credentials."""

import pytest

from rondo.worker_agent import flare_runs


def test_platform_secrets_do_not_reach_nvflare_processes(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RONDO_S3_SECRET_KEY", "s3cret")
    monkeypatch.setenv("RONDO_NATS_URL", "nats://10.0.0.1:4222")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "aws-s3cret")
    monkeypatch.setenv("RONDO_STACK_ID", "stack-1")

    env = flare_runs._process_env(threads=1, pythonpath=[], malloc_arenas=2)

    assert "RONDO_S3_SECRET_KEY" not in env
    assert "RONDO_NATS_URL" not in env
    assert "AWS_SECRET_ACCESS_KEY" not in env
    assert env["RONDO_STACK_ID"] == "stack-1"  # `rondo down` finds stray processes by it
    assert env["OMP_NUM_THREADS"] == "1"
    assert "PATH" in env
