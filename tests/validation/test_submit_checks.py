"""Every submission check over HTTP on a real stack: one 400 `invalid_job` lists every problem,
each naming the exact file and its fix, and nothing the user uploaded changes."""

import zipfile
from io import BytesIO
from typing import Any

from support.job_files import (
    MODEL_HEAD,
    manifest_line,
    model_def,
    shard,
    symlink_entry,
    zip_bytes,
)
from support.platform import Platform

from rondo.contracts.job_checks import ProblemCode

GOOD_FILES: dict[str, bytes] = {
    "scripts/model_def.py": model_def(b""),
    "requirements/requirements.txt": b"",
    "shards/shard_0.zip": shard("a"),
}


def submit_rejected(
    platform: Platform, name: str, files: dict[str, bytes], **config: Any
) -> dict[str, Any]:
    """Upload `files` as jobs/{name}/, submit, and return the 400 body; the bucket is left as
    it was and no job is stored."""
    platform.upload_job(name, files)
    before = platform.objects()
    response = platform.submit(name, **config)

    assert response.status_code == 400, response.text
    body = response.json()
    assert set(body) == {"code", "message", "hint", "problems"}, body
    assert body["code"] == "invalid_job", body
    assert all({"code", "message", "hint", "path"} <= set(p) for p in body["problems"]), body
    first = body["problems"][0]
    assert body["message"].startswith(first["message"]) and body["hint"] == first["hint"]
    assert platform.objects() == before, "a rejected submission changed the bucket"
    listed = platform.api.get("/api/jobs").json()["items"]
    assert name not in {job["name"] for job in listed}
    return dict(body)


def problem_codes(body: dict[str, Any]) -> list[str]:
    return [problem["code"] for problem in body["problems"]]


def test_missing_objects_are_all_named_in_one_response(platform: Platform) -> None:
    body = submit_rejected(platform, "val-empty", {"notes.txt": b"nothing else here"})

    assert problem_codes(body) == ["missing_file", "missing_file", "missing_shards"]
    paths = [problem["path"] for problem in body["problems"]]
    assert paths == [
        "jobs/val-empty/scripts/model_def.py",
        "jobs/val-empty/requirements/requirements.txt",
        "jobs/val-empty/shards/",
    ]
    assert "jobs/val-empty/scripts/model_def.py is not in your bucket" in body["message"]
    assert "and 2 more problems" in body["message"]


def test_shard_layouts_and_manifests_are_checked_by_streaming(platform: Platform) -> None:
    buffer = BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("manifest.ndjson", manifest_line("a", "a.txt"))
        archive.writestr("a.txt", b"a")
        archive.writestr("../evil.txt", b"x")
        archive.writestr("/etc/passwd", b"x")
        archive.writestr(symlink_entry("data/link"), "/etc")
    bad_lines = b"".join(
        [
            manifest_line("a", "a.txt"),
            b'{"id": "b", "uri": "b.txt"\n',
            b'{"id": "c", "uri": "c.txt"}\n',
            manifest_line("d", "../../d.txt"),
            manifest_line("e", "e.txt"),
        ]
    )
    files = {
        **GOOD_FILES,
        "shards/shard_0.zip": shard("a", folder="wrapped/"),
        "shards/shard_1.zip": buffer.getvalue(),
        "shards/shard_2.zip": zip_bytes({"manifest.ndjson": bad_lines, "a.txt": b"a"}),
        "shards/shard_3.zip": zip_bytes({"manifest.ndjson": b"", "zeros": bytes(8 * 1024**2)}),
        "shards/shard_4.zip": b"this is not a zip file",
    }
    body = submit_rejected(platform, "val-shards", files)
    by_shard: dict[str, list[dict[str, Any]]] = {}
    for problem in body["problems"]:
        by_shard.setdefault(problem["path"].rsplit("/", 1)[-1], []).append(problem)

    [wrapped] = by_shard["shard_0.zip"]
    assert wrapped["code"] == ProblemCode.MANIFEST_MISSING
    assert "inside the folder 'wrapped/'" in wrapped["message"]
    assert [p["entry"] for p in by_shard["shard_1.zip"]] == [
        "../evil.txt",
        "/etc/passwd",
        "data/link",
    ]
    assert {p["code"] for p in by_shard["shard_1.zip"]} == {ProblemCode.UNSAFE_ENTRY}
    lines = {p["line"]: p["message"] for p in by_shard["shard_2.zip"]}
    assert sorted(lines) == [2, 3, 4, 5]
    assert "not valid JSON" in lines[2] and "'y': Field required" in lines[3]
    assert "escapes the shard" in lines[4] and "'e.txt' is not a file in the ZIP" in lines[5]
    [bomb] = by_shard["shard_3.zip"]
    assert bomb["code"] == ProblemCode.ZIP_BOMB and bomb["entry"] == "zeros"
    [not_zip] = by_shard["shard_4.zip"]
    assert not_zip["code"] == ProblemCode.INVALID_ZIP
    assert wrapped["message"] in body["message"]


def test_model_def_problems_name_the_line(platform: Platform) -> None:
    syntax = submit_rejected(
        platform,
        "val-syntax",
        {**GOOD_FILES, "scripts/model_def.py": MODEL_HEAD + b"def fl_train_model(:\n"},
    )
    [problem] = syntax["problems"]
    line = MODEL_HEAD.count(b"\n") + 1
    assert problem["code"] == ProblemCode.SYNTAX_ERROR
    assert (problem["line"], problem["column"]) == (line, 20)
    assert (
        f"val-syntax/scripts/model_def.py: syntax error (line {line}, column 20)"
        in (syntax["message"])
    )

    no_import = MODEL_HEAD.replace(b"import torch\n", b"") + (
        b"def fl_train_model(payload, out_dir, logger=None):\n    return torch.ones(1)\n"
    )
    undefined = submit_rejected(
        platform, "val-undefined", {**GOOD_FILES, "scripts/model_def.py": no_import}
    )
    assert problem_codes(undefined) == ["name_not_defined"]
    assert "name 'torch' is not defined" in undefined["message"]
    assert "import" in undefined["hint"]

    no_train = submit_rejected(
        platform,
        "val-no-train",
        {**GOOD_FILES, "scripts/model_def.py": MODEL_HEAD},
        model_class="Missing",
    )
    assert problem_codes(no_train) == ["train_function_missing", "model_class_missing"]


def test_requirements_configs_and_min_clients(platform: Platform) -> None:
    body = submit_rejected(
        platform,
        "val-misc",
        {
            **GOOD_FILES,
            "requirements/requirements.txt": b"numpy==2.1\n-e ./src\nnot valid!!\n",
            "configs/config_fed_server.json": b'{"format_version": 2,}',
            "configs/config_fed_client.json": b"[]",
        },
        min_clients=2,
    )

    assert problem_codes(body) == [
        "invalid_requirements",
        "invalid_requirements",
        "invalid_app_config",
        "invalid_app_config",
        "missing_file",
        "invalid_config",
    ]
    problems = body["problems"]
    assert [problems[0]["line"], problems[1]["line"]] == [2, 3]
    assert "editable install" in problems[0]["message"]
    assert problems[2]["path"] == "jobs/val-misc/configs/config_fed_server.json"
    assert problems[4]["path"] == "jobs/val-misc/configs/meta.json"
    assert "min_clients is 2 but jobs/val-misc/shards/ has 1 shard(s)" in problems[5]["message"]


def test_config_out_of_range_names_each_field(platform: Platform) -> None:
    platform.upload_job("val-config", GOOD_FILES)
    before = platform.objects()
    response = platform.api.post(
        "/api/jobs",
        json={
            "name": "val-config",
            "config": {"num_rounds": 0, "local_epochs": 0, "batch_size": 0, "learning_rate": 50},
        },
    )

    assert response.status_code == 422, response.text
    body = response.json()
    assert body["code"] == "validation_error"
    for field in ("num_rounds", "local_epochs", "batch_size", "learning_rate"):
        assert f"config.{field}" in body["message"], body
    assert platform.objects() == before
