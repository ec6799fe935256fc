"""A read-only, seekable file over one S3 object, read by ranged GETs: `zipfile.ZipFile` opens
a shard through it and fetches only the ZIP's end records, its central directory and the
members it reads, never the whole object.
"""

import io
from typing import TYPE_CHECKING

from rondo.contracts.storage import S3Client

if TYPE_CHECKING:
    from _typeshed import WriteableBuffer

# Every GET fetches at least this much, around the requested bytes: zipfile's small reads (the
# 22-byte end record, a 30-byte local header) then cost one request, not several.
READ_AHEAD_BYTES = 64 * 1024


class S3RangeReader(io.RawIOBase):
    """`bucket/key` of `size` bytes as a file; counts the requests and bytes it fetched."""

    def __init__(self, s3: S3Client, bucket: str, key: str, size: int) -> None:
        super().__init__()
        self._s3 = s3
        self._bucket = bucket
        self._key = key
        self._size = size
        self._position = 0
        self._block_start = 0
        self._block = b""
        self.requests = 0
        self.bytes_fetched = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._position

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        origin = {io.SEEK_SET: 0, io.SEEK_CUR: self._position, io.SEEK_END: self._size}[whence]
        if origin + offset < 0:
            raise OSError(f"seek before the start of s3://{self._bucket}/{self._key}")
        self._position = origin + offset
        return self._position

    def readinto(self, buffer: "WriteableBuffer") -> int:
        view = memoryview(buffer).cast("B")
        data = self._read_at(self._position, len(view))
        view[: len(data)] = data
        self._position += len(data)
        return len(data)

    def readall(self) -> bytes:
        data = self._read_at(self._position, self._size - self._position)
        self._position += len(data)
        return data

    def _read_at(self, start: int, length: int) -> bytes:
        end = min(start + length, self._size)
        if end <= start:
            return b""
        block_end = self._block_start + len(self._block)
        if not (self._block_start <= start and end <= block_end):
            self._fetch(start, end)
        offset = start - self._block_start
        return self._block[offset : offset + end - start]

    def _fetch(self, start: int, end: int) -> None:
        """Fetch [start, end) widened to `READ_AHEAD_BYTES`: forward, or backward at the end of
        the object (where zipfile looks first)."""
        if end - start < READ_AHEAD_BYTES:
            end = min(self._size, start + READ_AHEAD_BYTES)
            start = max(0, min(start, end - READ_AHEAD_BYTES))
        response = self._s3.get_object(
            Bucket=self._bucket, Key=self._key, Range=f"bytes={start}-{end - 1}"
        )
        self._block = response["Body"].read()
        self._block_start = start
        self.requests += 1
        self.bytes_fetched += len(self._block)
