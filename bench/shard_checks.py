"""What checking a job's shards before dispatch costs: requests, bytes read and time.

Starts SeaweedFS in a temporary folder, uploads job folders whose shards range from small to
large (many small samples, or a few large files), then runs the gateway's checks
(`rondo.gateway.validation.inspect_job_folder`, ranged reads of each shard) several times and
prints, per case, the shard size, the GET requests and bytes the checks read, and the median
wall time of the whole folder check.

    .venv/bin/python bench/shard_checks.py [--repeat 5]
"""

import argparse
import io
import json
import os
import statistics
import tempfile
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rondo.contracts.storage import S3Client, make_s3_client
from rondo.contracts.training import TrainingConfig
from rondo.gateway.validation import inspect_job_folder
from rondo.stack.servers import S3Credentials, SeaweedS3, write_s3_config

BUCKET = "bench"
MODEL_DEF = b"import torch\n\n\ndef fl_train_model(payload, out_dir, logger=None):\n    pass\n"


@dataclass(frozen=True)
class Case:
    name: str
    shards: int
    samples: int  # small files per shard, each with a manifest line
    large_file_mb: int  # one incompressible file per shard


CASES = (
    Case("2 shards x 1k samples", shards=2, samples=1_000, large_file_mb=0),
    Case("2 shards x 64 MB", shards=2, samples=10, large_file_mb=64),
    Case("8 shards x 20k samples", shards=8, samples=20_000, large_file_mb=0),
    Case("1 shard x 512 MB", shards=1, samples=10, large_file_mb=512),
)


def shard_zip(samples: int, large_file_mb: int) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        lines = []
        for n in range(samples):
            archive.writestr(f"samples/{n}.txt", f"sample {n}")
            lines.append(json.dumps({"id": str(n), "uri": f"samples/{n}.txt", "y": [n % 10]}))
        archive.writestr("manifest.ndjson", "\n".join(lines) + "\n")
        if large_file_mb:
            archive.writestr(
                zipfile.ZipInfo("weights.bin"),  # stored: random bytes do not compress
                os.urandom(large_file_mb * 1024 * 1024),
            )
    return buffer.getvalue()


def upload(s3: S3Client, case: Case) -> int:
    """Put the case's job folder into the bucket; returns the size of one shard."""
    prefix = f"jobs/{case.name.replace(' ', '-')}/"
    body = shard_zip(case.samples, case.large_file_mb)
    s3.put_object(Bucket=BUCKET, Key=prefix + "scripts/model_def.py", Body=MODEL_DEF)
    s3.put_object(Bucket=BUCKET, Key=prefix + "requirements/requirements.txt", Body=b"")
    for slot in range(case.shards):
        s3.put_object(Bucket=BUCKET, Key=f"{prefix}shards/shard_{slot}.zip", Body=body)
    return len(body)


def measure(s3: S3Client, case: Case, repeat: int) -> dict[str, Any]:
    fetched: list[int] = []

    def count(parsed: dict[str, Any], **_: Any) -> None:
        fetched.append(int(parsed["ContentLength"]))

    s3.meta.events.register("after-call.s3.GetObject", count)
    times = []
    for _ in range(repeat):
        fetched.clear()
        started = time.perf_counter()
        inspect_job_folder(s3, BUCKET, case.name.replace(" ", "-"), TrainingConfig())
        times.append(time.perf_counter() - started)
    s3.meta.events.unregister("after-call.s3.GetObject", count)
    return {"requests": len(fetched), "bytes": sum(fetched), "median_s": statistics.median(times)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5, help="checks per case (median shown)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="rondo-shard-checks-") as scratch:
        folder = Path(scratch)
        admin = S3Credentials(access_key="BENCHADMIN", secret_key="bench-secret", name="admin")
        write_s3_config(folder / "s3.json", [admin])
        seaweed = SeaweedS3(data_dir=folder / "seaweed", s3_config=folder / "s3.json")
        seaweed.start(folder / "seaweed.log")
        try:
            s3 = make_s3_client(seaweed.endpoint, admin.access_key, admin.secret_key)
            s3.create_bucket(Bucket=BUCKET)
            print(
                f"{'case':<26} {'shard MB':>9} {'folder MB':>10} {'GETs':>5} "
                f"{'KB read':>9} {'read %':>7} {'check ms':>9}"
            )
            for case in CASES:
                shard_bytes = upload(s3, case)
                result = measure(s3, case, args.repeat)
                total = shard_bytes * case.shards
                print(
                    f"{case.name:<26} {shard_bytes / 1e6:>9.1f} {total / 1e6:>10.1f} "
                    f"{result['requests']:>5} {result['bytes'] / 1e3:>9.1f} "
                    f"{100 * result['bytes'] / total:>7.3f} {result['median_s'] * 1e3:>9.1f}"
                )
        finally:
            seaweed.stop()


if __name__ == "__main__":
    main()
