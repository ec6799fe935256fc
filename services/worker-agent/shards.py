"""Unpacking ZIPs from outside the agent without letting them escape or fill the disk.

A shard ZIP comes from a user: every entry is checked before anything is written, by the rules
the gateway checked at submission (`rondo.contracts.archives`: no `..`, no absolute paths, no
symlinks, bounded size and compression ratio), and the bytes actually written are counted too,
because the sizes in a ZIP's directory can lie. Shards unpack flat into the slot's data root:
the ZIP's root is the data root (`manifest.ndjson` must be there).
"""

import errno
import shutil
import stat
import zipfile
import zlib
from pathlib import Path, PurePosixPath

from rondo.contracts.archives import (
    MANIFEST_NAME,
    ArchiveLimits,
    entry_fault,
    excessive_ratio,
    normalized_name,
    path_fault,
    ratio_fault,
)

COPY_CHUNK_BYTES = 1024 * 1024
# The agent's name for the shared limits (it also unpacks startup kits with the defaults).
ExtractLimits = ArchiveLimits


class UnsafeArchive(Exception):
    """The archive was refused; the message says which entry and why, for the user."""


def safe_relative_path(name: str) -> PurePosixPath:
    """The entry's path inside the destination, or UnsafeArchive when it would leave it.

    Backslashes count as separators too: a ZIP made on Windows may use them.
    """
    fault = path_fault(name, folder="data folder")
    if fault is not None:
        raise UnsafeArchive(f"entry '{name}' {fault}")
    parts = [part for part in normalized_name(name).split("/") if part not in ("", ".")]
    return PurePosixPath(*parts) if parts else PurePosixPath(".")


def check_entries(archive: zipfile.ZipFile, limits: ExtractLimits) -> list[zipfile.ZipInfo]:
    """Refuse the archive as a whole before writing anything; return the entries to extract."""
    entries = archive.infolist()
    if len(entries) > limits.max_entries:
        raise UnsafeArchive(f"{len(entries)} entries, more than the limit of {limits.max_entries}")
    total = 0
    for info in entries:
        fault = entry_fault(info, folder="data folder")
        if fault is not None:
            raise UnsafeArchive(f"entry '{info.filename}' {fault}")
        total += info.file_size
        if (ratio := excessive_ratio(info, limits)) is not None:
            raise UnsafeArchive(
                f"entry '{info.filename}' {ratio_fault(ratio, limits)}: refused as a ZIP bomb"
            )
    if total > limits.max_total_bytes:
        raise UnsafeArchive(
            f"unpacks to {total} bytes, more than the limit of {limits.max_total_bytes} bytes"
        )
    return entries


def safe_extract(
    zip_path: Path, destination: Path, limits: ExtractLimits, keep_exec_bits: bool = False
) -> list[Path]:
    """Extract every entry of `zip_path` under `destination`; returns the files written.

    Raises UnsafeArchive (nothing or a partial tree written; the caller discards `destination`)
    when an entry is unsafe, the archive lies about its sizes, or it is not a ZIP at all.
    `keep_exec_bits` keeps the owner-execute bit of entries (startup kits carry shell scripts).
    """
    try:
        archive = zipfile.ZipFile(zip_path)
    except zipfile.BadZipFile as error:
        raise UnsafeArchive(f"not a valid ZIP file ({error})") from error
    destination.mkdir(parents=True, exist_ok=True)
    root = destination.resolve()
    written: list[Path] = []
    with archive:
        entries = check_entries(archive, limits)
        _refuse_when_disk_too_small(entries, destination)
        budget = limits.max_total_bytes
        for info in entries:
            relative = safe_relative_path(info.filename)
            target = (root / relative).resolve()
            # Belt and braces: a directory made by an earlier entry can never point outside.
            if target != root and root not in target.parents:
                raise UnsafeArchive(f"entry '{info.filename}' escapes the data folder")
            if info.is_dir():
                target.mkdir(parents=True, exist_ok=True)
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            budget -= _copy_bounded(archive, info, target, budget, limits)
            if keep_exec_bits and (info.external_attr >> 16) & stat.S_IXUSR:
                target.chmod(target.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP)
            written.append(target)
    return written


def _copy_bounded(
    archive: zipfile.ZipFile,
    info: zipfile.ZipInfo,
    target: Path,
    budget: int,
    limits: ExtractLimits,
) -> int:
    """Copy one entry, refusing it when it writes more than declared or than the budget."""
    allowed = min(budget, max(info.file_size, 0))
    copied = 0
    try:
        with archive.open(info) as source, target.open("wb") as out:
            while chunk := source.read(COPY_CHUNK_BYTES):
                copied += len(chunk)
                if copied > allowed:
                    raise UnsafeArchive(
                        f"entry '{info.filename}' holds more bytes than the ZIP declares"
                        if copied > info.file_size
                        else f"unpacks to more than the limit of {limits.max_total_bytes} bytes"
                    )
                out.write(chunk)
    except (zipfile.BadZipFile, EOFError, zlib.error) as error:
        raise UnsafeArchive(f"entry '{info.filename}' is corrupt ({error})") from error
    except OSError as error:
        if error.errno == errno.ENOSPC:
            raise UnsafeArchive(f"the disk filled up unpacking '{info.filename}'") from error
        raise
    return copied


def unpack_shard(zip_path: Path, data_root: Path, shard_key: str, limits: ExtractLimits) -> None:
    """Unpack a shard flat into `data_root` (emptied first) or raise UnsafeArchive.

    The message always starts with `shard <key>:` so the user learns which shard to fix.
    """
    if data_root.exists():
        shutil.rmtree(data_root)
    try:
        safe_extract(zip_path, data_root, limits)
        if not (data_root / MANIFEST_NAME).is_file():
            raise UnsafeArchive(_missing_manifest_message(data_root))
    except UnsafeArchive as error:
        shutil.rmtree(data_root, ignore_errors=True)
        raise UnsafeArchive(f"shard {shard_key}: {error}") from error


def _refuse_when_disk_too_small(entries: list[zipfile.ZipInfo], destination: Path) -> None:
    needed = sum(info.file_size for info in entries)
    free = shutil.disk_usage(destination).free
    if needed > free:
        raise UnsafeArchive(f"unpacks to {needed} bytes but only {free} bytes are free on disk")


def _missing_manifest_message(data_root: Path) -> str:
    nested = sorted(data_root.rglob(MANIFEST_NAME))
    where = f" (found at '{nested[0].relative_to(data_root)}')" if nested else ""
    return (
        f"{MANIFEST_NAME} missing at the ZIP root{where}; "
        f"re-zip so {MANIFEST_NAME} is at the root, without a wrapper folder"
    )
