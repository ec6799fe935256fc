"""First-run content of a local stack: the buckets and the default user (both idempotent)."""

import json
import subprocess
import time
from collections.abc import Mapping, Sequence

from botocore.exceptions import BotoCoreError, ClientError
from pydantic import BaseModel

from rondo.contracts.storage import make_s3_client
from rondo.stack.errors import StackError
from rondo.stack.servers import S3Credentials
from rondo.stack.state import StackState

ALREADY_THERE = ("BucketAlreadyOwnedByYou", "BucketAlreadyExists")


def ensure_buckets(state: StackState, timeout_s: float = 30) -> None:
    """Create the platform bucket unless it exists. The default user's bucket is the gateway's
    to make (`ensure_default_user`): it refuses to hand a new user a bucket already there.

    SeaweedFS answers S3 a moment before its filer takes writes, so errors are retried until
    `timeout_s`."""
    client = make_s3_client(state.s3_endpoint, state.s3_admin.access_key, state.s3_admin.secret_key)
    deadline = time.monotonic() + timeout_s
    for bucket in (state.platform_bucket,):
        while True:
            try:
                client.create_bucket(Bucket=bucket)
                break
            except ClientError as error:
                if error.response.get("Error", {}).get("Code") in ALREADY_THERE:
                    break
                if time.monotonic() > deadline:
                    raise
            except BotoCoreError:
                if time.monotonic() > deadline:
                    raise
            time.sleep(0.2)


class DefaultUserAccess(BaseModel):
    """What the gateway made of the default user: its id and its S3 key (its bucket only)."""

    user_id: str
    s3: S3Credentials


def ensure_default_user(
    state: StackState, manage_argv: Sequence[str], env: Mapping[str, str], timeout_s: float = 60
) -> DefaultUserAccess:
    """Create (or find) the default user with the state's API key, its bucket and S3 key.

    Runs the gateway's operator command, which is idempotent for a given API key: a later
    start gets the same S3 key back while the store still accepts it."""
    user = state.user
    argv = [
        *manage_argv,
        "create-user", user.name,
        "--bucket", user.bucket,
        "--json",
    ]  # fmt: skip
    # The key goes in the environment: a command line is readable by every local user.
    result = subprocess.run(
        argv,
        env={**env, "RONDO_MANAGE_API_KEY": user.api_key},
        capture_output=True,
        text=True,
        timeout=timeout_s,
        check=False,
    )
    if result.returncode != 0:
        raise StackError(
            f"creating the default user failed (exit {result.returncode}):\n"
            f"{result.stderr.strip()[-2000:]}"
        )
    created = _last_json_object(result.stdout)
    if created.get("api_key") != user.api_key or created.get("bucket") != user.bucket:
        raise StackError(
            f"the gateway answered for user {created.get('name')} with bucket "
            f"{created.get('bucket')}, not the default user asked for"
        )
    s3 = S3Credentials(
        access_key=str(created["s3_access_key"]),
        secret_key=str(created["s3_secret_key"]),
        name=user.name,
        buckets=[user.bucket],
    )
    return DefaultUserAccess(user_id=str(created["user_id"]), s3=s3)


def _last_json_object(output: str) -> dict[str, object]:
    """The command's JSON answer: the whole output, or else its last line."""
    text = output.strip()
    try:
        return dict(json.loads(text))
    except json.JSONDecodeError:
        return dict(json.loads(text.splitlines()[-1]))
