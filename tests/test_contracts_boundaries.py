"""The boundary contracts (`layout`, `archives`, `spool`, `storage`, `clock`): the exact
spellings other processes rely on, so a change to one shows up here first."""

import io
import math
import zipfile
from pathlib import Path

import pytest
from botocore.exceptions import ClientError

from rondo.contracts import archives, layout, spool
from rondo.contracts.clock import utc_now
from rondo.contracts.storage import is_no_bucket, is_not_found


def test_job_folder_and_output_keys() -> None:
    prefix = layout.job_prefix("digits")
    assert prefix == "jobs/digits/"
    assert layout.MODEL_DEF_KEY == "scripts/model_def.py"
    assert layout.REQUIREMENTS_KEY == "requirements/requirements.txt"
    assert layout.CUSTOM_APP_KEYS == (
        "configs/config_fed_server.json",
        "configs/config_fed_client.json",
        "configs/meta.json",
    )
    assert layout.model_out_key(prefix, layout.model_file_name(None)) == (
        "jobs/digits/model_out/global_model.pt"
    )
    assert layout.model_out_key(prefix, layout.model_file_name(3)) == (
        "jobs/digits/model_out/model_round_3.pt"
    )
    assert layout.files_out_key(prefix, layout.log_file_name(layout.source_name(2))) == (
        "jobs/digits/files_out/client_2.log"
    )
    assert (
        layout.staged_output_path(1, 4, "plots/a.png") == "files_out/client_1/round_4/plots/a.png"
    )


def test_site_names() -> None:
    assert layout.source_name(None) == "server"
    assert layout.flare_client_site(3, 1) == "site-3-1"
    assert layout.flare_site_slot("site-3-1") == 3
    assert layout.flare_site_slot("server") is None
    assert layout.is_log_file_name("server.log") and layout.is_log_file_name("client_12.log")
    assert not layout.is_log_file_name("client_x.log")


@pytest.mark.parametrize(
    ("name", "fault"),
    [
        ("/etc/passwd", "has an absolute path"),
        ("C:\\windows\\x", "has an absolute path"),
        ("1:x", "has an absolute path"),  # the agent's stricter rule, now everyone's
        ("a/../../x", "escapes the shard folder (contains '..')"),
        ("a\\..\\x", "escapes the shard folder (contains '..')"),
        ("data/x.png", None),
        ("a..b/x", None),
    ],
)
def test_archive_entry_names(name: str, fault: str | None) -> None:
    assert archives.path_fault(name) == fault


def test_archive_ratio_and_manifest() -> None:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr(archives.MANIFEST_NAME, b"")
        archive.writestr("zeros.bin", bytes(2 * 1024 * 1024))
    with zipfile.ZipFile(buffer) as archive:
        entries = archive.infolist()
    limits = archives.ArchiveLimits(max_ratio=50)
    [manifest, zeros] = entries
    assert archives.manifest_entry(entries) is manifest
    assert archives.excessive_ratio(manifest, limits) is None
    ratio = archives.excessive_ratio(zeros, limits)
    assert ratio is not None and ratio > 50


def test_spool_records_round_trip_keep_nan(tmp_path: Path) -> None:
    record = spool.RoundRecord(
        round=2,
        num_rounds=5,
        metrics={"loss": math.nan},
        contributions=[spool.SpoolContribution(site_name="site-0-0", samples=3)],
        duration_s=1.5,
    )
    path = tmp_path / f"{spool.round_stem(2)}.json"
    spool.write_record(path, record)
    assert path.name == "round_00002.json"
    assert spool.ROUND_FILE.match(path.name)
    assert not list(tmp_path.glob("*.tmp"))
    read = spool.read_record(spool.RoundRecord, path.read_bytes(), path.name)
    assert math.isnan(read.metrics["loss"])
    assert read.contributions[0].site_name == "site-0-0"


def test_spool_records_ignore_unknown_keys_and_refuse_non_objects() -> None:
    ended = spool.read_record(spool.RunEndedRecord, b'{"completed": true, "new": 1}', "x")
    assert ended.completed and ended.error is None
    with pytest.raises(ValueError, match="not a JSON object"):
        spool.read_record(spool.RunEndedRecord, b"[1]", "run_ended.json")


def _client_error(code: str) -> ClientError:
    return ClientError({"Error": {"Code": code}}, "HeadObject")


def test_s3_not_found_codes() -> None:
    assert all(is_not_found(_client_error(code)) for code in ("404", "NoSuchKey", "NotFound"))
    assert not is_not_found(_client_error("AccessDenied"))
    assert is_no_bucket(_client_error("NoSuchBucket")) and not is_no_bucket(_client_error("403"))


def test_utc_now_is_aware() -> None:
    assert utc_now().utcoffset() is not None
