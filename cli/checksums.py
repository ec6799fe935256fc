"""S3 ETags of local files: skip uploads that are already there, verify downloads.

An S3 ETag is the MD5 of the object for a single PUT, and for a multipart upload the MD5 of the
parts' binary MD5s followed by `-<number of parts>`. Computing it locally needs the part size
the uploader used, which the ETag does not say: we try the sizes that S3 clients use (ours is
the API's `MULTIPART_PART_SIZE`, boto3's 8 MiB, ...). SeaweedFS and Garage both follow this scheme.
"""

import hashlib
import math
import re
from pathlib import Path

from rondo.contracts.api import MULTIPART_PART_SIZE

MIB = 1024 * 1024
# Part sizes common S3 clients use; a multipart ETag is checked against those that fit.
KNOWN_PART_SIZES_MIB = (5, 8, 10, 15, 16, 25, 32, 50, 64, 100, 128)
_READ_SIZE = MIB
_ETAG = re.compile(r"^([0-9a-f]{32})(?:-(\d+))?$")


def md5_of(path: Path) -> str:
    """Hex MD5 of the whole file: the ETag of a single-part upload."""
    digest = hashlib.md5(usedforsecurity=False)
    with path.open("rb") as stream:
        while block := stream.read(_READ_SIZE):
            digest.update(block)
    return digest.hexdigest()


def multipart_etag(path: Path, part_size: int) -> str:
    """The ETag S3 gives `path` uploaded in parts of `part_size` bytes."""
    return _multipart_etags(path, [part_size])[part_size]


def expected_etag(path: Path, part_size: int = MULTIPART_PART_SIZE) -> str:
    """The ETag an upload of `path` by this SDK produces: one PUT below `part_size`,
    multipart from there on."""
    if path.stat().st_size < part_size:
        return md5_of(path)
    return multipart_etag(path, part_size)


def matches_etag(path: Path, etag: str) -> bool | None:
    """Whether `path` has the content of an object with this ETag.

    None when it cannot tell: the ETag is not an MD5 (encrypted objects, other stores), or a
    multipart ETag whose part count fits none of the known part sizes.
    """
    parsed = _ETAG.match(etag.strip().strip('"').lower())
    if parsed is None:
        return None
    digest, parts = parsed.group(1), parsed.group(2)
    if parts is None:
        return md5_of(path) == digest
    size = path.stat().st_size
    candidates = [
        mib * MIB for mib in KNOWN_PART_SIZES_MIB if _part_count(size, mib * MIB) == int(parts)
    ]
    if not candidates:
        return None
    wanted = f"{digest}-{parts}"
    return wanted in _multipart_etags(path, candidates).values()


def _part_count(size: int, part_size: int) -> int:
    return max(1, math.ceil(size / part_size))


def _multipart_etags(path: Path, part_sizes: list[int]) -> dict[int, str]:
    """The multipart ETag of `path` for each part size, in one read of the file."""
    parts: dict[int, list[bytes]] = {size: [] for size in part_sizes}
    current = {size: hashlib.md5(usedforsecurity=False) for size in part_sizes}
    filled = dict.fromkeys(part_sizes, 0)
    # A read size dividing every part size: a block never straddles two parts.
    read_size = math.gcd(_READ_SIZE, *part_sizes)
    with path.open("rb") as stream:
        while block := stream.read(read_size):
            for size in part_sizes:
                current[size].update(block)
                filled[size] += len(block)
                if filled[size] >= size:
                    parts[size].append(current[size].digest())
                    current[size] = hashlib.md5(usedforsecurity=False)
                    filled[size] = 0
    etags = {}
    for size in part_sizes:
        if filled[size] or not parts[size]:
            parts[size].append(current[size].digest())
        combined = hashlib.md5(b"".join(parts[size]), usedforsecurity=False).hexdigest()
        etags[size] = f"{combined}-{len(parts[size])}"
    return etags
