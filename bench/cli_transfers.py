"""What the SDK's file transfers cost against a real local stack (`rondo up` in a temporary
folder): a multipart upload, the re-submission check that skips it, a verified download, and
the `rondo` command's start-up time. Prints the figures; asserts nothing.

    .venv/bin/python bench/cli_transfers.py [--size-mib 200] [--starts 5]
"""

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from rondo.client import Client
from rondo.stack.local import LocalStack

RONDO = Path(sys.executable).parent / "rondo"


@contextmanager
def timed(what: str, size_mib: float | None = None) -> Iterator[None]:
    """Print how long the block took (and the rate, given a size)."""
    started = time.perf_counter()
    yield
    took = time.perf_counter() - started
    rate = f"  ({size_mib / took:.0f} MiB/s)" if size_mib else ""
    print(f"{what:<44} {took:8.2f} s{rate}")


def startup_seconds(env: dict[str, str], starts: int) -> list[float]:
    """Wall time of `rondo jobs` (import, one API call, table) a few times."""
    times = []
    for _ in range(starts):
        started = time.perf_counter()
        subprocess.run([str(RONDO), "jobs"], env=env, capture_output=True, check=True)
        times.append(time.perf_counter() - started)
    return times


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mib", type=int, default=200, help="file to move (200 MiB)")
    parser.add_argument("--starts", type=int, default=5, help="CLI start-ups to time (5)")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="rondo-bench-") as tmp:
        folder = Path(tmp)
        stack = LocalStack(folder / "stack")
        state = stack.up(workers=0).state
        try:
            data = folder / "data.bin"
            with data.open("wb") as out:
                for _ in range(args.size_mib):
                    out.write(os.urandom(1024 * 1024))
            key = "bench/data.bin"
            with Client(state.gateway_url, state.user.api_key) as client:
                with timed(f"upload {args.size_mib} MiB (multipart)", args.size_mib):
                    client.files.upload(data, key)
                with timed("re-sync of the same file (checksum, skipped)", args.size_mib):
                    report = client.files.sync({key: data}, mirrored=[])
                assert report.skipped == [key], report
                with timed(f"download {args.size_mib} MiB, ETag verified", args.size_mib):
                    client.files.download(key, folder / "back.bin")
            env = {
                **os.environ,
                "RONDO_URL": state.gateway_url,
                "RONDO_API_KEY": state.user.api_key,
                "XDG_CONFIG_HOME": str(folder / "config"),
            }
            starts = startup_seconds(env, args.starts)
            print(
                f"{'rondo jobs, wall (median / max of ' + str(args.starts) + ')':<44} "
                f"{statistics.median(starts):8.2f} s  (max {max(starts):.2f} s)"
            )
        finally:
            stack.down()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
