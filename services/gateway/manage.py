"""Operator CLI: `python -m rondo.gateway.manage create-user NAME --bucket B [--api-key K] --json`.

Reads the same `RONDO_*` settings as the gateway (its database). The API key is printed once:
only its hash is stored.
"""

import re
from typing import Annotated

import typer
from pydantic import BaseModel
from sqlmodel import Session, select

from rondo.gateway.auth import api_key_record, generate_api_key, hash_api_key, is_well_formed_key
from rondo.gateway.config import GatewaySettings
from rondo.gateway.db import init_db, make_engine
from rondo.gateway.models import ApiKey, User

USER_NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}$")
BUCKET_PATTERN = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")

cli = typer.Typer(
    help="Gateway operator commands (users and API keys).",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,  # locals may hold an API key
)


class ManageError(Exception):
    """A refused operator command; the message says why."""


class CreatedUser(BaseModel):
    user_id: str
    name: str
    api_key: str
    bucket: str


def create_user(
    session: Session, name: str, bucket: str, api_key: str | None = None
) -> CreatedUser:
    """Create a user with an API key (minted unless given) and commit.

    Idempotent when `api_key` is given: an existing user with the same bucket gets that key
    (if it has not already) and the same answer. Raises `ManageError` for an existing user
    without `api_key` (its keys cannot be shown again), a different bucket, a malformed key,
    or a key that belongs to someone else.
    """
    if not USER_NAME_PATTERN.match(name):
        raise ManageError(f"invalid user name {name!r} (letters, digits, _ . @ -; max 64)")
    if not BUCKET_PATTERN.match(bucket):
        raise ManageError(f"invalid bucket name {bucket!r} (S3 rules: a-z 0-9 . -, 3-63 chars)")
    if api_key is not None and not is_well_formed_key(api_key):
        raise ManageError("--api-key must look like rsk_live_<random> or rsk_dev_<random>")

    key_row = (
        session.exec(select(ApiKey).where(ApiKey.key_hash == hash_api_key(api_key))).first()
        if api_key is not None
        else None
    )
    user = session.exec(select(User).where(User.name == name)).first()
    if user is not None:
        if api_key is None:
            raise ManageError(
                f"user {name} exists; its API keys are stored hashed and cannot be shown "
                "again (pass --api-key to re-register a key you hold)"
            )
        if user.bucket != bucket:
            raise ManageError(f"user {name} exists with bucket {user.bucket}, not {bucket}")
    if key_row is not None and (user is None or key_row.user_id != user.id):
        raise ManageError("that API key belongs to another user")
    if key_row is not None and key_row.revoked_at is not None:
        raise ManageError("that API key was revoked; mint a new one")

    if user is None:
        user = User(name=name, bucket=bucket)
        session.add(user)
        session.flush()  # the key row references the user
    key = api_key or generate_api_key()
    if key_row is None:
        session.add(api_key_record(user.id, key))
    session.commit()
    return CreatedUser(user_id=user.id, name=user.name, api_key=key, bucket=user.bucket)


@cli.callback()
def _main() -> None:
    """Gateway operator commands."""


@cli.command("create-user")
def create_user_command(
    name: Annotated[str, typer.Argument(help="Unique user name")],
    bucket: Annotated[str, typer.Option(help="The user's S3 bucket (must already exist)")],
    api_key: Annotated[
        str | None, typer.Option(help="Register this key instead of minting one (idempotent)")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object")] = False,
) -> None:
    """Create a user and print their API key (shown only this once)."""
    settings = GatewaySettings()
    engine = make_engine(settings.database_url)
    init_db(engine)
    try:
        with Session(engine) as session:
            created = create_user(session, name, bucket, api_key)
    except ManageError as error:
        typer.echo(f"error: {error}", err=True)
        raise typer.Exit(1) from None
    finally:
        engine.dispose()
    if as_json:
        typer.echo(created.model_dump_json())
    else:
        typer.echo(f"user {created.name} ({created.user_id}), bucket {created.bucket}")
        typer.echo(f"API key (shown once): {created.api_key}")


if __name__ == "__main__":
    cli()
