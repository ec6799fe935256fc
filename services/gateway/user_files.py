"""A user's bucket as the files API sees it, through S3 clients signed with the user's own key.

Every call and every presigned URL uses the user's S3 key, which reaches their bucket only: the
store itself refuses anything else, and rotating the key voids the URLs at once. Large objects
never pass through the gateway: downloads and uploads go straight to the store by presigned
URL; only the text viewer reads a size-capped start of an object.

Keys are bucket-relative paths; `check_key` refuses, with 400 before the store is asked, what
is not one: a leading `/`, `.` or `..` segments, empty segments (`a//b`), backslashes, control
characters. Stores normalise such keys differently (SeaweedFS fails on `./x`), so one key could
name another object or fail as a store error.
"""

import codecs
import math
import threading
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from botocore.exceptions import BotoCoreError, ClientError
from fastapi import status

from rondo.contracts.api import (
    MULTIPART_PART_SIZE,
    FileListing,
    FileObject,
    FileText,
    MultipartUpload,
    PresignedUrl,
    StoredObject,
    UploadedPart,
)
from rondo.contracts.storage import (
    PRESIGNED_GET_SECONDS,
    PRESIGNED_PUT_SECONDS,
    S3Client,
    error_code,
    is_not_found,
    make_s3_client,
)
from rondo.gateway.config import GatewaySettings
from rondo.gateway.errors import ApiError

MAX_KEY_BYTES = 1024  # the S3 limit
MAX_PARTS = 10_000  # the S3 limit
# A multipart upload of a large file outlasts 15 minutes: its part URLs live an hour.
MULTIPART_URL_SECONDS = 3600
# One listing returns at most this many folders and objects together.
LIST_LIMIT = 5_000
DEFAULT_TEXT_BYTES = 1024 * 1024
# The store's answers that mean the request itself was wrong (the caller can fix it).
PART_ERROR_CODES = ("InvalidPart", "InvalidPartOrder", "EntityTooSmall")
REQUEST_ERROR_CODES = ("MalformedXML", "InvalidArgument", "InvalidRequest")
MAX_TEXT_BYTES = 8 * 1024 * 1024


def _invalid_key(key: str, why: str, fix: str) -> ApiError:
    return ApiError(
        status.HTTP_400_BAD_REQUEST,
        "invalid_key",
        f"object key {key!r} {why}",
        f"{fix}; keys are paths relative to your bucket, e.g. jobs/<name>/scripts/model_def.py",
    )


def _is_control(char: str) -> bool:
    code = ord(char)
    return code < 0x20 or 0x7F <= code <= 0x9F


def check_key(key: str, *, allow_empty: bool = False) -> str:
    """`key` if it is a safe bucket-relative key (or prefix; a trailing `/` names a folder);
    raises 400 `invalid_key` saying what to fix."""
    if not key:
        if allow_empty:
            return key
        raise _invalid_key(key, "is empty", "name an object")
    if any(_is_control(char) for char in key):
        raise _invalid_key(key, "contains control characters", "remove them")
    if "\\" in key:
        raise _invalid_key(key, "contains a backslash", "separate folders with '/'")
    if key.startswith("/"):
        raise _invalid_key(key, "starts with '/'", "drop the leading '/'")
    segments = key.split("/")
    if segments[-1] == "":
        segments.pop()  # a folder: "jobs/a/"
    if "" in segments:
        raise _invalid_key(key, "has an empty folder name ('//')", "use a single '/'")
    if "." in segments or ".." in segments:
        raise _invalid_key(
            key, "has a '.' or '..' folder", "name each folder; '.' and '..' are not resolved"
        )
    if len(key.encode("utf-8")) > MAX_KEY_BYTES:
        raise _invalid_key(key, f"is longer than {MAX_KEY_BYTES} bytes", "shorten it")
    return key


def storage_unavailable(message: str) -> ApiError:
    return ApiError(
        status.HTTP_503_SERVICE_UNAVAILABLE,
        "storage_unavailable",
        message,
        "retry in a moment; tell the operator if it persists",
    )


def object_not_found(key: str) -> ApiError:
    return ApiError(
        status.HTTP_404_NOT_FOUND,
        "not_found",
        f"no object {key} in your bucket",
        "GET /api/files?prefix=... lists what is there",
    )


@contextmanager
def storage_errors(key: str) -> Iterator[None]:
    """Turn the store's answers into the API's errors (404, 400, 409, 503)."""
    try:
        yield
    except ClientError as error:
        code = error_code(error)
        if is_not_found(error):
            raise object_not_found(key) from error
        if code == "NoSuchUpload":
            raise ApiError(
                status.HTTP_404_NOT_FOUND,
                "upload_not_found",
                f"no multipart upload of {key} with that upload_id",
                "it was completed or aborted already; start a new one",
            ) from error
        if code in REQUEST_ERROR_CODES:
            raise ApiError(
                status.HTTP_400_BAD_REQUEST,
                "invalid_request",
                f"the object store refused the request for {key} ({code})",
                "check the values sent against GET /docs",
            ) from error
        if code in PART_ERROR_CODES:
            raise ApiError(
                status.HTTP_400_BAD_REQUEST,
                "invalid_parts",
                f"the store refused the parts of {key}: {code}",
                "send every part's number and the ETag its PUT answered; every part but the "
                "last must be part_size bytes",
            ) from error
        if code == "NoSuchBucket":
            raise ApiError(
                status.HTTP_409_CONFLICT,
                "no_bucket",
                "your bucket does not exist",
                "ask the operator to create it (rondo users add)",
            ) from error
        if code in ("AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "403"):
            raise storage_unavailable(
                "the object store refused your S3 key; ask the operator to rotate it "
                "(rondo users rotate-s3-key)"
            ) from error
        raise storage_unavailable(f"the object store failed ({code or 'error'})") from error
    except BotoCoreError as error:
        raise storage_unavailable("the object store is unreachable") from error


def _expires_in(seconds: int) -> datetime:
    return datetime.now(UTC) + timedelta(seconds=seconds)


@dataclass(frozen=True)
class UserFiles:
    """One user's bucket: `s3` makes calls (the endpoint the gateway reaches), `presigner`
    signs URLs (the endpoint users reach); both hold the user's own key."""

    s3: S3Client
    presigner: S3Client
    bucket: str

    def list_folder(self, prefix: str) -> FileListing:
        """The folders and objects directly under `prefix`, at most `LIST_LIMIT` of them."""
        folders: list[str] = []
        objects: list[FileObject] = []
        token: str | None = None
        truncated = False
        with storage_errors(prefix):
            while True:
                page = self.s3.list_objects_v2(
                    Bucket=self.bucket,
                    Prefix=prefix,
                    Delimiter="/",
                    **({"ContinuationToken": token} if token else {}),
                )
                folders += [entry["Prefix"] for entry in page.get("CommonPrefixes", [])]
                objects += [
                    FileObject(
                        key=item["Key"], size=item["Size"], last_modified=item["LastModified"]
                    )
                    for item in page.get("Contents", [])
                ]
                token = page.get("NextContinuationToken")
                if not page.get("IsTruncated") or not token:
                    break
                if len(folders) + len(objects) >= LIST_LIMIT:
                    truncated = True
                    break
        return FileListing(prefix=prefix, folders=folders, objects=objects, truncated=truncated)

    def read_text(self, key: str, max_bytes: int) -> FileText:
        """The first `max_bytes` of a text object, decoded as UTF-8 (a character cut at the
        end is left out). Raises 415 `not_text` for binary content."""
        with storage_errors(key):
            size = self.s3.head_object(Bucket=self.bucket, Key=key)["ContentLength"]
            data = b""
            if size:
                ranged = self.s3.get_object(
                    Bucket=self.bucket, Key=key, Range=f"bytes=0-{max_bytes - 1}"
                )
                data = ranged["Body"].read(max_bytes)
        if b"\x00" in data:
            raise ApiError(
                status.HTTP_415_UNSUPPORTED_MEDIA_TYPE,
                "not_text",
                f"{key} is binary, not text",
                "download it instead: POST /api/files/download-url",
            )
        truncated = size > len(data)
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        text = decoder.decode(data, final=not truncated)
        return FileText(key=key, size=size, truncated=truncated, text=text)

    def download_url(self, key: str) -> PresignedUrl:
        """A GET URL for an existing object, valid for one hour."""
        with storage_errors(key):
            self.s3.head_object(Bucket=self.bucket, Key=key)
        url = self.presigner.generate_presigned_url(
            "get_object",
            Params={"Bucket": self.bucket, "Key": key},
            ExpiresIn=PRESIGNED_GET_SECONDS,
        )
        return PresignedUrl(url=url, expires_at=_expires_in(PRESIGNED_GET_SECONDS))

    def upload_url(self, key: str, content_type: str) -> PresignedUrl:
        """A PUT URL for one object, valid for 15 minutes; the PUT sends `content_type`."""
        url = self.presigner.generate_presigned_url(
            "put_object",
            Params={"Bucket": self.bucket, "Key": key, "ContentType": content_type},
            ExpiresIn=PRESIGNED_PUT_SECONDS,
        )
        return PresignedUrl(url=url, expires_at=_expires_in(PRESIGNED_PUT_SECONDS))

    def start_multipart(self, key: str, size: int, content_type: str) -> MultipartUpload:
        """Start a multipart upload of `size` bytes: one UploadPart URL per 50 MiB part."""
        part_count = math.ceil(size / MULTIPART_PART_SIZE)
        if part_count > MAX_PARTS:
            raise ApiError(
                status.HTTP_400_BAD_REQUEST,
                "too_large",
                f"{size} bytes need {part_count} parts of {MULTIPART_PART_SIZE} bytes; "
                f"S3 allows {MAX_PARTS}",
                "split the file",
            )
        with storage_errors(key):
            upload_id = self.s3.create_multipart_upload(
                Bucket=self.bucket, Key=key, ContentType=content_type
            )["UploadId"]
        urls = [
            self.presigner.generate_presigned_url(
                "upload_part",
                Params={
                    "Bucket": self.bucket,
                    "Key": key,
                    "UploadId": upload_id,
                    "PartNumber": number,
                },
                ExpiresIn=MULTIPART_URL_SECONDS,
            )
            for number in range(1, part_count + 1)
        ]
        return MultipartUpload(
            upload_id=upload_id, key=key, part_size=MULTIPART_PART_SIZE, urls=urls
        )

    def complete_multipart(
        self, upload_id: str, key: str, parts: list[UploadedPart]
    ) -> StoredObject:
        ordered = sorted(parts, key=lambda part: part.part_number)
        with storage_errors(key):
            answer = self.s3.complete_multipart_upload(
                Bucket=self.bucket,
                Key=key,
                UploadId=upload_id,
                MultipartUpload={
                    "Parts": [{"PartNumber": p.part_number, "ETag": p.etag} for p in ordered]
                },
            )
        return StoredObject(key=key, etag=answer.get("ETag", ""))

    def abort_multipart(self, upload_id: str, key: str) -> None:
        with storage_errors(key):
            self.s3.abort_multipart_upload(Bucket=self.bucket, Key=key, UploadId=upload_id)

    def delete(self, key: str) -> None:
        """Delete one existing object (404 if there is none)."""
        with storage_errors(key):
            self.s3.head_object(Bucket=self.bucket, Key=key)
            self.s3.delete_object(Bucket=self.bucket, Key=key)


class UserS3Clients:
    """S3 clients per user key, made once and reused (making one costs milliseconds), the
    least recently used dropped beyond `max_keys`. Thread-safe: routes run in a thread pool."""

    def __init__(self, settings: GatewaySettings, max_keys: int = 256) -> None:
        self._settings = settings
        self._max_keys = max_keys
        self._clients: OrderedDict[str, tuple[S3Client, S3Client]] = OrderedDict()
        self._lock = threading.Lock()

    def _make(self, endpoint: str, access_key_id: str, secret: str) -> S3Client:
        return make_s3_client(endpoint, access_key_id, secret, self._settings.s3_region)

    def files(self, bucket: str, access_key_id: str, secret: str) -> UserFiles:
        with self._lock:
            pair = self._clients.get(access_key_id)
            if pair is None:
                s3 = self._make(self._settings.s3_endpoint, access_key_id, secret)
                presigner = (
                    s3
                    if self._settings.presign_endpoint == self._settings.s3_endpoint
                    else self._make(self._settings.presign_endpoint, access_key_id, secret)
                )
                pair = self._clients[access_key_id] = (s3, presigner)
                if len(self._clients) > self._max_keys:
                    self._clients.popitem(last=False)
            else:
                self._clients.move_to_end(access_key_id)
        return UserFiles(s3=pair[0], presigner=pair[1], bucket=bucket)
