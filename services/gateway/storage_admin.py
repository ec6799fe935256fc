"""Users' buckets and S3 keys in the object store: one small interface, two stores.

The operator commands need a bucket per user and S3 keys that reach only that bucket, minted
and revoked at once (a revoked key also voids every URL presigned with it). `StorageAdmin` is
that interface:

- `SeaweedIamAdmin` (local stacks, tests) drives the IAM API that SeaweedFS serves on its S3
  port when started with `-s3.iam.readOnly=false`, signed by the platform's identity (an
  `Admin` identity of its static `-s3.config`). Identities made this way are kept by the filer
  and survive restarts; the S3 server applies a change within milliseconds. A user's key gets an
  inline policy naming the user's bucket only, and cannot call IAM itself.
- `GarageAdmin` (deployments) drives Garage's admin API, v1 (Garage 1.x) or v2 (Garage 2.x):
  create key, allow key on bucket, delete key. It is written from Garage's documentation and is
  not exercised by the test suite: no Garage server can be installed where it runs.
"""

import json
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import boto3
import httpx
from botocore.exceptions import BotoCoreError, ClientError
from pydantic import BaseModel

from rondo.contracts.storage import error_code, is_no_bucket, make_s3_client, platform_s3_client
from rondo.gateway.config import GatewaySettings

if TYPE_CHECKING:
    from mypy_boto3_iam import IAMClient
else:
    IAMClient = object

BUCKET_ALREADY_THERE = ("BucketAlreadyOwnedByYou", "BucketAlreadyExists")
# How long a new key may take to authenticate before `create_key` gives up.
KEY_USABLE_TIMEOUT_S = 10.0
BUCKET_POLICY_NAME = "rondo-bucket"
# What a user's key may do in their bucket: objects, listing, multipart uploads; nothing on
# the bucket itself (no delete, no policy).
USER_BUCKET_ACTIONS = (
    "s3:GetObject",
    "s3:PutObject",
    "s3:DeleteObject",
    "s3:ListBucket",
    "s3:ListMultipartUploads",
    "s3:AbortMultipartUpload",
    "s3:GetBucketLocation",
)


class StorageAdminError(RuntimeError):
    """The object store refused or failed an administrative call; the message says which."""


class BucketExists(Exception):
    """`create_bucket` found the bucket already in the store (made by anyone)."""


class S3Key(BaseModel):
    access_key_id: str
    secret_access_key: str


class BucketUsage(BaseModel):
    objects: int
    bytes: int


def identity_name(user_id: str) -> str:
    """The store-side name of a Rondo user's identity (never one an operator could pick)."""
    return f"rondo-user-{user_id}"


class StorageAdmin(Protocol):
    """Administrative calls on the object store, made with the platform's credentials."""

    def ensure_bucket(self, bucket: str) -> None:
        """Create `bucket` unless it exists. Idempotent; never empties or changes one."""
        ...

    def create_bucket(self, bucket: str) -> None:
        """Create a new `bucket`; raise `BucketExists` when the store already has one of that
        name (whoever made it: it is not for a new user to inherit)."""
        ...

    def delete_bucket(self, bucket: str) -> None:
        """Delete an empty `bucket` (one `create_bucket` just made); a full one is refused."""
        ...

    def create_key(self, identity: str, bucket: str) -> S3Key:
        """Mint a new key for `identity` (created if new) that can read, write, list and
        delete objects in `bucket` and nothing else. The key authenticates when this returns.
        Keys the identity already has stay valid."""
        ...

    def key_exists(self, identity: str, access_key_id: str) -> bool:
        """Whether the store still knows this key of `identity`."""
        ...

    def delete_key(self, identity: str, access_key_id: str) -> None:
        """Revoke the key at once: requests and presigned URLs signed with it are refused from
        now on. Idempotent: an unknown key is not an error."""
        ...

    def bucket_usage(self, bucket: str) -> BucketUsage:
        """How many objects `bucket` holds and their total size in bytes."""
        ...


def bucket_policy(bucket: str) -> dict[str, Any]:
    """The IAM policy of a user's key: `USER_BUCKET_ACTIONS` on `bucket` and its objects."""
    return {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Effect": "Allow",
                "Action": list(USER_BUCKET_ACTIONS),
                "Resource": [f"arn:aws:s3:::{bucket}", f"arn:aws:s3:::{bucket}/*"],
            }
        ],
    }


class SeaweedIamAdmin:
    """`StorageAdmin` over SeaweedFS's embedded IAM API (see the module docstring)."""

    def __init__(self, settings: GatewaySettings) -> None:
        self._settings = settings
        self._s3 = platform_s3_client(settings)
        self._iam: IAMClient = boto3.client(
            "iam",
            endpoint_url=settings.s3_endpoint,
            aws_access_key_id=settings.s3_access_key,
            aws_secret_access_key=settings.s3_secret_key,
            region_name=settings.s3_region,
        )

    def ensure_bucket(self, bucket: str) -> None:
        try:
            self._s3.create_bucket(Bucket=bucket)
        except ClientError as error:
            if error_code(error) not in BUCKET_ALREADY_THERE:
                raise StorageAdminError(f"creating bucket {bucket} failed: {error}") from error
        except BotoCoreError as error:
            raise StorageAdminError(f"creating bucket {bucket} failed: {error}") from error

    def create_bucket(self, bucket: str) -> None:
        """Asked first (HEAD), then created: SeaweedFS, like AWS outside us-east-1, may answer
        a create of a bucket the platform already owns with success."""
        try:
            self._s3.head_bucket(Bucket=bucket)
        except ClientError as error:
            if not is_no_bucket(error):
                raise StorageAdminError(f"looking up bucket {bucket} failed: {error}") from error
        except BotoCoreError as error:
            raise StorageAdminError(f"looking up bucket {bucket} failed: {error}") from error
        else:
            raise BucketExists(bucket)
        try:
            self._s3.create_bucket(Bucket=bucket)
        except ClientError as error:
            if error_code(error) in BUCKET_ALREADY_THERE:
                raise BucketExists(bucket) from error
            raise StorageAdminError(f"creating bucket {bucket} failed: {error}") from error
        except BotoCoreError as error:
            raise StorageAdminError(f"creating bucket {bucket} failed: {error}") from error

    def delete_bucket(self, bucket: str) -> None:
        try:
            self._s3.delete_bucket(Bucket=bucket)
        except (ClientError, BotoCoreError) as error:
            raise StorageAdminError(f"deleting bucket {bucket} failed: {error}") from error

    def create_key(self, identity: str, bucket: str) -> S3Key:
        try:
            try:
                self._iam.create_user(UserName=identity)
            except ClientError as error:
                if error_code(error) != "EntityAlreadyExists":
                    raise
            self._iam.put_user_policy(
                UserName=identity,
                PolicyName=BUCKET_POLICY_NAME,
                PolicyDocument=json.dumps(bucket_policy(bucket)),
            )
            created = self._iam.create_access_key(UserName=identity)["AccessKey"]
        except (ClientError, BotoCoreError) as error:
            raise StorageAdminError(f"minting an S3 key for {identity} failed: {error}") from error
        key = S3Key(
            access_key_id=created["AccessKeyId"], secret_access_key=created["SecretAccessKey"]
        )
        self._wait_until_usable(key, bucket)
        return key

    def _wait_until_usable(self, key: S3Key, bucket: str) -> None:
        """The S3 server learns of new identities from the filer: usually at once, not always."""
        client = make_s3_client(
            self._settings.s3_endpoint,
            key.access_key_id,
            key.secret_access_key,
            self._settings.s3_region,
        )
        deadline = time.monotonic() + KEY_USABLE_TIMEOUT_S
        while True:
            try:
                client.head_bucket(Bucket=bucket)
                return
            except (ClientError, BotoCoreError) as error:
                if time.monotonic() > deadline:
                    raise StorageAdminError(
                        f"the new key {key.access_key_id} was not accepted within "
                        f"{KEY_USABLE_TIMEOUT_S:.0f} s: {error}"
                    ) from error
            time.sleep(0.05)

    def key_exists(self, identity: str, access_key_id: str) -> bool:
        try:
            keys = self._iam.list_access_keys(UserName=identity)["AccessKeyMetadata"]
        except ClientError as error:
            if error_code(error) == "NoSuchEntity":
                return False
            raise StorageAdminError(f"listing the keys of {identity} failed: {error}") from error
        except BotoCoreError as error:
            raise StorageAdminError(f"listing the keys of {identity} failed: {error}") from error
        return any(key.get("AccessKeyId") == access_key_id for key in keys)

    def delete_key(self, identity: str, access_key_id: str) -> None:
        try:
            self._iam.delete_access_key(UserName=identity, AccessKeyId=access_key_id)
        except ClientError as error:
            if error_code(error) != "NoSuchEntity":
                raise StorageAdminError(
                    f"revoking S3 key {access_key_id} failed: {error}"
                ) from error
        except BotoCoreError as error:
            raise StorageAdminError(f"revoking S3 key {access_key_id} failed: {error}") from error

    def bucket_usage(self, bucket: str) -> BucketUsage:
        """Counted by listing the bucket (SeaweedFS keeps no per-bucket totals to ask for)."""
        objects = size = 0
        try:
            for page in self._s3.get_paginator("list_objects_v2").paginate(Bucket=bucket):
                for item in page.get("Contents", []):
                    objects += 1
                    size += item.get("Size", 0)
        except (ClientError, BotoCoreError) as error:
            raise StorageAdminError(f"measuring bucket {bucket} failed: {error}") from error
        return BucketUsage(objects=objects, bytes=size)


@dataclass(frozen=True)
class GarageRoutes:
    """Where each call lives in one version of Garage's admin API: (method, path)."""

    bucket_info: tuple[str, str]  # ?globalAlias=
    create_bucket: tuple[str, str]
    delete_bucket: tuple[str, str]  # ?id=
    create_key: tuple[str, str]
    key_info: tuple[str, str]  # ?id=
    allow_key: tuple[str, str]
    delete_key: tuple[str, str]  # ?id=


GARAGE_ROUTES = {
    "v1": GarageRoutes(
        bucket_info=("GET", "/v1/bucket"),
        create_bucket=("POST", "/v1/bucket"),
        delete_bucket=("DELETE", "/v1/bucket"),
        create_key=("POST", "/v1/key"),
        key_info=("GET", "/v1/key"),
        allow_key=("POST", "/v1/bucket/allow"),
        delete_key=("DELETE", "/v1/key"),
    ),
    "v2": GarageRoutes(
        bucket_info=("GET", "/v2/GetBucketInfo"),
        create_bucket=("POST", "/v2/CreateBucket"),
        delete_bucket=("POST", "/v2/DeleteBucket"),
        create_key=("POST", "/v2/CreateKey"),
        key_info=("GET", "/v2/GetKeyInfo"),
        allow_key=("POST", "/v2/AllowBucketKey"),
        delete_key=("POST", "/v2/DeleteKey"),
    ),
}


class GarageAdmin:
    """`StorageAdmin` over Garage's admin API (Bearer admin token). Untested here: see the
    module docstring. Garage's keys are not tied to an identity, so `identity` only names the
    key (`name`), and a key is allowed read + write (not owner) on the user's bucket."""

    def __init__(self, settings: GatewaySettings, timeout_s: float = 10.0) -> None:
        self._routes = GARAGE_ROUTES[settings.garage_admin_api]
        self._http = httpx.Client(
            base_url=settings.garage_admin_url,
            headers={"Authorization": f"Bearer {settings.garage_admin_token}"},
            timeout=timeout_s,
        )

    def _call(
        self,
        route: tuple[str, str],
        *,
        params: dict[str, str] | None = None,
        body: dict[str, Any] | None = None,
        missing_ok: bool = False,
    ) -> dict[str, Any] | None:
        method, path = route
        try:
            response = self._http.request(method, path, params=params, json=body)
        except httpx.HTTPError as error:
            raise StorageAdminError(f"Garage admin API {path} unreachable: {error}") from error
        if missing_ok and response.status_code == httpx.codes.NOT_FOUND:
            return None
        if response.is_error:
            raise StorageAdminError(
                f"Garage admin API {method} {path} answered {response.status_code}: "
                f"{response.text[:500]}"
            )
        return dict(response.json()) if response.content else {}

    def _bucket_id(self, bucket: str) -> str | None:
        info = self._call(self._routes.bucket_info, params={"globalAlias": bucket}, missing_ok=True)
        return None if info is None else str(info["id"])

    def ensure_bucket(self, bucket: str) -> None:
        if self._bucket_id(bucket) is None:
            self._call(self._routes.create_bucket, body={"globalAlias": bucket})

    def create_bucket(self, bucket: str) -> None:
        if self._bucket_id(bucket) is not None:
            raise BucketExists(bucket)
        self._call(self._routes.create_bucket, body={"globalAlias": bucket})

    def delete_bucket(self, bucket: str) -> None:
        bucket_id = self._bucket_id(bucket)
        if bucket_id is not None:
            self._call(self._routes.delete_bucket, params={"id": bucket_id})

    def create_key(self, identity: str, bucket: str) -> S3Key:
        bucket_id = self._bucket_id(bucket)
        if bucket_id is None:
            raise StorageAdminError(f"bucket {bucket} does not exist")
        created = self._call(self._routes.create_key, body={"name": identity}) or {}
        key = S3Key(
            access_key_id=created["accessKeyId"], secret_access_key=created["secretAccessKey"]
        )
        self._call(
            self._routes.allow_key,
            body={
                "bucketId": bucket_id,
                "accessKeyId": key.access_key_id,
                "permissions": {"read": True, "write": True, "owner": False},
            },
        )
        return key

    def key_exists(self, identity: str, access_key_id: str) -> bool:
        info = self._call(self._routes.key_info, params={"id": access_key_id}, missing_ok=True)
        return info is not None

    def delete_key(self, identity: str, access_key_id: str) -> None:
        self._call(self._routes.delete_key, params={"id": access_key_id}, missing_ok=True)

    def bucket_usage(self, bucket: str) -> BucketUsage:
        info = self._call(self._routes.bucket_info, params={"globalAlias": bucket})
        info = info or {}
        return BucketUsage(objects=int(info.get("objects", 0)), bytes=int(info.get("bytes", 0)))


def make_storage_admin(settings: GatewaySettings) -> StorageAdmin:
    """The `StorageAdmin` that `RONDO_STORAGE_ADMIN` names."""
    if settings.storage_admin == "garage":
        return GarageAdmin(settings)
    return SeaweedIamAdmin(settings)
