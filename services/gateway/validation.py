"""Submission checks on the user's job folder, by listing their bucket (read-only).

`inspect_job_folder` never writes to the bucket. It raises `ApiError` (400) naming the exact
missing key or prefix, so the user knows what to upload.
"""

import logging
import re
from dataclasses import dataclass

from botocore.exceptions import BotoCoreError, ClientError
from fastapi import status

from rondo.contracts.storage import S3Client
from rondo.contracts.training import TrainingConfig
from rondo.gateway.errors import ApiError

logger = logging.getLogger(__name__)

MODEL_DEF = "scripts/model_def.py"
REQUIREMENTS = "requirements/requirements.txt"
SHARDS_DIR = "shards/"
CONFIGS_DIR = "configs/"
MODEL_DIR = "model/"
CUSTOM_APP_FILES = ("config_fed_server.json", "config_fed_client.json")
SHARD_SUFFIX = ".zip"
CHECKPOINT_SUFFIX = ".pt"


@dataclass(frozen=True)
class JobFolder:
    """What a valid job folder holds (keys are bucket keys)."""

    prefix: str
    shard_keys: list[str]
    has_custom_app: bool
    warm_start_key: str | None
    has_requirements: bool


def job_prefix(name: str) -> str:
    return f"jobs/{name}/"


def natural_key(key: str) -> list[int | str]:
    """Sort `shard_2.zip` before `shard_10.zip` (slot n gets the n-th shard)."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", key)]


def list_keys(s3: S3Client, bucket: str, prefix: str, *, direct_only: bool = False) -> list[str]:
    """Every object key under `prefix` (only its direct children with `direct_only`)."""
    paginator = s3.get_paginator("list_objects_v2")
    pages = paginator.paginate(
        Bucket=bucket, Prefix=prefix, **({"Delimiter": "/"} if direct_only else {})
    )
    return [obj["Key"] for page in pages for obj in page.get("Contents", [])]


def _missing_file(key: str, hint: str) -> ApiError:
    return ApiError(
        status.HTTP_400_BAD_REQUEST, "missing_file", f"{key} is not in your bucket", hint
    )


def inspect_job_folder(s3: S3Client, bucket: str, name: str, config: TrainingConfig) -> JobFolder:
    """Check `jobs/{name}/` in `bucket` and describe it.

    Raises `ApiError`: 400 `missing_file` (model_def.py, custom-app configs), 400
    `missing_shards`, 400 `invalid_config` (min_clients above the shard count), 400
    `missing_bucket`, 503 `storage_unavailable`.
    """
    prefix = job_prefix(name)
    try:
        return _inspect(s3, bucket, prefix, config)
    except ClientError as error:
        code = error.response.get("Error", {}).get("Code", "")
        if code == "NoSuchBucket":
            raise ApiError(
                status.HTTP_400_BAD_REQUEST,
                "missing_bucket",
                f"your bucket {bucket} does not exist",
                "ask the operator to create it",
            ) from error
        logger.exception("listing s3://%s/%s failed", bucket, prefix)
        raise _storage_unavailable(f"listing your bucket failed ({code or 'error'})") from error
    except BotoCoreError as error:
        logger.exception("listing s3://%s/%s failed", bucket, prefix)
        raise _storage_unavailable("the object store is unreachable") from error


def _storage_unavailable(message: str) -> ApiError:
    return ApiError(
        status.HTTP_503_SERVICE_UNAVAILABLE,
        "storage_unavailable",
        message,
        "retry in a moment; tell the operator if it persists",
    )


def _inspect(s3: S3Client, bucket: str, prefix: str, config: TrainingConfig) -> JobFolder:
    model_def = prefix + MODEL_DEF
    if model_def not in list_keys(s3, bucket, prefix + "scripts/"):
        raise _missing_file(
            model_def, f"upload your model class and fl_train_model function as {model_def}"
        )

    shards_prefix = prefix + SHARDS_DIR
    shard_keys = sorted(
        (
            key
            for key in list_keys(s3, bucket, shards_prefix, direct_only=True)
            if key.lower().endswith(SHARD_SUFFIX)
        ),
        key=natural_key,
    )
    if not shard_keys:
        raise ApiError(
            status.HTTP_400_BAD_REQUEST,
            "missing_shards",
            f"no .zip shard under {shards_prefix}",
            f"upload one ZIP per worker as {shards_prefix}shard_0.zip, shard_1.zip, ...",
        )
    if config.min_clients is not None and config.min_clients > len(shard_keys):
        raise ApiError(
            status.HTTP_400_BAD_REQUEST,
            "invalid_config",
            f"min_clients is {config.min_clients} but {shards_prefix} has "
            f"{len(shard_keys)} shard(s)",
            "lower min_clients or upload more shards (one per worker)",
        )

    requirements = prefix + REQUIREMENTS
    has_requirements = requirements in list_keys(s3, bucket, prefix + "requirements/")
    if not has_requirements:
        logger.info("%s/%s is missing: treated as an empty requirements file", bucket, requirements)

    config_keys = set(list_keys(s3, bucket, prefix + CONFIGS_DIR))
    has_custom_app = bool(config_keys)
    if has_custom_app:
        for file_name in CUSTOM_APP_FILES:
            key = prefix + CONFIGS_DIR + file_name
            if key not in config_keys:
                raise _missing_file(
                    key,
                    f"a custom NVFlare app under {prefix}{CONFIGS_DIR} needs "
                    f"{' and '.join(CUSTOM_APP_FILES)}; or remove {prefix}{CONFIGS_DIR} to let "
                    "Rondo generate the app",
                )

    model_keys = sorted(list_keys(s3, bucket, prefix + MODEL_DIR))
    checkpoints = [key for key in model_keys if key.endswith(CHECKPOINT_SUFFIX)]
    warm_start_key = checkpoints[0] if checkpoints else None
    if model_keys and warm_start_key is None:
        logger.warning("%s%s has no .pt checkpoint: no warm start", prefix, MODEL_DIR)

    return JobFolder(
        prefix=prefix,
        shard_keys=shard_keys,
        has_custom_app=has_custom_app,
        warm_start_key=warm_start_key,
        has_requirements=has_requirements,
    )
