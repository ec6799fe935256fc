"""The S3 client every service uses: SigV4, path-style addressing, configurable region.

Only plain S3 calls are made, so SeaweedFS (local) and Garage (deployment) both serve.
"""

from typing import TYPE_CHECKING

import boto3
from botocore.config import Config

from rondo.contracts.config import ServiceSettings

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client
else:
    S3Client = object

PRESIGNED_GET_SECONDS = 3600
PRESIGNED_PUT_SECONDS = 900


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
