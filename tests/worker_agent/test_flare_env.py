"""User code in NVFlare processes never sees the platform's credentials or settings."""

from pathlib import Path

import pytest

from rondo.worker_agent import flare_runs
from rondo.worker_agent.sandbox import SandboxUser


def test_nvflare_process_env_is_an_allowlist(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("RONDO_S3_SECRET_KEY", "s3cret")
    monkeypatch.setenv("RONDO_NATS_URL", "nats://10.0.0.1:4222")
    monkeypatch.setenv("RONDO_DATA_DIR", "/srv/rondo")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "aws-s3cret")
    monkeypatch.setenv("RONDO_STACK_ID", "stack-1")
    monkeypatch.setenv("SOME_HOST_TOKEN", "t0ken")
    workspace = tmp_path / "client_0" / "kit"
    workspace.mkdir(parents=True)

    env = flare_runs._process_env(
        workspace,
        SandboxUser(uid=2_000_000_000, gid=2_000_000_000),
        threads=1,
        pythonpath=[],
        malloc_arenas=2,
        job_variables={"RONDO_OUT_SPOOL": "/x/out_spool"},
    )

    assert not {"RONDO_S3_SECRET_KEY", "RONDO_NATS_URL", "RONDO_DATA_DIR"} & set(env)
    assert not {"AWS_SECRET_ACCESS_KEY", "RONDO_STACK_ID", "SOME_HOST_TOKEN"} & set(env)
    assert env["RONDO_OUT_SPOOL"] == "/x/out_spool"
    assert env["OMP_NUM_THREADS"] == "1"
    assert env["HOME"] == str(tmp_path / "client_0" / "home")
    assert env["TMPDIR"] == str(tmp_path / "client_0" / "home" / "tmp")
    assert env["USER"] == env["LOGNAME"] == "rondo-2000000000"
    assert "PATH" in env
