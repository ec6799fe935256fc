"""`/api/files`: the user's own bucket: list, read text, presigned GET/PUT, multipart, delete.

Keys are relative to the user's bucket; every call uses the user's own S3 key (`UserFilesDep`).
Routes are plain functions: FastAPI runs them in its thread pool, where the S3 calls block.
"""

from typing import Annotated

from fastapi import APIRouter, Query, status

from rondo.contracts.api import (
    DownloadUrlRequest,
    ErrorBody,
    FileListing,
    FileText,
    MultipartAbort,
    MultipartComplete,
    MultipartInit,
    MultipartUpload,
    PresignedUrl,
    StoredObject,
    UploadUrlRequest,
)
from rondo.gateway.deps import UserFilesDep
from rondo.gateway.errors import ERROR_RESPONSES
from rondo.gateway.user_files import (
    DEFAULT_TEXT_BYTES,
    MAX_KEY_BYTES,
    MAX_TEXT_BYTES,
    check_key,
)

router = APIRouter(
    prefix="/api/files",
    tags=["files"],
    responses={
        **ERROR_RESPONSES,
        status.HTTP_400_BAD_REQUEST: {"model": ErrorBody, "description": "Invalid key"},
        status.HTTP_409_CONFLICT: {"model": ErrorBody, "description": "No bucket or S3 key"},
        status.HTTP_503_SERVICE_UNAVAILABLE: {"model": ErrorBody, "description": "Store down"},
    },
)

_NOT_FOUND = {status.HTTP_404_NOT_FOUND: {"model": ErrorBody, "description": "No such object"}}

KeyQuery = Annotated[
    str,
    Query(min_length=1, max_length=MAX_KEY_BYTES, description="Bucket-relative object key"),
]


@router.get("")
def list_files(
    files: UserFilesDep,
    prefix: Annotated[
        str, Query(max_length=MAX_KEY_BYTES, description="e.g. jobs/<name>/; empty: the root")
    ] = "",
) -> FileListing:
    """Folders and objects directly under `prefix` (delimiter "/")."""
    return files.list_folder(check_key(prefix, allow_empty=True))


@router.get(
    "/text",
    responses={
        **_NOT_FOUND,
        status.HTTP_415_UNSUPPORTED_MEDIA_TYPE: {"model": ErrorBody, "description": "Binary"},
    },
)
def read_text(
    files: UserFilesDep,
    key: KeyQuery,
    max_bytes: Annotated[int, Query(ge=1, le=MAX_TEXT_BYTES)] = DEFAULT_TEXT_BYTES,
) -> FileText:
    """The first `max_bytes` of a text object, for the viewer."""
    return files.read_text(check_key(key), max_bytes)


@router.post("/download-url", responses=_NOT_FOUND)
def create_download_url(body: DownloadUrlRequest, files: UserFilesDep) -> PresignedUrl:
    """A presigned GET of one existing object, valid for 1 hour."""
    return files.download_url(check_key(body.key))


@router.post("/upload-url")
def create_upload_url(body: UploadUrlRequest, files: UserFilesDep) -> PresignedUrl:
    """A presigned PUT of one object, valid for 15 minutes; send `content_type` with it."""
    return files.upload_url(check_key(body.key), body.content_type)


@router.post("/multipart/init")
def start_multipart_upload(body: MultipartInit, files: UserFilesDep) -> MultipartUpload:
    """Start a multipart upload: one presigned UploadPart URL per 50 MiB part, in order."""
    return files.start_multipart(check_key(body.key), body.size, body.content_type)


@router.post("/multipart/complete", responses=_NOT_FOUND)
def complete_multipart_upload(body: MultipartComplete, files: UserFilesDep) -> StoredObject:
    """Join the uploaded parts (their numbers and the ETags their PUTs answered)."""
    return files.complete_multipart(body.upload_id, check_key(body.key), body.parts)


@router.post("/multipart/abort", status_code=status.HTTP_204_NO_CONTENT, responses=_NOT_FOUND)
def abort_multipart_upload(body: MultipartAbort, files: UserFilesDep) -> None:
    """Drop an unfinished multipart upload and its parts."""
    files.abort_multipart(body.upload_id, check_key(body.key))


@router.delete("", status_code=status.HTTP_204_NO_CONTENT, responses=_NOT_FOUND)
def delete_file(files: UserFilesDep, key: KeyQuery) -> None:
    """Delete one object."""
    files.delete(check_key(key))
