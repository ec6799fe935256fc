"""One bucket per user, one user per bucket: names that collide, the platform's bucket, another
user's bucket and a bucket already in the store are refused, on SQLite and PostgreSQL, against
real SeaweedFS (its IAM API) and through `rondo users add`.

Each protection here was checked by hand to fail its test when switched off (the checks in
`rondo.gateway.users.add_user`, the store lookup in `SeaweedIamAdmin.create_bucket`, the unique
constraints of the users table).
"""

import json
import os
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
import sqlalchemy as sa
from alembic import command
from sqlalchemy import Engine
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, select
from support.databases import BACKENDS, clear_tables, new_database
from support.rondo_cli import run_rondo

from rondo.contracts.config import ServiceSettings
from rondo.contracts.database import make_engine
from rondo.contracts.storage import S3Client
from rondo.gateway.config import GatewaySettings
from rondo.gateway.db import init_db
from rondo.gateway.migrations import MIGRATIONS
from rondo.gateway.models import GatewayModel, User
from rondo.gateway.secret_box import SecretBox, load_secret_box
from rondo.gateway.storage_admin import BUCKET_POLICY_NAME, SeaweedIamAdmin, identity_name
from rondo.gateway.users import (
    ManageError,
    NewUser,
    add_api_key,
    add_user,
    default_bucket,
)

# The names of the issue: three that slug to one bucket, two that differ only in case, and two
# whose default bucket is the platform's.
NAMES = (
    "alice@corp.com",
    "alice.corp.com",
    "alice_corp-com",
    "Default",
    "default",
    "platform",
    "PLATFORM",
)
PLATFORM_BUCKET = "rondo-platform"
# The revision before users got their unique name_key and bucket.
BEFORE_UNIQUE_BUCKETS = "26b29ecd7e24"


@pytest.fixture(scope="module")
def settings(
    service_settings: ServiceSettings, database_url: str, tmp_path_factory: pytest.TempPathFactory
) -> GatewaySettings:
    return GatewaySettings(
        **service_settings.model_dump(exclude={"data_dir", "platform_bucket"}),
        data_dir=tmp_path_factory.mktemp("tenants"),
        gateway_database_url=database_url,
        platform_bucket=PLATFORM_BUCKET,
    )


@pytest.fixture(scope="module")
def module_engine(settings: GatewaySettings) -> Iterator[Engine]:
    engine = make_engine(settings.database_url)
    init_db(engine)
    yield engine
    engine.dispose()


@pytest.fixture
def engine(module_engine: Engine) -> Iterator[Engine]:
    """The module's database, emptied after each test."""
    yield module_engine
    clear_tables(module_engine, GatewayModel.metadata)


@pytest.fixture(scope="module")
def storage(settings: GatewaySettings) -> SeaweedIamAdmin:
    return SeaweedIamAdmin(settings)


@pytest.fixture(scope="module")
def box(settings: GatewaySettings) -> SecretBox:
    return load_secret_box(settings)


def _bucket_exists(s3: S3Client, bucket: str) -> bool:
    names = {entry["Name"] for entry in s3.list_buckets().get("Buckets", [])}
    return bucket in names


@pytest.fixture(scope="module")
def iam(settings: GatewaySettings) -> Any:
    """The platform's IAM client, to remove test identities again (SeaweedFS rewrites its
    whole identity list on every change: hundreds left behind slow every later test)."""
    return boto3.client(
        "iam",
        endpoint_url=settings.s3_endpoint,
        aws_access_key_id=settings.s3_access_key,
        aws_secret_access_key=settings.s3_secret_key,
        region_name=settings.s3_region,
    )


def _remove(s3: S3Client, iam: Any, users: list[NewUser]) -> None:
    """Undo what the users made in the store: their identities, keys and (empty) buckets."""
    for user in users:
        identity = identity_name(user.user_id)
        for key in iam.list_access_keys(UserName=identity)["AccessKeyMetadata"]:
            iam.delete_access_key(UserName=identity, AccessKeyId=key["AccessKeyId"])
        iam.delete_user_policy(UserName=identity, PolicyName=BUCKET_POLICY_NAME)
        iam.delete_user(UserName=identity)
        if _bucket_exists(s3, user.bucket):
            s3.delete_bucket(Bucket=user.bucket)


def _try_add(
    session: Session, storage: SeaweedIamAdmin, box: SecretBox, name: str
) -> NewUser | ManageError:
    try:
        return add_user(
            session, storage, box, name, default_bucket(name), platform_bucket=PLATFORM_BUCKET
        )
    except ManageError as error:
        return error


def test_every_pair_of_colliding_names_is_refused_or_given_distinct_buckets(
    engine: Engine, storage: SeaweedIamAdmin, box: SecretBox, s3: S3Client, iam: Any
) -> None:
    """`rondo users add A` then `rondo users add B`, for every ordered pair of the names: the
    second is refused (saying to pass --bucket, or that the name is taken), or both users have
    buckets of their own. A refusal leaves no user behind.

    Each A is added once and each B tried against it, a B that was made being removed again
    before the next: every user costs SeaweedFS an IAM identity, whose whole list it rewrites
    on every change (so the test makes as few as the pairs allow)."""
    problems: list[str] = []
    for first in NAMES:
        made: list[NewUser] = []
        try:
            with Session(engine) as session:
                kept = _try_add(session, storage, box, first)
                if isinstance(kept, NewUser):
                    made.append(kept)
                for second in [name for name in NAMES if name != first]:
                    pair = f"{first}, {second}"
                    outcome = _try_add(session, storage, box, second)
                    users = session.exec(select(User)).all()
                    if isinstance(outcome, ManageError):
                        if "--bucket" not in str(outcome) and "case-insensitive" not in str(
                            outcome
                        ):
                            problems.append(f"{pair}: {second} refused unclearly: {outcome}")
                        if len(users) != len(made):
                            problems.append(f"{pair}: the refused {second} was stored")
                        continue
                    buckets = [user.bucket for user in users]
                    if len(set(buckets)) != len(buckets):
                        problems.append(f"{pair}: two users got one bucket: {buckets}")
                    if PLATFORM_BUCKET in buckets:
                        problems.append(f"{pair}: {second} got the platform bucket")
                    if len({user.name_key for user in users}) != len(users):
                        problems.append(f"{pair}: two users differ only in case")
                    session.delete(session.get(User, outcome.user_id))
                    session.commit()
                    _remove(s3, iam, [outcome])
                if isinstance(kept, ManageError) and "--bucket" not in str(kept):
                    problems.append(f"{first} alone refused unclearly: {kept}")
        finally:
            _remove(s3, iam, made)
            clear_tables(engine, GatewayModel.metadata)
    assert problems == []


def test_the_platform_bucket_is_never_a_users_in_any_spelling(
    engine: Engine, storage: SeaweedIamAdmin, box: SecretBox, s3: S3Client
) -> None:
    existed = _bucket_exists(s3, PLATFORM_BUCKET)
    for bucket in (PLATFORM_BUCKET, PLATFORM_BUCKET.upper(), f" {PLATFORM_BUCKET} "):
        with Session(engine) as session, pytest.raises(ManageError) as refused:
            add_user(session, storage, box, "mallory", bucket, platform_bucket=PLATFORM_BUCKET)
        assert "platform" in str(refused.value) and "--bucket" in str(refused.value)
        with Session(engine) as session:
            assert session.exec(select(User)).all() == []
    assert _bucket_exists(s3, PLATFORM_BUCKET) == existed, "a refused command made the bucket"


def test_another_users_bucket_is_refused_by_name(
    engine: Engine, storage: SeaweedIamAdmin, box: SecretBox, s3: S3Client, iam: Any
) -> None:
    bucket = f"ada-{secrets.token_hex(4)}"
    with Session(engine) as session:
        ada = add_user(session, storage, box, "ada", bucket, platform_bucket=PLATFORM_BUCKET)
        try:
            with pytest.raises(ManageError, match="already user ada's; pass --bucket"):
                add_user(
                    session, storage, box, "eve", bucket.upper(), platform_bucket=PLATFORM_BUCKET
                )
            assert [user.name for user in session.exec(select(User)).all()] == ["ada"]
        finally:
            _remove(s3, iam, [ada])


def test_a_bucket_already_in_the_store_is_refused_and_left_alone(
    engine: Engine, storage: SeaweedIamAdmin, box: SecretBox, s3: S3Client
) -> None:
    """A bucket made outside Rondo (another application's, or an old one) may hold anyone's
    data: a new user never inherits it, even though no Rondo user owns it."""
    bucket = f"someone-elses-{secrets.token_hex(4)}"
    s3.create_bucket(Bucket=bucket)
    s3.put_object(Bucket=bucket, Key="payroll.csv", Body=b"secret")
    with Session(engine) as session:
        with pytest.raises(ManageError, match=r"already exists in the object store.*--bucket"):
            add_user(session, storage, box, "mallory", bucket, platform_bucket=PLATFORM_BUCKET)
        assert session.exec(select(User)).all() == []
    assert s3.get_object(Bucket=bucket, Key="payroll.csv")["Body"].read() == b"secret"


def test_names_are_one_user_in_any_case(
    engine: Engine, storage: SeaweedIamAdmin, box: SecretBox, s3: S3Client, iam: Any
) -> None:
    bucket = f"dee-{secrets.token_hex(4)}"
    with Session(engine) as session:
        dee = add_user(session, storage, box, "Dee", bucket, platform_bucket=PLATFORM_BUCKET)
        try:
            with pytest.raises(ManageError, match=r"user Dee exists .*case-insensitive"):
                add_user(
                    session, storage, box, "DEE", f"{bucket}-2", platform_bucket=PLATFORM_BUCKET
                )
            assert add_api_key(session, "dEE").name == "Dee"
            assert not _bucket_exists(s3, f"{bucket}-2")
        finally:
            _remove(s3, iam, [dee])


def test_the_database_itself_refuses_a_shared_bucket_or_name(engine: Engine) -> None:
    """Two operator commands racing both pass the checks; the constraints still hold."""
    rows = [
        (
            User(name="a", name_key="a", bucket="shared"),
            User(name="b", name_key="b", bucket="shared"),
        ),
        (User(name="c", name_key="c", bucket="c-1"), User(name="C", name_key="c", bucket="c-2")),
    ]
    for first, second in rows:
        with Session(engine) as session:
            session.add(first)
            session.commit()
            session.add(second)
            with pytest.raises(IntegrityError):
                session.commit()
            session.rollback()


@pytest.mark.parametrize("backend", BACKENDS)
def test_upgrading_a_database_whose_users_share_a_bucket_stops_and_names_them(
    request: pytest.FixtureRequest, backend: str
) -> None:
    engine = make_engine(new_database(request, backend))
    try:
        with engine.begin() as connection:
            command.upgrade(MIGRATIONS.config(connection), BEFORE_UNIQUE_BUCKETS)
            connection.execute(
                sa.text(
                    "INSERT INTO users (id, name, bucket, created_at) VALUES "
                    "('u-1', 'Default', 'rondo-default', '2026-11-25 12:00:00'), "
                    "('u-2', 'default', 'rondo-default', '2026-11-25 12:00:00'), "
                    "('u-3', 'Zed', 'zed', '2026-11-25 12:00:00')"
                )
            )
        with pytest.raises(RuntimeError, match="rondo-default: Default, default"):
            init_db(engine)
        with engine.begin() as connection:
            connection.execute(
                sa.text(
                    "UPDATE users SET bucket = 'rondo-default-2', name = 'dee' WHERE id = 'u-2'"
                )
            )
        init_db(engine)
        with engine.connect() as connection:
            keys = connection.execute(sa.text("SELECT name_key FROM users ORDER BY id")).scalars()
            assert list(keys) == ["default", "dee", "zed"]
    finally:
        engine.dispose()


def test_rondo_users_add_refuses_the_platform_bucket_and_a_taken_one(
    settings: GatewaySettings, tmp_path: Path, s3: S3Client
) -> None:
    """The operator's view: exit code 1 and an error that says to pass --bucket; with it, the
    user is made."""
    if settings.database_url.startswith("postgresql"):
        pytest.skip("the command's path is the same on both backends; SQLite is enough")
    env = {
        **os.environ,
        "RONDO_NATS_URL": settings.nats_url,
        "RONDO_S3_ENDPOINT": settings.s3_endpoint,
        "RONDO_S3_ACCESS_KEY": settings.s3_access_key,
        "RONDO_S3_SECRET_KEY": settings.s3_secret_key,
        "RONDO_PLATFORM_BUCKET": PLATFORM_BUCKET,
        "RONDO_DATA_DIR": str(tmp_path),
        "RONDO_GATEWAY_DATABASE_URL": f"sqlite:///{tmp_path / 'gateway.db'}",
    }
    no_stack = ["--data-dir", str(tmp_path / "no-stack")]  # so the RONDO_* variables apply
    refused = run_rondo(env, "users", "add", "platform", *no_stack)
    assert refused.returncode == 1
    assert "platform's own bucket" in refused.stderr and "--bucket" in refused.stderr

    bucket = f"ops-{secrets.token_hex(4)}"
    added = run_rondo(env, "users", "add", "Platform", "--bucket", bucket, "--json", *no_stack)
    assert added.returncode == 0, added.stderr
    assert json.loads(added.stdout)["bucket"] == bucket
    again = run_rondo(env, "users", "add", "ops", "--bucket", bucket.upper(), *no_stack)
    assert again.returncode == 1 and "already user Platform's" in again.stderr
    s3.delete_bucket(Bucket=bucket)
