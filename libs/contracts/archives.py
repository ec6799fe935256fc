"""The rules a user's ZIP (a shard) must follow, shared by every place that reads one.

The gateway (`job_checks.check_shard`, over ranged S3 reads), the CLI (before uploading) and
the worker-agent (`shards.safe_extract`, before unpacking) apply the same rules, so a shard the
platform accepts at submission is one the agent unpacks, and the reasons read the same:

- every entry name is relative and stays inside the shard (no absolute path, no drive letter,
  no `..` segment; backslashes count as separators, as a ZIP made on Windows may use them);
- no symbolic links, no encrypted entries;
- at most `ArchiveLimits.max_entries` entries and `max_total_bytes` unpacked, and no entry of
  at least `ratio_check_min_bytes` that expands more than `max_ratio` times (ZIP bombs);
- `manifest.ndjson` at the ZIP's root.

Only the central directory (`zipfile.ZipInfo`) is looked at here; callers that unpack still
count the bytes actually written, because a directory can lie about sizes.
"""

import stat
import zipfile
from collections.abc import Iterable

from pydantic import BaseModel, Field

MANIFEST_NAME = "manifest.ndjson"

DEFAULT_MAX_ENTRIES = 1_000_000
DEFAULT_MAX_TOTAL_BYTES = 64 * 1024**3
DEFAULT_MAX_RATIO = 200.0
# Small entries may compress extremely well (a file of zeros) without being a threat.
RATIO_CHECK_MIN_BYTES = 1024 * 1024

LINK_FAULT = "is a symbolic link; links are refused"
ENCRYPTED_FAULT = "is encrypted; workers cannot unpack it"


class ArchiveLimits(BaseModel):
    """What a shard ZIP may unpack to (the gateway, the CLI and the agent use these)."""

    max_entries: int = Field(default=DEFAULT_MAX_ENTRIES, gt=0)
    max_total_bytes: int = Field(default=DEFAULT_MAX_TOTAL_BYTES, gt=0)
    max_ratio: float = Field(default=DEFAULT_MAX_RATIO, gt=1)
    ratio_check_min_bytes: int = Field(default=RATIO_CHECK_MIN_BYTES, ge=0)
    # A larger manifest is not read by `check_shard`: its lines are left to the user's code.
    max_manifest_bytes: int = Field(default=64 * 1024 * 1024, gt=0)


def normalized_name(name: str) -> str:
    """An entry name with backslashes read as separators."""
    return name.replace("\\", "/")


def path_fault(name: str, folder: str = "shard folder") -> str | None:
    """Why unpacking an entry (or following a path) named `name` could leave `folder`, if it
    could: an absolute path (also `C:...`) or a `..` segment. None when the name is safe."""
    normalized = normalized_name(name)
    if normalized.startswith("/") or normalized[1:2] == ":":
        return "has an absolute path"
    if ".." in normalized.split("/"):
        return f"escapes the {folder} (contains '..')"
    return None


def is_link(info: zipfile.ZipInfo) -> bool:
    """Whether the entry is a Unix symbolic link (mode bits live in external_attr's high 16)."""
    return stat.S_ISLNK(info.external_attr >> 16)


def is_encrypted(info: zipfile.ZipInfo) -> bool:
    return bool(info.flag_bits & 0x1)


def entry_fault(info: zipfile.ZipInfo, folder: str = "shard folder") -> str | None:
    """Why the entry may not be unpacked (unsafe name, link, encrypted), or None."""
    fault = path_fault(info.filename, folder)
    if fault is None and is_link(info):
        fault = LINK_FAULT
    if fault is None and is_encrypted(info):
        fault = ENCRYPTED_FAULT
    return fault


def excessive_ratio(info: zipfile.ZipInfo, limits: ArchiveLimits) -> float | None:
    """The entry's expansion ratio when it is large enough to check and over the limit."""
    if info.file_size < limits.ratio_check_min_bytes:
        return None
    ratio = info.file_size / max(info.compress_size, 1)
    return ratio if ratio > limits.max_ratio else None


def ratio_fault(ratio: float, limits: ArchiveLimits) -> str:
    return f"expands {ratio:.0f}x (limit {limits.max_ratio:.0f}x)"


def manifest_entry(entries: Iterable[zipfile.ZipInfo]) -> zipfile.ZipInfo | None:
    """The manifest at the ZIP's root, if there is one."""
    return next((info for info in entries if info.filename == MANIFEST_NAME), None)
