"""Run creation against the session's S3: a missing object fails before any provisioning."""

import secrets
from pathlib import Path

import pytest
from scheduler_helpers import FakeClock, cpu_heartbeat, submitted

from rondo.contracts.storage import S3Client
from rondo.scheduler.dispatch import Dispatcher, MissingObjectError
from rondo.scheduler.placement import Placement, SlotChoice
from rondo.scheduler.provisioning import ProvisionedKits, ProvisionRequest


class NeverProvision:
    def provision(self, request: ProvisionRequest, parent_dir: Path) -> ProvisionedKits:
        raise AssertionError("provisioned although an object is missing")

    def zip_kit(self, kit_dir: Path) -> bytes:
        raise AssertionError("not reached")


def test_missing_shard_is_named_before_provisioning(s3: S3Client, tmp_path: Path) -> None:
    bucket = f"user-{secrets.token_hex(4)}"
    s3.create_bucket(Bucket=bucket)
    job = submitted(shards=2, bucket=bucket)
    s3.put_object(Bucket=bucket, Key=job.shard_keys[0], Body=b"zip")
    dispatcher = Dispatcher(s3, "platform", tmp_path, FakeClock(), provisioner=NeverProvision())
    placement = Placement(
        job_id=job.job_id,
        clients=(
            SlotChoice(slot=0, agent_id="a", device_index=0, device="cpu"),
            SlotChoice(slot=1, agent_id="a", device_index=1, device="cpu"),
        ),
        server_agent_id="a",
        fed_learn_port=9000,
        admin_port=9001,
    )
    with pytest.raises(MissingObjectError) as raised:
        dispatcher.create_run(job, placement, {"a": cpu_heartbeat("a")})
    assert (
        str(raised.value)
        == f"Missing file: s3://{bucket}/jobs/digits/shards/shard_1.zip does not exist"
    )
