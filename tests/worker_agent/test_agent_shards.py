"""Shard ZIPs unpack flat into the data root, and unsafe ones are refused with clear messages."""

import stat
import zipfile
from pathlib import Path

import pytest

from rondo.worker_agent.shards import ExtractLimits, UnsafeArchive, safe_extract, unpack_shard

KEY = "jobs/digits/shards/shard_0.zip"
MANIFEST = b'{"id": "0", "uri": "images/0.png", "y": [3]}\n'


def make_zip(
    path: Path, entries: dict[str, bytes], compression: int = zipfile.ZIP_DEFLATED
) -> Path:
    with zipfile.ZipFile(path, "w", compression=compression) as archive:
        for name, data in entries.items():
            archive.writestr(name, data)
    return path


def refusal(zip_path: Path, data_root: Path, limits: ExtractLimits | None = None) -> str:
    with pytest.raises(UnsafeArchive) as refused:
        unpack_shard(zip_path, data_root, KEY, limits or ExtractLimits())
    assert not data_root.exists(), "a refused shard leaves no data behind"
    return str(refused.value)


def test_good_shard_unpacks_flat_into_the_data_root(tmp_path: Path) -> None:
    shard = make_zip(
        tmp_path / "shard.zip",
        {"manifest.ndjson": MANIFEST, "images/0.png": b"png", "images/": b""},
    )
    data_root = tmp_path / "data"
    unpack_shard(shard, data_root, KEY, ExtractLimits())
    assert (data_root / "manifest.ndjson").read_bytes() == MANIFEST
    assert (data_root / "images" / "0.png").read_bytes() == b"png"
    assert sorted(p.name for p in data_root.iterdir()) == ["images", "manifest.ndjson"]


def test_unpacking_again_replaces_the_previous_data(tmp_path: Path) -> None:
    data_root = tmp_path / "data"
    data_root.mkdir()
    (data_root / "stale.txt").write_text("old")
    unpack_shard(
        make_zip(tmp_path / "s.zip", {"manifest.ndjson": MANIFEST}), data_root, KEY, ExtractLimits()
    )
    assert not (data_root / "stale.txt").exists()


def test_parent_path_entry_is_refused(tmp_path: Path) -> None:
    shard = make_zip(tmp_path / "s.zip", {"manifest.ndjson": MANIFEST, "../x": b"evil"})
    message = refusal(shard, tmp_path / "data")
    assert message.startswith(f"shard {KEY}: entry '../x' escapes the data folder")
    assert not (tmp_path / "x").exists()


def test_nested_parent_path_and_backslashes_are_refused(tmp_path: Path) -> None:
    shard = make_zip(tmp_path / "s.zip", {"a\\..\\..\\x": b"evil"})
    assert "escapes the data folder" in refusal(shard, tmp_path / "data")


def test_absolute_path_entry_is_refused(tmp_path: Path) -> None:
    shard = make_zip(tmp_path / "s.zip", {"manifest.ndjson": MANIFEST, "/etc/evil": b"x"})
    assert refusal(shard, tmp_path / "data") == (
        f"shard {KEY}: entry '/etc/evil' has an absolute path"
    )


def test_symlink_entry_is_refused(tmp_path: Path) -> None:
    link = zipfile.ZipInfo("link")
    link.external_attr = (stat.S_IFLNK | 0o777) << 16
    with zipfile.ZipFile(tmp_path / "s.zip", "w") as archive:
        archive.writestr("manifest.ndjson", MANIFEST)
        archive.writestr(link, "/etc/passwd")
    message = refusal(tmp_path / "s.zip", tmp_path / "data")
    assert message == f"shard {KEY}: entry 'link' is a symbolic link; links are refused"


def test_zip_bomb_ratio_is_refused(tmp_path: Path) -> None:
    shard = make_zip(
        tmp_path / "s.zip", {"manifest.ndjson": MANIFEST, "zeros.bin": bytes(20 * 1024 * 1024)}
    )
    message = refusal(shard, tmp_path / "data")
    assert message.startswith(f"shard {KEY}: entry 'zeros.bin' expands")
    assert "refused as a ZIP bomb" in message


def test_total_size_limit_is_enforced(tmp_path: Path) -> None:
    shard = make_zip(
        tmp_path / "s.zip",
        {"manifest.ndjson": MANIFEST, "a.bin": b"a" * 600, "b.bin": b"b" * 600},
        compression=zipfile.ZIP_STORED,
    )
    message = refusal(shard, tmp_path / "data", ExtractLimits(max_total_bytes=1000))
    assert "more than the limit of 1000 bytes" in message


def test_wrapper_folder_is_reported_as_missing_manifest(tmp_path: Path) -> None:
    shard = make_zip(tmp_path / "s.zip", {"digits/manifest.ndjson": MANIFEST})
    message = refusal(shard, tmp_path / "data")
    assert message == (
        f"shard {KEY}: manifest.ndjson missing at the ZIP root "
        "(found at 'digits/manifest.ndjson'); re-zip so manifest.ndjson is at the root, "
        "without a wrapper folder"
    )


def test_not_a_zip_is_refused(tmp_path: Path) -> None:
    bogus = tmp_path / "s.zip"
    bogus.write_bytes(b"definitely not a zip")
    assert refusal(bogus, tmp_path / "data").startswith(f"shard {KEY}: not a valid ZIP file")


def test_kits_keep_their_executable_bits(tmp_path: Path) -> None:
    script = zipfile.ZipInfo("startup/sub_start.sh")
    script.external_attr = (stat.S_IFREG | 0o755) << 16
    with zipfile.ZipFile(tmp_path / "kit.zip", "w") as archive:
        archive.writestr(script, "#!/bin/sh\n")
    safe_extract(tmp_path / "kit.zip", tmp_path / "kit", ExtractLimits(), keep_exec_bits=True)
    assert (tmp_path / "kit" / "startup" / "sub_start.sh").stat().st_mode & stat.S_IXUSR
