"""Operator commands: `python -m rondo.gateway.manage COMMAND ... [--json]`.

`create-user NAME [--bucket B] [--api-key K]`, `list-users`, `add-key NAME`,
`revoke-key NAME (KEY_OR_PREFIX | --all)`, `rotate-s3-key NAME`. They read the same `RONDO_*`
settings as the gateway: its database, and the platform's S3 identity, which administers the
users' buckets and S3 keys (`RONDO_STORAGE_ADMIN`). `rondo users ...` runs these. Secrets (API
keys, S3 secret keys) are printed once.
"""

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Annotated, TypeVar

import typer
from pydantic import BaseModel, TypeAdapter
from sqlmodel import Session

from rondo.gateway.auth import DEV_PREFIX, LIVE_PREFIX
from rondo.gateway.config import GatewaySettings
from rondo.gateway.db import init_db, make_engine
from rondo.gateway.secret_box import SecretBox, load_secret_box
from rondo.gateway.storage_admin import StorageAdmin, StorageAdminError, make_storage_admin
from rondo.gateway.users import (
    ManageError,
    UserSummary,
    add_api_key,
    add_user,
    default_bucket,
    list_users,
    revoke_api_keys,
    rotate_user_s3_key,
)

T = TypeVar("T")

# `create-user --api-key` from the environment: a process's argv is world-readable.
API_KEY_ENV = "RONDO_MANAGE_API_KEY"

cli = typer.Typer(
    help="Gateway operator commands (users, API keys, S3 keys).",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,  # locals may hold an API key
)

AsJson = Annotated[bool, typer.Option("--json", help="Print JSON instead of text")]


@contextmanager
def _session_storage_and_secrets() -> Iterator[tuple[Session, StorageAdmin, SecretBox]]:
    settings = GatewaySettings()
    engine = make_engine(settings.database_url)
    try:
        init_db(engine)
        with Session(engine) as session:
            yield session, make_storage_admin(settings), load_secret_box(settings)
    finally:
        engine.dispose()


def _run(operation: Callable[[Session, StorageAdmin, SecretBox], T]) -> T:
    """Run one operation; a refusal or a store failure ends the command with exit code 1."""
    try:
        with _session_storage_and_secrets() as (session, storage, box):
            return operation(session, storage, box)
    except (ManageError, StorageAdminError) as error:
        typer.echo(f"error: {error}", err=True)
        raise typer.Exit(1) from None


def _print(result: BaseModel, as_json: bool, lines: list[str]) -> None:
    typer.echo(result.model_dump_json() if as_json else "\n".join(lines))


@cli.callback()
def _main() -> None:
    """Gateway operator commands."""


@cli.command("create-user")
def create_user_command(
    name: Annotated[str, typer.Argument(help="Unique user name")],
    bucket: Annotated[
        str | None, typer.Option(help="The user's own new bucket (created); rondo-<name>")
    ] = None,
    api_key: Annotated[
        str | None,
        typer.Option(
            help="Register this key instead of minting one (idempotent); better passed as "
            f"{API_KEY_ENV}, as a command line is readable by every local user",
            envvar=API_KEY_ENV,
        ),
    ] = None,
    as_json: AsJson = False,
) -> None:
    """Create a user, their bucket and S3 key; print the API key and S3 secret (shown once).

    The bucket must be new: the platform's bucket, another user's, or one already in the store
    is refused (pass --bucket with a new name). User names are case-insensitive."""
    bucket = bucket or default_bucket(name)
    platform_bucket = GatewaySettings().platform_bucket
    created = _run(
        lambda session, storage, box: add_user(
            session, storage, box, name, bucket, api_key, platform_bucket=platform_bucket
        )
    )
    _print(
        created,
        as_json,
        [
            f"user {created.name} ({created.user_id}), bucket {created.bucket}",
            f"API key (shown once):       {created.api_key}",
            f"S3 access key id:           {created.s3_access_key}",
            f"S3 secret key (shown once): {created.s3_secret_key}",
        ],
    )


@cli.command("list-users")
def list_users_command(as_json: AsJson = False) -> None:
    """Every user with their bucket, API key prefixes and S3 access key id."""
    users = _run(lambda session, _storage, _box: list_users(session))
    if as_json:
        typer.echo(TypeAdapter(list[UserSummary]).dump_json(users).decode())
        return
    for user in users:
        active = [key.prefix for key in user.api_keys if key.revoked_at is None]
        typer.echo(
            f"{user.name}\tbucket {user.bucket}\tS3 key {user.s3_access_key or '-'}\t"
            f"API keys {', '.join(active) or '-'} ({len(user.api_keys) - len(active)} revoked)"
        )


@cli.command("add-key")
def add_key_command(
    name: Annotated[str, typer.Argument(help="The user")],
    dev: Annotated[bool, typer.Option("--dev", help="An rsk_dev_ key")] = False,
    as_json: AsJson = False,
) -> None:
    """Mint another API key for a user and print it (shown once)."""
    prefix = DEV_PREFIX if dev else LIVE_PREFIX
    minted = _run(lambda session, _storage, _box: add_api_key(session, name, prefix))
    _print(minted, as_json, [f"API key of {minted.name} (shown once): {minted.api_key}"])


@cli.command("revoke-key")
def revoke_key_command(
    name: Annotated[str, typer.Argument(help="The user")],
    key: Annotated[
        str | None, typer.Argument(help="The whole key, or its prefix from list-users")
    ] = None,
    revoke_all: Annotated[bool, typer.Option("--all", help="Every key of the user")] = False,
    as_json: AsJson = False,
) -> None:
    """Revoke an API key (or all of a user's): requests with it get 401 from now on."""
    if (key is None) == (not revoke_all):
        typer.echo("error: name one key, or pass --all", err=True)
        raise typer.Exit(2)
    revoked = _run(lambda session, _storage, _box: revoke_api_keys(session, name, key))
    _print(revoked, as_json, [f"revoked {', '.join(revoked.revoked)} of {revoked.name}"])


@cli.command("rotate-s3-key")
def rotate_s3_key_command(
    name: Annotated[str, typer.Argument(help="The user")], as_json: AsJson = False
) -> None:
    """Give a user a new S3 key and revoke the old one at once (its presigned URLs die too)."""
    rotated = _run(lambda session, storage, box: rotate_user_s3_key(session, storage, box, name))
    _print(
        rotated,
        as_json,
        [
            f"new S3 key of {rotated.name} (bucket {rotated.bucket})",
            f"S3 access key id:           {rotated.s3_access_key}",
            f"S3 secret key (shown once): {rotated.s3_secret_key}",
            f"revoked:                    {rotated.revoked_access_key or '-'}",
        ],
    )


if __name__ == "__main__":
    cli()
