"""The federation tests' tiny job (tests/flare/generated_job) as a job folder for a real stack.

Slot n's shard holds `value.txt` (the value n + 1) and one CSV row per sample; every round each
site returns its weights filled with its value, so rounds are instant unless the job's `extra`
makes them sleep (`sleep_s`) or wait for a file to go away (`hold_file`, `hold_from_round`).
"""

import io
import json
import zipfile
from pathlib import Path

TINY_JOB_DIR = Path(__file__).resolve().parents[1] / "flare" / "generated_job"


def zip_bytes(entries: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, data in entries.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def tiny_shard(value: float, samples: int) -> bytes:
    manifest = json.dumps({"id": "value", "uri": "value.txt", "y": [0]}) + "\n"
    return zip_bytes(
        {
            "manifest.ndjson": manifest.encode(),
            "value.txt": str(value).encode(),
            "data.csv": b"1,2,3,4\n" * samples,
        }
    )


def tiny_job_files(shards: int = 2) -> dict[str, bytes | Path]:
    """Paths under jobs/{name}/ -> content: the tiny model, no requirements, `shards` shards."""
    files: dict[str, bytes | Path] = {
        "scripts/model_def.py": TINY_JOB_DIR / "scripts" / "model_def.py",
        "requirements/requirements.txt": b"",
    }
    for slot in range(shards):
        files[f"shards/shard_{slot}.zip"] = tiny_shard(float(slot + 1), samples=4)
    return files
