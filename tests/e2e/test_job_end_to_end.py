"""A job submitted over HTTP runs as a real NVFlare federation on the worker-agents of a real
local stack and writes its outputs into the user's bucket."""

import io
import json
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from support.examples import DIGITS_DIR, digits_job_files
from support.platform import Platform

from rondo.contracts.states import JobState

HOSTED_APP_DIR = Path(__file__).resolve().parents[1] / "flare" / "hosted_app"
DEMO_ROUNDS = 5


def zip_bytes(entries: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, data in entries.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def manifest(*ids: str) -> bytes:
    return b"".join(
        json.dumps({"id": i, "uri": f"{i}.txt", "y": [0]}).encode() + b"\n" for i in ids
    )


@pytest.mark.timeout(420)
def test_demo_job_runs_to_finished_with_every_output(platform: Platform, tmp_path: Path) -> None:
    platform.upload_job("digits-e2e", digits_job_files(tmp_path / "shards"))

    response = platform.submit("digits-e2e", num_rounds=DEMO_ROUNDS)
    assert response.status_code == 201, response.text
    job = platform.wait_for_state(response.json()["id"])

    assert job["state"] == JobState.FINISHED, job
    assert [t["state"] for t in job["transitions"]] == ["PENDING", "RUNNING", "FINISHED"]
    assert job["current_round"] == DEMO_ROUNDS
    assert job["workers"]["total"] == 2
    platform.wait_for_outputs(job["id"])

    out = "jobs/digits-e2e/files_out/"
    models = "jobs/digits-e2e/model_out/"
    expected = {
        f"{out}{name}"
        for name in (
            "server.log",
            "client_0.log",
            "client_1.log",
            "training_log.txt",
            "metrics.json",
            "fl_round_complete.json",
            "client_0/round_0/round_summary.json",
            f"client_1/round_{DEMO_ROUNDS - 1}/round_summary.json",
        )
    }
    expected |= {f"{models}{name}" for name in ("global_model.pt", "best_model.pt")}
    expected |= {f"{models}model_round_{r}.pt" for r in range(DEMO_ROUNDS)}
    # The clients' out_dir files are staged on their own: they may come after the reports.
    assert not platform.wait_for_objects(expected), "outputs missing"

    metrics = json.loads(platform.read(f"{out}metrics.json"))
    assert [entry["round"] for entry in metrics["rounds"]] == list(range(DEMO_ROUNDS))
    assert metrics["best_accuracy"] > 0.90
    assert set(metrics["rounds"][0]["samples"]) == {"client_0", "client_1"}
    assert len(platform.read(f"{out}training_log.txt").decode().splitlines()) == DEMO_ROUNDS
    assert b"round" in platform.read(f"{out}client_0.log").lower()

    # The final model is a plain state dict: loads with torch alone, nvflare unavailable.
    checkpoint = tmp_path / "global_model.pt"
    checkpoint.write_bytes(platform.read(f"{models}global_model.pt"))
    model_def = str(DIGITS_DIR / "model_def.py")
    loader = (
        "import sys, importlib.util, torch\n"
        "sys.modules['nvflare'] = None\n"
        f"spec = importlib.util.spec_from_file_location('model_def', {model_def!r})\n"
        "module = importlib.util.module_from_spec(spec); spec.loader.exec_module(module)\n"
        "model = module.DigitsCNN()\n"
        f"model.load_state_dict(torch.load({str(checkpoint)!r}))\n"
        "print('loaded')\n"
    )
    loaded = subprocess.run([sys.executable, "-c", loader], capture_output=True, text=True)
    assert loaded.stdout.strip() == "loaded", loaded.stderr

    assert not platform.wait_no_nvflare_processes(), "NVFlare processes outlived the job"


@pytest.mark.timeout(300)
def test_job_with_its_own_nvflare_app_runs_as_given(platform: Platform) -> None:
    files: dict[str, bytes | Path] = {
        f"{folder}/{path.name}": path
        for folder in ("configs", "scripts")
        for path in sorted((HOSTED_APP_DIR / folder).iterdir())
        if path.is_file()
    }
    files["requirements/requirements.txt"] = b""
    for slot, (value, rows) in enumerate(((1.0, 3), (4.0, 1))):
        files[f"shards/shard_{slot}.zip"] = zip_bytes(
            {
                "manifest.ndjson": manifest("value"),
                "value.txt": str(value).encode(),
                "data.csv": b"".join(b"1,2,3,4\n" for _ in range(rows)),
            }
        )
    platform.upload_job("hosted-e2e", files)

    response = platform.submit("hosted-e2e", num_rounds=2)
    assert response.status_code == 201, response.text
    job = platform.wait_for_state(response.json()["id"])

    assert job["state"] == JobState.FINISHED, job
    platform.wait_for_outputs(job["id"])
    models = "jobs/hosted-e2e/model_out/"
    assert not {f"{models}global_model.pt", f"{models}model_round_1.pt"} - set(platform.objects())
    metrics = json.loads(platform.read("jobs/hosted-e2e/files_out/metrics.json"))
    # Samples-weighted FedAvg of the sites' loss values 1.0 (3 samples) and 4.0 (1 sample).
    assert metrics["rounds"][-1]["loss"] == pytest.approx(1.75)


@pytest.mark.timeout(180)
def test_shard_escaping_its_folder_fails_the_job_and_changes_nothing(platform: Platform) -> None:
    good = zip_bytes({"manifest.ndjson": manifest("a"), "a.txt": b"a"})
    evil = zip_bytes({"manifest.ndjson": manifest("a"), "a.txt": b"a", "../evil.txt": b"x"})
    platform.upload_job(
        "escape-e2e",
        {
            "scripts/model_def.py": DIGITS_DIR / "model_def.py",
            "requirements/requirements.txt": b"",
            "shards/shard_0.zip": good,
            "shards/shard_1.zip": evil,
        },
    )
    # Only this job's folder: earlier jobs' logs may still be landing in the bucket.
    before = platform.objects("jobs/escape-e2e/")

    response = platform.submit("escape-e2e", num_rounds=1)
    if response.status_code == 400:  # refused before dispatch: the gateway's shard checks
        assert "../evil.txt" in response.json()["message"]
    else:
        assert response.status_code == 201, response.text
        job = platform.wait_for_state(response.json()["id"], timeout_s=120)
        assert job["state"] == JobState.FAILED, job
        assert "../evil.txt" in job["error"]["message"]
        assert "shard_1.zip" in job["error"]["message"]

    outputs = ("jobs/escape-e2e/files_out/", "jobs/escape-e2e/model_out/")
    after = {
        k: v for k, v in platform.objects("jobs/escape-e2e/").items() if not k.startswith(outputs)
    }
    assert after == before
    assert not platform.wait_no_nvflare_processes()
