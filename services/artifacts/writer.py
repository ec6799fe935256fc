"""Writes into the user's bucket: small objects in one PUT, large files multipart.

All methods block (boto3); the service calls them through `asyncio.to_thread`. A boto3 client is
safe to share between threads.
"""

from pathlib import Path, PurePosixPath

from boto3.s3.transfer import TransferConfig

from rondo.contracts.storage import S3Client

CONTENT_TYPES = {
    ".json": "application/json",
    ".txt": "text/plain; charset=utf-8",
    ".log": "text/plain; charset=utf-8",
    ".csv": "text/csv; charset=utf-8",
    ".png": "image/png",
    ".jpg": "image/jpeg",
    ".jpeg": "image/jpeg",
}
DEFAULT_CONTENT_TYPE = "application/octet-stream"
MIB = 1024 * 1024


def content_type(key: str) -> str:
    """The Content-Type the dashboard's viewer relies on (`.pt` and unknown: octet-stream)."""
    return CONTENT_TYPES.get(PurePosixPath(key).suffix.lower(), DEFAULT_CONTENT_TYPE)


class BucketWriter:
    """PUT/copy objects; files at least `multipart_threshold` bytes go multipart."""

    def __init__(self, client: S3Client, multipart_threshold: int = 64 * MIB) -> None:
        self._client = client
        self._transfer = TransferConfig(
            multipart_threshold=multipart_threshold,
            multipart_chunksize=max(8 * MIB, multipart_threshold // 4),
            max_concurrency=4,
            use_threads=True,
        )

    def put_bytes(self, bucket: str, key: str, data: bytes) -> None:
        """One PUT; for rendered reports (small by construction)."""
        self._client.put_object(Bucket=bucket, Key=key, Body=data, ContentType=content_type(key))

    def put_file(self, bucket: str, key: str, path: Path) -> None:
        """Upload a local file; multipart (parallel parts) above the threshold."""
        self._client.upload_file(
            str(path),
            bucket,
            key,
            ExtraArgs={"ContentType": content_type(key)},
            Config=self._transfer,
        )

    def copy(self, bucket: str, source_key: str, key: str) -> None:
        """Server-side copy inside one bucket (multipart copy for large objects).

        The copy keeps the source's Content-Type: use it between keys of the same kind.
        """
        self._client.copy({"Bucket": bucket, "Key": source_key}, bucket, key, Config=self._transfer)
