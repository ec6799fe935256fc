"""Users, API keys and S3 identities: `rondo users ...` driving the gateway's operator command
against real SeaweedFS (its IAM API), and the functions behind it."""

import json
import os
from pathlib import Path

import boto3
import pytest
from botocore.exceptions import ClientError
from sqlalchemy import Engine
from sqlmodel import Session
from support.rondo_cli import run_rondo

from rondo.contracts.storage import S3Client, make_s3_client
from rondo.gateway.auth import authenticate
from rondo.gateway.config import GatewaySettings
from rondo.gateway.errors import ApiError
from rondo.gateway.s3_keys import active_s3_key
from rondo.gateway.secret_box import SEALED_PREFIX, SecretBox, load_secret_box
from rondo.gateway.storage_admin import SeaweedIamAdmin, identity_name
from rondo.gateway.users import (
    ManageError,
    add_api_key,
    add_user,
    default_bucket,
    list_users,
    revoke_api_keys,
)

PLATFORM = "rondo-platform"


@pytest.fixture
def box(settings: GatewaySettings) -> SecretBox:
    return load_secret_box(settings)


def key_client(settings: GatewaySettings, access_key: str, secret_key: str) -> S3Client:
    return make_s3_client(settings.s3_endpoint, access_key, secret_key)


def test_rondo_users_add_and_rotate_through_the_operator_command(
    settings: GatewaySettings, tmp_path: Path, s3: S3Client
) -> None:
    env = {
        **os.environ,
        "RONDO_NATS_URL": settings.nats_url,
        "RONDO_S3_ENDPOINT": settings.s3_endpoint,
        "RONDO_S3_ACCESS_KEY": settings.s3_access_key,
        "RONDO_S3_SECRET_KEY": settings.s3_secret_key,
        "RONDO_DATA_DIR": str(tmp_path),
        "RONDO_GATEWAY_DATABASE_URL": settings.database_url,
    }
    no_stack = ["--data-dir", str(tmp_path / "no-stack")]  # so the RONDO_* variables apply

    added = run_rondo(env, "users", "add", "Erin.Ops", "--json", *no_stack)
    assert added.returncode == 0, added.stderr
    erin = json.loads(added.stdout)
    assert erin["bucket"] == "rondo-erin-ops" and erin["api_key"].startswith("rsk_live_")
    own = key_client(settings, erin["s3_access_key"], erin["s3_secret_key"])
    own.put_object(Bucket=erin["bucket"], Key="hello.txt", Body=b"hi")
    s3.create_bucket(Bucket="not-erins")
    with pytest.raises(ClientError):
        own.list_objects_v2(Bucket="not-erins")
    with pytest.raises(ClientError):
        own.create_bucket(Bucket="erins-new-bucket")

    rotated = run_rondo(env, "users", "rotate-s3-key", "Erin.Ops", "--json", *no_stack)
    assert rotated.returncode == 0, rotated.stderr
    new = json.loads(rotated.stdout)
    assert new["revoked_access_key"] == erin["s3_access_key"] != new["s3_access_key"]
    with pytest.raises(ClientError):
        own.get_object(Bucket=erin["bucket"], Key="hello.txt")
    fresh = key_client(settings, new["s3_access_key"], new["s3_secret_key"])
    assert fresh.get_object(Bucket=erin["bucket"], Key="hello.txt")["Body"].read() == b"hi"


def test_api_keys_can_be_added_and_revoked(
    engine: Engine, settings: GatewaySettings, box: SecretBox
) -> None:
    storage = SeaweedIamAdmin(settings)
    with Session(engine) as session:
        frank = add_user(
            session, storage, box, "frank", default_bucket("frank"), platform_bucket=PLATFORM
        )
        second = add_api_key(session, "frank")
        assert authenticate(session, second.api_key).name == "frank"

        with pytest.raises(ManageError, match="first 11 characters"):
            revoke_api_keys(session, "frank", "rsk_")
        revoked = revoke_api_keys(session, "frank", frank.api_key)
        assert revoked.revoked == [frank.api_key[:13]]
        with pytest.raises(ApiError) as refused:
            authenticate(session, frank.api_key)
        assert refused.value.status_code == 401
        assert authenticate(session, second.api_key).name == "frank"

        revoke_api_keys(session, "frank", None)
        with pytest.raises(ApiError):
            authenticate(session, second.api_key)
        [summary] = list_users(session)
        assert summary.s3_access_key == frank.s3_access_key
        assert all(key.revoked_at is not None for key in summary.api_keys)
        with pytest.raises(ManageError, match="no user named"):
            add_api_key(session, "nobody")


def test_adding_a_user_again_with_its_key_repeats_the_s3_key_while_the_store_has_it(
    engine: Engine, settings: GatewaySettings, box: SecretBox
) -> None:
    storage = SeaweedIamAdmin(settings)
    key = "rsk_dev_" + "g" * 32
    with Session(engine) as session:
        first = add_user(
            session, storage, box, "gina", "gina-bucket", key, platform_bucket=PLATFORM
        )
        assert (
            add_user(session, storage, box, "gina", "gina-bucket", key, platform_bucket=PLATFORM)
            == first
        )
        stored = active_s3_key(session, first.user_id)
        assert stored is not None and stored.secret_access_key.startswith(SEALED_PREFIX)
        assert first.s3_secret_key not in stored.secret_access_key, "stored sealed"

        # The store lost the key (reset, or revoked by hand): the next start mints a new one.
        storage.delete_key(identity_name(first.user_id), first.s3_access_key)
        again = add_user(
            session, storage, box, "gina", "gina-bucket", key, platform_bucket=PLATFORM
        )
    assert again.s3_access_key != first.s3_access_key
    client = key_client(settings, again.s3_access_key, again.s3_secret_key)
    assert client.list_objects_v2(Bucket="gina-bucket")["KeyCount"] == 0


def test_a_users_s3_key_cannot_administer_the_store(settings: GatewaySettings) -> None:
    storage = SeaweedIamAdmin(settings)
    storage.ensure_bucket("hank-bucket")
    key = storage.create_key(identity_name("hank"), "hank-bucket")
    escalate = boto3.client(
        "iam",
        endpoint_url=settings.s3_endpoint,
        aws_access_key_id=key.access_key_id,
        aws_secret_access_key=key.secret_access_key,
        region_name=settings.s3_region,
    )
    with pytest.raises(ClientError):
        escalate.create_access_key(UserName="admin")
    assert storage.key_exists(identity_name("hank"), key.access_key_id)
    storage.delete_key(identity_name("hank"), key.access_key_id)
    storage.delete_key(identity_name("hank"), key.access_key_id)  # idempotent
    assert not storage.key_exists(identity_name("hank"), key.access_key_id)
