"""The user's bucket through the API: list, read, upload, download and delete objects.

Bytes never pass through the API: it hands out presigned URLs and `Transfers` moves the
bytes. Uploads skip objects already there with the same size and ETag (see
`rondo.checksums`); downloads are checked against the object's ETag before they replace
anything.
"""

import contextlib
import mimetypes
from pathlib import Path, PurePosixPath

from pydantic import BaseModel, Field

from rondo.api_client import ApiClient
from rondo.checksums import matches_etag
from rondo.contracts.api import (
    MULTIPART_PART_SIZE,
    DownloadUrlRequest,
    FileListing,
    FileObject,
    FileText,
    MultipartAbort,
    MultipartComplete,
    MultipartInit,
    MultipartUpload,
    PresignedUrl,
    UploadedPart,
    UploadUrlRequest,
)
from rondo.errors import ChecksumMismatch, InvalidInput, RondoError
from rondo.transfers import SilentListener, TransferListener, Transfers

DEFAULT_CONTENT_TYPE = "application/octet-stream"
_CONTENT_TYPES = {".py": "text/x-python", ".ndjson": "application/x-ndjson"}


class UploadReport(BaseModel):
    """What a sync of local files into the bucket did (keys are bucket keys)."""

    uploaded: list[str] = Field(default_factory=list)
    skipped: list[str] = Field(default_factory=list, description="Already there, same content")
    removed: list[str] = Field(default_factory=list, description="Stale: not in the local set")
    bytes_sent: int = 0


def content_type_of(path: Path) -> str:
    suffix = path.suffix.lower()
    return _CONTENT_TYPES.get(suffix) or mimetypes.guess_type(path.name)[0] or DEFAULT_CONTENT_TYPE


class Bucket:
    """The current user's bucket (keys are bucket-relative, no leading slash)."""

    def __init__(self, api: ApiClient, transfers: Transfers) -> None:
        self._api = api
        self._transfers = transfers

    # --- reading ----------------------------------------------------------------------

    def ls(self, prefix: str = "") -> FileListing:
        """The folders and objects directly under `prefix` (a folder ends with "/")."""
        return self._api.request("GET", "/api/files", FileListing, params={"prefix": prefix})

    def walk(self, prefix: str) -> list[FileObject]:
        """Every object under `prefix`, at any depth."""
        listing = self.ls(prefix)
        found = list(listing.objects)
        for folder in listing.folders:
            found.extend(self.walk(folder))
        return found

    def text(self, key: str, max_bytes: int | None = None) -> FileText:
        """The start of a text object (at most `max_bytes`, the API's default 1 MiB)."""
        params = {"key": key, "max_bytes": max_bytes}
        return self._api.request("GET", "/api/files/text", FileText, params=params)

    def download_url(self, key: str) -> PresignedUrl:
        """A presigned GET URL (valid 1 h)."""
        body = DownloadUrlRequest(key=key)
        return self._api.request("POST", "/api/files/download-url", PresignedUrl, body=body)

    def download(self, key: str, target: Path, listener: TransferListener | None = None) -> Path:
        """Fetch `key` into the file `target`, verified against the object's ETag."""

        def verify(path: Path, etag: str) -> None:
            verdict = matches_etag(path, etag)
            if not verdict:
                raise ChecksumMismatch(
                    f"{key}: the downloaded bytes do not match its checksum (ETag {etag})"
                    if verdict is False
                    else f"{key}: its ETag {etag!r} is not a checksum this SDK can verify",
                    "download it again; if it persists, tell the operator",
                )

        url = self.download_url(key).url
        self._transfers.download(url, target, key, listener or SilentListener(), verify)
        return target

    def delete(self, key: str) -> None:
        self._api.send("DELETE", "/api/files", params={"key": key})

    # --- writing ----------------------------------------------------------------------

    def upload(
        self,
        path: Path,
        key: str,
        listener: TransferListener | None = None,
        *,
        part_size: int = MULTIPART_PART_SIZE,
    ) -> None:
        """Upload one file: a single presigned PUT below `part_size`, multipart above."""
        listener = listener or SilentListener()
        content_type = content_type_of(path)
        size = path.stat().st_size
        if size < part_size:
            body = UploadUrlRequest(key=key, content_type=content_type)
            url = self._api.request("POST", "/api/files/upload-url", PresignedUrl, body=body)
            self._transfers.put_file(url.url, path, content_type, key, listener)
            return
        init = MultipartInit(key=key, size=size, content_type=content_type)
        upload = self._api.request("POST", "/api/files/multipart/init", MultipartUpload, body=init)
        try:
            etags = self._transfers.put_parts(upload.urls, path, upload.part_size, key, listener)
            parts = [UploadedPart(part_number=n, etag=e) for n, e in enumerate(etags, start=1)]
            done = MultipartComplete(upload_id=upload.upload_id, key=key, parts=parts)
            self._api.send("POST", "/api/files/multipart/complete", body=done)
        except BaseException:
            abort = MultipartAbort(upload_id=upload.upload_id, key=key)
            with contextlib.suppress(RondoError):  # the upload's own error is the one to report
                self._api.send("POST", "/api/files/multipart/abort", body=abort)
            raise

    def is_stored(self, path: Path, remote: FileObject) -> bool:
        """Whether `remote` already holds `path`'s content (same size, matching ETag)."""
        if remote.size != path.stat().st_size:
            return False
        etag = self._transfers.etag(self.download_url(remote.key).url, remote.key)
        return bool(matches_etag(path, etag))

    def sync(
        self,
        files: dict[str, Path],
        mirrored: list[str],
        listener: TransferListener | None = None,
    ) -> UploadReport:
        """Make the bucket hold `files` (bucket key -> local file).

        Objects already there with the same content are skipped. Then, under each prefix of
        `mirrored`, objects that are not in `files` are removed (a stale shard would become
        an extra worker); nothing is removed before every upload succeeded.
        """
        for key in files:
            _check_key(key)
        folders = sorted({_folder_of(key) for key in files})
        existing = {obj.key: obj for folder in folders for obj in self.ls(folder).objects}
        report = UploadReport()
        for key, path in files.items():
            if key in existing and self.is_stored(path, existing[key]):
                report.skipped.append(key)
                continue
            self.upload(path, key, listener)
            report.uploaded.append(key)
            report.bytes_sent += path.stat().st_size
        stale = {obj.key for prefix in mirrored for obj in self.walk(prefix)} - set(files)
        for key in sorted(stale):
            self.delete(key)
            report.removed.append(key)
        return report


def _folder_of(key: str) -> str:
    """`jobs/x/a.zip` -> `jobs/x/`; a key at the root -> ``."""
    head, slash, _ = key.rpartition("/")
    return head + slash


def _check_key(key: str) -> None:
    parts = PurePosixPath(key).parts
    if not key or key.startswith("/") or ".." in parts:
        raise InvalidInput(f"{key!r} is not a valid bucket key", "use a relative path without ..")
