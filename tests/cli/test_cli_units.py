"""The CLI's local parts without a stack: shards, ETags (against real SeaweedFS), options,
and how a download of an ended job waits for its outputs (against a scripted gateway)."""

import json
import zipfile
from collections import Counter
from pathlib import Path

import httpx
import pytest
import typer
from typer.testing import CliRunner

from rondo import job as job_module
from rondo.checksums import expected_etag, matches_etag, md5_of, multipart_etag
from rondo.cli import main
from rondo.client import Client
from rondo.commands_jobs import parse_extra
from rondo.contracts.api import JobPublic
from rondo.contracts.storage import S3Client
from rondo.errors import ApiError, InvalidInput, OutputsPending
from rondo.job import Job
from rondo.local_checks import check_shard
from rondo.shards import make_shards, read_dataset

MIB = 1024 * 1024


def label_folders(root: Path, per_label: dict[str, int]) -> Path:
    for label, count in per_label.items():
        (root / label).mkdir(parents=True)
        for n in range(count):
            (root / label / f"{n}.txt").write_text(f"{label} {n}")
    return root


def shard_labels(path: Path) -> Counter[int]:
    with zipfile.ZipFile(path) as archive:
        lines = archive.read("manifest.ndjson").decode().splitlines()
    return Counter(json.loads(line)["y"][0] for line in lines)


def test_shards_are_stratified_deterministic_and_accepted(tmp_path: Path) -> None:
    data = label_folders(tmp_path / "data", {"cat": 9, "dog": 6, "eel": 3})

    written = make_shards(read_dataset(data), 3, tmp_path / "a", check=check_shard)
    again = make_shards(read_dataset(data), 3, tmp_path / "b", check=check_shard)

    assert [s.samples for s in written] == [6, 6, 6]
    assert [shard_labels(s.path) for s in written] == [Counter({0: 3, 1: 2, 2: 1})] * 3
    assert [s.path.read_bytes() for s in written] == [s.path.read_bytes() for s in again]
    with zipfile.ZipFile(written[0].path) as archive:
        first = json.loads(archive.read("manifest.ndjson").decode().splitlines()[0])
        assert archive.read(first["uri"]).decode().startswith("cat ")
    assert first["meta"] == {"label": "cat"}


def test_shards_from_a_manifest_refuse_a_missing_file_and_write_nothing(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    (data / "a.txt").write_text("a")
    lines = [{"id": "a", "uri": "a.txt", "y": [0]}, {"id": "b", "uri": "b.txt", "y": [1]}]
    (data / "manifest.ndjson").write_text("".join(json.dumps(r) + "\n" for r in lines))

    with pytest.raises(InvalidInput, match=r"sample b: .*b\.txt does not exist"):
        make_shards(read_dataset(data), 1, tmp_path / "out", check=check_shard)
    assert not (tmp_path / "out").exists()


def test_shards_refuse_what_the_platform_would_refuse(tmp_path: Path) -> None:
    data = label_folders(tmp_path / "data", {"a": 2})

    def refuse_all(path: Path, name: str) -> None:
        raise InvalidInput(f"{name}: refused")

    with pytest.raises(InvalidInput, match=r"shard_0\.zip: refused"):
        make_shards(read_dataset(data), 2, tmp_path / "out", check=refuse_all)
    assert list((tmp_path / "out").iterdir()) == []
    with pytest.raises(InvalidInput, match="cannot fill 3 shards"):
        make_shards(read_dataset(data), 3, tmp_path / "out", check=check_shard)


def test_a_shard_with_its_manifest_in_a_folder_is_refused(tmp_path: Path) -> None:
    shard = tmp_path / "shard_0.zip"
    with zipfile.ZipFile(shard, "w") as archive:
        archive.writestr("data/manifest.ndjson", '{"id": "a", "uri": "a.txt", "y": [0]}\n')
        archive.writestr("data/a.txt", "a")

    with pytest.raises(InvalidInput, match="not at the ZIP root") as refused:
        check_shard(shard, "shards/shard_0.zip")
    assert refused.value.problems[0].code == "manifest_missing"


def test_local_etags_match_what_the_object_store_computes(s3: S3Client, tmp_path: Path) -> None:
    s3.create_bucket(Bucket="etags")
    small, large = tmp_path / "small.bin", tmp_path / "large.bin"
    small.write_bytes(b"x" * 1000)
    large.write_bytes(bytes(range(256)) * (11 * MIB // 256 + 7))
    part_size = 5 * MIB

    s3.put_object(Bucket="etags", Key="small", Body=small.read_bytes())
    upload = s3.create_multipart_upload(Bucket="etags", Key="large")
    data, parts = large.read_bytes(), []
    for number, offset in enumerate(range(0, len(data), part_size), start=1):
        answer = s3.upload_part(
            Bucket="etags",
            Key="large",
            UploadId=upload["UploadId"],
            PartNumber=number,
            Body=data[offset : offset + part_size],
        )
        parts.append({"PartNumber": number, "ETag": answer["ETag"]})
    s3.complete_multipart_upload(
        Bucket="etags", Key="large", UploadId=upload["UploadId"], MultipartUpload={"Parts": parts}
    )

    small_etag = s3.head_object(Bucket="etags", Key="small")["ETag"]
    large_etag = s3.head_object(Bucket="etags", Key="large")["ETag"]
    assert small_etag.strip('"') == md5_of(small) == expected_etag(small)
    assert large_etag.strip('"') == multipart_etag(large, part_size)
    assert matches_etag(small, small_etag) and matches_etag(large, large_etag)
    assert matches_etag(large, small_etag) is False
    large.write_bytes(data[:-1] + b"?")
    assert matches_etag(large, large_etag) is False
    assert matches_etag(large, "not-an-md5") is None


def test_extra_options_parse_json_values_or_keep_strings() -> None:
    assert parse_extra(["a=1", "b=true", "c=hello", "d=[1, 2]", "e=x=y"]) == {
        "a": 1,
        "b": True,
        "c": "hello",
        "d": [1, 2],
        "e": "x=y",
    }
    with pytest.raises(typer.BadParameter):
        parse_extra(["novalue"])


def test_local_errors_exit_2_or_3_without_a_traceback(tmp_path: Path) -> None:
    runner = CliRunner()
    logged_out = {"RONDO_URL": None, "RONDO_API_KEY": None, "XDG_CONFIG_HOME": str(tmp_path)}
    job = tmp_path / "job"
    job.mkdir()

    cases = {
        ("submit", str(job), "--name", "x", "--rounds", "0"): (2, "num_rounds"),
        ("submit", str(job), "--name", "Not A Name"): (2, "name"),
        ("submit", str(job), "--name", "x"): (2, "model_def.py is missing"),
        ("jobs", "--state", "SLEEPING"): (2, "SLEEPING"),
        ("jobs",): (3, "not logged in"),
    }
    for args, (code, words) in cases.items():
        result = runner.invoke(main, list(args), env=logged_out)
        assert result.exit_code == code, (args, result.output)
        assert words in result.output, (args, result.output)
        assert "Traceback" not in result.output


def _ended_job(outputs_written_at: str | None) -> dict[str, object]:
    return {
        "id": "job-1",
        "name": "digits",
        "state": "FINISHED",
        "created_at": "2026-11-25T10:00:00Z",
        "updated_at": "2026-11-25T10:05:00Z",
        "num_rounds": 5,
        "current_round": 5,
        "config": {},
        "files_prefix": "jobs/digits/",
        "outputs_written_at": outputs_written_at,
    }


class EndedJobGateway:
    """Answers GET of the job with a scripted `outputs_written_at` per call (the last one
    repeats); refuses the download URL, so only the order of requests matters."""

    def __init__(self, written: list[str | None]) -> None:
        self.written = written
        self.paths: list[str] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.paths.append(request.url.path)
        if request.url.path == "/api/jobs/job-1":
            at = self.written.pop(0) if len(self.written) > 1 else self.written[0]
            return httpx.Response(200, json=_ended_job(at))
        return httpx.Response(403, json={"code": "forbidden", "message": "not in this test"})


def download_with(gateway: EndedJobGateway, tmp_path: Path) -> None:
    with Client("http://gateway.test", "rondo_key", transport=httpx.MockTransport(gateway)) as c:
        job = Job(c, JobPublic.model_validate(_ended_job(None)))
        job.download_model(target=tmp_path / "model.pt")


def test_download_of_an_ended_job_waits_for_its_outputs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(job_module, "OUTPUTS_POLL_S", 0.01)
    gateway = EndedJobGateway([None, None, "2026-11-25T10:05:02Z"])
    with pytest.raises(ApiError):  # the download itself, only once the outputs are final
        download_with(gateway, tmp_path)
    assert gateway.paths == [*["/api/jobs/job-1"] * 3, "/api/files/download-url"]


def test_download_of_an_ended_job_says_when_its_outputs_never_come(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(job_module, "OUTPUTS_POLL_S", 0.01)
    monkeypatch.setattr(job_module, "OUTPUTS_SETTLE_S", 0.1)
    gateway = EndedJobGateway([None])
    with pytest.raises(OutputsPending, match="still being written") as raised:
        download_with(gateway, tmp_path)
    assert "artifacts service" in raised.value.hint
    assert "/api/files/download-url" not in gateway.paths
