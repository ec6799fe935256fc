"""The S3 client every service uses: SigV4, path-style addressing, configurable region.

Only plain S3 calls are made, so SeaweedFS (local) and Garage (deployment) both serve.
"""

from typing import TYPE_CHECKING

import boto3
from botocore.config import Config
from botocore.exceptions import ClientError

from rondo.contracts.config import ServiceSettings

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client
else:
    S3Client = object

PRESIGNED_GET_SECONDS = 3600
PRESIGNED_PUT_SECONDS = 900

# How S3 stores say "no such object": AWS and Garage answer NoSuchKey to a GET, a HEAD has no
# body so botocore reports the bare status ("404"); SeaweedFS answers some HEADs "NotFound".
NOT_FOUND_CODES = frozenset({"404", "NoSuchKey", "NotFound"})
# The same for a bucket (HEAD bucket answers "404" or "NotFound").
NO_BUCKET_CODES = frozenset({"404", "NoSuchBucket", "NotFound"})


def error_code(error: ClientError) -> str:
    """The S3 error code of a botocore `ClientError` ("" when the answer had none)."""
    return str(error.response.get("Error", {}).get("Code", ""))


def is_not_found(error: ClientError) -> bool:
    """Whether `error` says the object does not exist (any store's spelling)."""
    return error_code(error) in NOT_FOUND_CODES


def is_no_bucket(error: ClientError) -> bool:
    """Whether `error` says the bucket does not exist (any store's spelling)."""
    return error_code(error) in NO_BUCKET_CODES


def make_s3_client(
    endpoint: str, access_key: str, secret_key: str, region: str = "garage"
) -> "S3Client":
    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        aws_access_key_id=access_key,
        aws_secret_access_key=secret_key,
        region_name=region,
        config=Config(
            signature_version="s3v4",
            s3={"addressing_style": "path"},
            retries={"max_attempts": 3, "mode": "standard"},
            connect_timeout=5,
            read_timeout=60,
        ),
    )


def platform_s3_client(settings: ServiceSettings) -> "S3Client":
    """The platform's own client (its credentials reach every bucket)."""
    return make_s3_client(
        settings.s3_endpoint, settings.s3_access_key, settings.s3_secret_key, settings.s3_region
    )
