"""Submission checks of the user's job folder, read from their bucket (never written to).

`inspect_job_folder` lists `jobs/{name}/` once, reads the small files (`model_def.py`,
`requirements.txt`, a custom app's configs) and, by ranged GETs, each shard ZIP's central
directory and manifest; it runs the `rondo.contracts.job_checks` checks on them and either
describes the folder or raises one 400 `invalid_job` that lists every problem found.
"""

import logging
import re
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from botocore.exceptions import BotoCoreError, ClientError
from fastapi import status

from rondo.contracts.job_checks import (
    ArchiveLimits,
    Problem,
    ProblemCode,
    check_app_config,
    check_min_clients,
    check_model_def,
    check_requirements,
    check_shard,
)
from rondo.contracts.layout import (
    CONFIGS_DIR,
    CUSTOM_APP_FILES,
    MODEL_DEF_KEY,
    MODEL_DIR,
    REQUIREMENTS_KEY,
    SHARD_SUFFIX,
    SHARDS_DIR,
    job_prefix,
)
from rondo.contracts.storage import S3Client
from rondo.contracts.training import TrainingConfig
from rondo.gateway.errors import ApiError
from rondo.gateway.ranged_reader import S3RangeReader

logger = logging.getLogger(__name__)

CHECKPOINT_SUFFIX = ".pt"
# Scripts and configs larger than this are not read here (the workers still get them).
MAX_TEXT_BYTES = 8 * 1024 * 1024
# Shards are checked in parallel: each check waits on a few small S3 round trips.
SHARD_CHECK_THREADS = 8


@dataclass(frozen=True)
class JobFolder:
    """What a valid job folder holds (keys are bucket keys)."""

    prefix: str
    shard_keys: list[str]
    has_custom_app: bool
    warm_start_key: str | None


def natural_key(key: str) -> list[int | str]:
    """Sort `shard_2.zip` before `shard_10.zip` (slot n gets the n-th shard)."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", key)]


def list_objects(s3: S3Client, bucket: str, prefix: str) -> dict[str, int]:
    """Every object under `prefix`, with its size."""
    pages = s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
    return {obj["Key"]: obj["Size"] for page in pages for obj in page.get("Contents", [])}


def inspect_job_folder(
    s3: S3Client,
    bucket: str,
    name: str,
    config: TrainingConfig,
    limits: ArchiveLimits | None = None,
) -> JobFolder:
    """Check `jobs/{name}/` in `bucket` and describe it.

    Raises `ApiError`: 400 `invalid_job` with every problem of the folder (its `message` and
    `hint` are the first one's), 400 `missing_bucket`, 503 `storage_unavailable`.
    """
    prefix = job_prefix(name)
    try:
        folder, problems = _inspect(s3, bucket, prefix, config, limits or ArchiveLimits())
    except ClientError as error:
        code = error.response.get("Error", {}).get("Code", "")
        if code == "NoSuchBucket":
            raise ApiError(
                status.HTTP_400_BAD_REQUEST,
                "missing_bucket",
                f"your bucket {bucket} does not exist",
                "ask the operator to create it",
            ) from error
        logger.exception("reading s3://%s/%s failed", bucket, prefix)
        raise _storage_unavailable(f"reading your bucket failed ({code or 'error'})") from error
    except BotoCoreError as error:
        logger.exception("reading s3://%s/%s failed", bucket, prefix)
        raise _storage_unavailable("the object store is unreachable") from error
    if problems:
        raise invalid_job(problems)
    return folder


def invalid_job(problems: list[Problem]) -> ApiError:
    """One 400 for all the problems; its message is the first, with how many follow."""
    first, more = problems[0], len(problems) - 1
    message = first.message
    if more:
        message += f" (and {more} more problem{'s' if more > 1 else ''}: see problems)"
    return ApiError(
        status.HTTP_400_BAD_REQUEST, "invalid_job", message, first.hint, problems=problems
    )


def _storage_unavailable(message: str) -> ApiError:
    return ApiError(
        status.HTTP_503_SERVICE_UNAVAILABLE,
        "storage_unavailable",
        message,
        "retry in a moment; tell the operator if it persists",
    )


@dataclass(frozen=True)
class _FolderListing:
    """The job folder as listed once: its keys with their sizes, and reading small files."""

    s3: S3Client
    bucket: str
    prefix: str
    sizes: dict[str, int]

    def key(self, relative: str) -> str:
        return self.prefix + relative

    def has(self, key: str) -> bool:
        return key in self.sizes

    def keys_under(self, relative: str) -> list[str]:
        return sorted(key for key in self.sizes if key.startswith(self.prefix + relative))

    def read_small(self, key: str) -> bytes | None:
        """The object's bytes; None (left unchecked) when larger than `MAX_TEXT_BYTES`."""
        if self.sizes[key] > MAX_TEXT_BYTES:
            logger.info("s3://%s/%s is %d bytes: not checked", self.bucket, key, self.sizes[key])
            return None
        return self.s3.get_object(Bucket=self.bucket, Key=key)["Body"].read()


def _inspect(
    s3: S3Client, bucket: str, prefix: str, config: TrainingConfig, limits: ArchiveLimits
) -> tuple[JobFolder, list[Problem]]:
    listing = _FolderListing(s3, bucket, prefix, list_objects(s3, bucket, prefix))
    folder = JobFolder(
        prefix=prefix,
        shard_keys=_shard_keys(listing),
        has_custom_app=bool(listing.keys_under(CONFIGS_DIR)),
        warm_start_key=_warm_start_key(listing),
    )
    problems = [
        *_model_def_problems(listing, config, folder.has_custom_app),
        *_requirements_problems(listing),
        *(_custom_app_problems(listing) if folder.has_custom_app else []),
        *_shards_problems(listing, folder.shard_keys, config, limits),
    ]
    return folder, problems


def _shard_keys(listing: _FolderListing) -> list[str]:
    """The ZIPs directly under shards/, in slot order."""
    shards_prefix = listing.key(SHARDS_DIR)
    return sorted(
        (
            key
            for key in listing.keys_under(SHARDS_DIR)
            if "/" not in key.removeprefix(shards_prefix) and key.lower().endswith(SHARD_SUFFIX)
        ),
        key=natural_key,
    )


def _missing_file(key: str, hint: str) -> Problem:
    return Problem(
        code=ProblemCode.MISSING_FILE, message=f"{key} is not in your bucket", hint=hint, path=key
    )


def _model_def_problems(
    listing: _FolderListing, config: TrainingConfig, has_custom_app: bool
) -> list[Problem]:
    key = listing.key(MODEL_DEF_KEY)
    if not listing.has(key):
        hint = f"upload your model class and fl_train_model function as {key}"
        return [_missing_file(key, hint)]
    source = listing.read_small(key)
    if source is None:
        return []
    # A custom app's own executor decides which functions and class it uses.
    return check_model_def(
        source,
        key,
        needs_train_function=not has_custom_app,
        model_class=None if has_custom_app else config.model_class,
    )


def _requirements_problems(listing: _FolderListing) -> list[Problem]:
    key = listing.key(REQUIREMENTS_KEY)
    if not listing.has(key):
        hint = f"upload {key}; an empty file is fine when the job needs no extra packages"
        return [_missing_file(key, hint)]
    content = listing.read_small(key)
    return [] if content is None else check_requirements(content, key)


def _custom_app_problems(listing: _FolderListing) -> list[Problem]:
    configs = listing.key(CONFIGS_DIR)
    problems: list[Problem] = []
    for file_name in CUSTOM_APP_FILES:
        key = configs + file_name
        if not listing.has(key):
            hint = (
                f"a custom NVFlare app under {configs} needs {', '.join(CUSTOM_APP_FILES)}; "
                f"or remove {configs} to let Rondo generate the app"
            )
            problems.append(_missing_file(key, hint))
        elif (content := listing.read_small(key)) is not None:
            problems += check_app_config(content, key)
    return problems


def _shards_problems(
    listing: _FolderListing, shard_keys: list[str], config: TrainingConfig, limits: ArchiveLimits
) -> list[Problem]:
    shards_prefix = listing.key(SHARDS_DIR)
    problems: list[Problem] = []
    if not shard_keys:
        problems.append(
            Problem(
                code=ProblemCode.MISSING_SHARDS,
                message=f"no .zip shard under {shards_prefix}",
                hint=f"upload one ZIP per worker as {shards_prefix}shard_0.zip, shard_1.zip, ...",
                path=shards_prefix,
            )
        )
    problems += check_min_clients(config.min_clients, len(shard_keys), shards_prefix)
    with ThreadPoolExecutor(SHARD_CHECK_THREADS, thread_name_prefix="shard-check") as pool:
        for shard_problems in pool.map(
            lambda key: _shard_problems(listing, key, limits), shard_keys
        ):
            problems += shard_problems
    return problems


def _shard_problems(listing: _FolderListing, key: str, limits: ArchiveLimits) -> list[Problem]:
    """One shard's problems, read by ranged GETs (its directory and manifest only)."""
    reader = S3RangeReader(listing.s3, listing.bucket, key, listing.sizes[key])
    problems = check_shard(reader, key, limits)
    logger.debug(
        "checked shard %s (%d bytes): %d requests, %d bytes read",
        key,
        listing.sizes[key],
        reader.requests,
        reader.bytes_fetched,
    )
    return problems


def _warm_start_key(listing: _FolderListing) -> str | None:
    """The first checkpoint under model/, if any."""
    model_keys = listing.keys_under(MODEL_DIR)
    checkpoints = [key for key in model_keys if key.endswith(CHECKPOINT_SUFFIX)]
    if model_keys and not checkpoints:
        logger.warning("%s%s has no .pt checkpoint: no warm start", listing.prefix, MODEL_DIR)
    return checkpoints[0] if checkpoints else None
