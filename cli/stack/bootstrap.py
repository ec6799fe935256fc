"""First-run content of a local stack: the buckets and the default user (both idempotent)."""

import json
import subprocess
import time
from collections.abc import Mapping, Sequence

from botocore.exceptions import BotoCoreError, ClientError

from rondo.contracts.storage import make_s3_client
from rondo.stack.errors import StackError
from rondo.stack.state import StackState

ALREADY_THERE = ("BucketAlreadyOwnedByYou", "BucketAlreadyExists")


def ensure_buckets(state: StackState, timeout_s: float = 30) -> None:
    """Create the platform bucket and the default user's bucket unless they exist.

    SeaweedFS answers S3 a moment before its filer takes writes, so errors are retried until
    `timeout_s`."""
    client = make_s3_client(state.s3_endpoint, state.s3_admin.access_key, state.s3_admin.secret_key)
    deadline = time.monotonic() + timeout_s
    for bucket in (state.platform_bucket, state.user.bucket):
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


def ensure_default_user(
    state: StackState, manage_argv: Sequence[str], env: Mapping[str, str], timeout_s: float = 60
) -> str:
    """Create (or find) the default user with the state's API key; returns its user id.

    Runs the gateway's operator command, which is idempotent for a given API key."""
    user = state.user
    argv = [
        *manage_argv,
        "create-user", user.name,
        "--bucket", user.bucket,
        "--api-key", user.api_key,
        "--json",
    ]  # fmt: skip
    result = subprocess.run(
        argv, env=dict(env), capture_output=True, text=True, timeout=timeout_s, check=False
    )
    if result.returncode != 0:
        raise StackError(
            f"creating the default user failed (exit {result.returncode}):\n"
            f"{result.stderr.strip()[-2000:]}"
        )
    created = _last_json_object(result.stdout)
    if created.get("api_key") != user.api_key or created.get("bucket") != user.bucket:
        raise StackError(f"the gateway created a different user than asked: {created}")
    return str(created["user_id"])


def _last_json_object(output: str) -> dict[str, object]:
    """The command's JSON answer: the whole output, or else its last line."""
    text = output.strip()
    try:
        return dict(json.loads(text))
    except json.JSONDecodeError:
        return dict(json.loads(text.splitlines()[-1]))
