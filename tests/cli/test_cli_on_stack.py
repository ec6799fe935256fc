"""The `rondo` command and the SDK against a real local stack: submit, watch, download, list,
refuse bad input locally, and exit with the documented codes."""

import json
import re
import shutil
from pathlib import Path

import pytest
import torch
from support.examples import DIGITS_DIR, load_script
from support.platform import Platform
from support.rondo_cli import run_rondo
from support.tiny_job import tiny_shard, zip_bytes

from rondo.client import Client
from rondo.contracts.states import JobState
from rondo.contracts.training import TrainingConfig

HOSTED_APP_DIR = Path(__file__).resolve().parents[1] / "flare" / "hosted_app"
DIGITS_SAMPLES = 400  # enough for a working model, few enough for quick rounds on 2 cores
FAST = ("--rounds", "2", "--epochs", "1")


@pytest.fixture(scope="module")
def digits_folder(cli_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The demo's job folder, with shards made by `rondo shards make` from label folders."""
    make_shards = load_script(DIGITS_DIR, "make_shards")
    root = tmp_path_factory.mktemp("digits")
    data = root / "data"
    for image in make_shards.load_digit_images()[:DIGITS_SAMPLES]:
        folder = data / f"digit_{image.label}"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"{image.sample_id}.png").write_bytes(make_shards.png_bytes(image.pixels))
    job = root / "job"
    job.mkdir()
    for name in ("model_def.py", "requirements.txt"):
        shutil.copy(DIGITS_DIR / name, job / name)
    made = run_rondo(cli_env, "shards", "make", data, "--workers", "2", "--out", job / "shards")
    assert made.returncode == 0, made.stderr
    return job


def submitted_id(output: str) -> str:
    found = re.search(r"submitted job (\S+)", output)
    assert found, output
    return found.group(1)


@pytest.mark.timeout(420)
def test_cli_submits_watches_and_downloads_the_demo(
    platform: Platform, cli_env: dict[str, str], digits_folder: Path, tmp_path: Path
) -> None:
    watched = run_rondo(cli_env, "submit", digits_folder, "--name", "digits-cli", *FAST, "--watch")
    assert watched.returncode == 0, watched.stdout + watched.stderr
    job_id = submitted_id(watched.stdout)
    assert "FINISHED" in watched.stdout
    assert "outputs  written" in watched.stdout  # the last frame waits for them

    downloaded = run_rondo(cli_env, "download", job_id, cwd=tmp_path)
    assert downloaded.returncode == 0, downloaded.stderr
    model = load_script(DIGITS_DIR, "model_def").DigitsCNN()
    model.load_state_dict(torch.load(tmp_path / "global_model.pt"))
    first_round = run_rondo(cli_env, "download", job_id, "--round", "0", "-o", tmp_path / "r0.pt")
    assert first_round.returncode == 0 and (tmp_path / "r0.pt").stat().st_size > 0

    listing = json.loads(run_rondo(cli_env, "jobs", "--json").stdout)
    assert job_id in [job["id"] for job in listing["items"]]
    finished = json.loads(run_rondo(cli_env, "jobs", "--state", "FINISHED", "--json").stdout)
    assert {job["state"] for job in finished["items"]} == {"FINISHED"}
    status = json.loads(run_rondo(cli_env, "status", job_id, "--json").stdout)
    assert status["state"] == "FINISHED" and status["current_round"] == 2
    assert status["outputs_written_at"] is not None  # `download` waited for them
    assert "outputs  written" in run_rondo(cli_env, "status", job_id).stdout
    metrics = json.loads(run_rondo(cli_env, "metrics", job_id, "--json").stdout)
    assert [entry["round"] for entry in metrics["rounds"]] == [0, 1]
    plotted = run_rondo(cli_env, "metrics", job_id, "--plot")
    assert plotted.returncode == 0 and "accuracy by round" in plotted.stdout
    outputs = json.loads(
        run_rondo(cli_env, "files", "ls", "jobs/digits-cli/files_out", "--json").stdout
    )
    assert "jobs/digits-cli/files_out/metrics.json" in [o["key"] for o in outputs["objects"]]
    shown = run_rondo(cli_env, "files", "cat", "jobs/digits-cli/files_out/metrics.json")
    assert [entry["round"] for entry in json.loads(shown.stdout)["rounds"]] == [0, 1]
    got = run_rondo(cli_env, "files", "get", "jobs/digits-cli/files_out/server.log", cwd=tmp_path)
    assert got.returncode == 0 and (tmp_path / "server.log").stat().st_size > 0
    server_log = json.loads(run_rondo(cli_env, "logs", job_id, "--json").stdout)
    assert server_log["source"] == "server" and server_log["lines"]
    worker_log = run_rondo(cli_env, "logs", job_id, "--worker", "1", "--tail", "5")
    assert worker_log.returncode == 0 and worker_log.stdout.strip()

    # Everything is in the bucket already: a second submission uploads nothing, and removes a
    # shard the folder does not have (it would be an extra worker).
    platform.upload_job("digits-cli", {"shards/shard_9.zip": zip_bytes({"a": b"a"})})
    again = run_rondo(cli_env, "submit", digits_folder, "--name", "digits-cli", *FAST, "--json")
    assert again.returncode == 0, again.stderr
    second = json.loads(again.stdout)
    assert second["upload"]["uploaded"] == [] and len(second["upload"]["skipped"]) == 4
    assert second["upload"]["removed"] == ["jobs/digits-cli/shards/shard_9.zip"]
    # Its folder must not change while it is active: a third submission is refused first.
    busy = run_rondo(cli_env, "submit", digits_folder, "--name", "digits-cli", *FAST)
    assert busy.returncode == 2 and "still active" in busy.stderr, busy.stderr
    cancelled = run_rondo(cli_env, "cancel", second["job"]["id"])
    assert cancelled.returncode == 0, cancelled.stderr
    followed = run_rondo(cli_env, "status", second["job"]["id"], "--watch", "--json")
    assert followed.returncode == 1, followed.stderr
    assert json.loads(followed.stdout.splitlines()[-1])["job"]["state"] == "CANCELLED"


@pytest.mark.timeout(420)
def test_sdk_submits_a_model_class_and_fetches_the_model(
    platform: Platform, digits_folder: Path, tmp_path: Path
) -> None:
    model_def = load_script(DIGITS_DIR, "model_def")
    with Client(platform.state.gateway_url, platform.state.user.api_key) as client:
        job = client.submit(
            model_def.DigitsCNN,
            digits_folder / "shards",
            TrainingConfig(num_rounds=1, local_epochs=1),
            name="digits-sdk",
            requirements=DIGITS_DIR / "requirements.txt",
        )
        first = next(iter(job.events()))
        final = job.wait(timeout_s=300)
        path = job.download_model(target=tmp_path / "model.pt")

    assert first.event == "snapshot" and first.job is not None and first.job.id == job.id
    assert final.state == JobState.FINISHED, final
    assert job.view.outputs_written_at is not None  # download_model waited for them
    assert final.config.model_class == "DigitsCNN"
    model_def.DigitsCNN().load_state_dict(torch.load(path))


@pytest.mark.timeout(300)
def test_hosted_sdk_layout_runs_through_rondo_submit(
    cli_env: dict[str, str], tmp_path: Path
) -> None:
    job = tmp_path / "hosted"
    for folder in ("configs", "scripts"):
        shutil.copytree(HOSTED_APP_DIR / folder, job / folder)
    (job / "requirements").mkdir()
    (job / "requirements" / "requirements.txt").write_text("")
    (job / "shards").mkdir()
    for slot, (value, samples) in enumerate(((1.0, 3), (4.0, 1))):
        (job / "shards" / f"shard_{slot}.zip").write_bytes(tiny_shard(value, samples))

    ran = run_rondo(cli_env, "submit", job, "--name", "hosted-cli", "--rounds", "2", "--watch")
    assert ran.returncode == 0, ran.stdout + ran.stderr
    assert "FINISHED" in ran.stdout


def test_bad_shard_folder_is_refused_locally_with_the_api_message(
    platform: Platform, cli_env: dict[str, str], tmp_path: Path
) -> None:
    job = tmp_path / "bad"
    (job / "shards").mkdir(parents=True)
    shutil.copy(DIGITS_DIR / "model_def.py", job / "model_def.py")
    (job / "requirements.txt").write_text("")
    record = json.dumps({"id": "a", "uri": "a.txt", "y": [0]}).encode() + b"\n"
    good = zip_bytes({"manifest.ndjson": record, "a.txt": b"a"})
    nested = zip_bytes({"data/manifest.ndjson": record, "data/a.txt": b"a"})
    (job / "shards" / "shard_0.zip").write_bytes(good)
    (job / "shards" / "shard_1.zip").write_bytes(nested)

    refused = run_rondo(cli_env, "submit", job, "--name", "bad-shards")

    assert refused.returncode == 2, refused.stdout + refused.stderr
    assert not platform.objects("jobs/bad-shards/"), "a refused job uploaded files"
    # The same folder put into the bucket by hand: the API refuses it with the same words.
    platform.upload_job(
        "bad-shards",
        {
            "scripts/model_def.py": job / "model_def.py",
            "requirements/requirements.txt": b"",
            "shards/shard_0.zip": good,
            "shards/shard_1.zip": nested,
        },
    )
    answer = platform.submit("bad-shards")
    assert answer.status_code == 400, answer.text
    assert "shard_1.zip" in answer.json()["message"]
    assert f"error: {answer.json()['message']}" in refused.stderr
    assert answer.json()["hint"] in refused.stderr
    assert "Traceback" not in refused.stderr


def test_exit_codes_and_errors_without_tracebacks(cli_env: dict[str, str]) -> None:
    """Errors from the API and the network (local ones: test_cli_units)."""
    unknown = run_rondo(cli_env, "status", "no-such-job")
    assert unknown.returncode == 2 and "not found" in unknown.stderr
    wrong_key = {**cli_env, "RONDO_API_KEY": "rsk_live_" + "x" * 40}
    denied = run_rondo(wrong_key, "jobs")
    assert denied.returncode == 3 and "hint:" in denied.stderr
    nowhere = {**cli_env, "RONDO_URL": "http://127.0.0.1:9"}
    unreachable = run_rondo(nowhere, "jobs")
    assert unreachable.returncode == 3 and "cannot reach" in unreachable.stderr
    for result in (unknown, denied, unreachable):
        assert "Traceback" not in result.stderr

    debug = run_rondo(nowhere, "--debug", "jobs")
    assert debug.returncode == 3 and "Traceback" in debug.stderr
