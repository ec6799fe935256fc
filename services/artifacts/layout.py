"""Exact object keys of a job's outputs in the user's bucket (names from `rondo.contracts.layout`).

Every key the service writes is spelled here, under the job folder `prefix` (`jobs/{name}/`):

- `files_out/metrics.json`, `files_out/training_log.txt`, `files_out/fl_round_complete.json`
- `files_out/server.log`, `files_out/client_{n}.log`
- `files_out/<user path>` for staged `out_dir` files (e.g. `files_out/client_0/round_1/x.png`)
- `model_out/global_model.pt`, `model_out/model_round_{r}.pt`, `model_out/best_model.pt`
"""

from dataclasses import dataclass
from pathlib import PurePosixPath

from rondo.contracts.consumers import NeverValid
from rondo.contracts.layout import (
    BEST_MODEL,
    FILES_OUT,
    GLOBAL_MODEL,
    METRICS_JSON,
    REPORT_FILES,
    ROUNDS_JSON,
    TRAINING_LOG,
    files_out_key,
    is_log_file_name,
    model_out_key,
    model_round_name,
    normalize_prefix,
)

__all__ = [
    "JobLocation",
    "UnsafePath",
    "check_staged_path",
    "is_log_file_name",
    "normalize_prefix",
]


class UnsafePath(NeverValid, ValueError):
    """A staged file's path would land outside `files_out/` or on a service-owned report."""


def check_staged_path(path: str) -> str:
    """The validated bucket-relative path of a staged user file (relative to the job folder).

    Contract: the result is `files_out/<at least one segment>`; absolute paths, `..` or `.`
    segments, empty segments, backslashes and control characters are refused, and so are the
    report and log names the service renders itself (`files_out/metrics.json`, ...).
    Raises `UnsafePath`.
    """
    if not path or path.startswith("/") or "\\" in path:
        raise UnsafePath(f"staged path {path!r} must be relative and use '/'")
    if any(ord(char) < 32 or ord(char) == 127 for char in path):
        raise UnsafePath(f"staged path {path!r} contains control characters")
    parts = path.split("/")
    if any(part in ("", ".", "..") for part in parts):
        raise UnsafePath(f"staged path {path!r} has an empty, '.' or '..' segment")
    if parts[0] != FILES_OUT or len(parts) < 2:
        raise UnsafePath(f"staged path {path!r} is not under {FILES_OUT}/")
    if len(parts) == 2 and (parts[1] in REPORT_FILES or is_log_file_name(parts[1])):
        raise UnsafePath(f"staged path {path!r} would replace a file the service renders")
    return str(PurePosixPath(*parts))


@dataclass(frozen=True)
class JobLocation:
    """Where a job's folder lives: `s3://{bucket}/{prefix}` with `prefix` like `jobs/{name}/`."""

    job_id: str
    bucket: str
    prefix: str

    def key(self, relative: str) -> str:
        return f"{self.prefix}{relative}"

    def files_out(self, name: str) -> str:
        return files_out_key(self.prefix, name)

    def model_out(self, name: str) -> str:
        return model_out_key(self.prefix, name)

    @property
    def metrics_json(self) -> str:
        return self.files_out(METRICS_JSON)

    @property
    def training_log(self) -> str:
        return self.files_out(TRAINING_LOG)

    @property
    def rounds_json(self) -> str:
        return self.files_out(ROUNDS_JSON)

    @property
    def global_model(self) -> str:
        return self.model_out(GLOBAL_MODEL)

    @property
    def best_model(self) -> str:
        return self.model_out(BEST_MODEL)

    def model_round(self, round_number: int) -> str:
        return self.model_out(model_round_name(round_number))

    def log_file(self, file_name: str) -> str:
        """`files_out/server.log` or `files_out/client_<n>.log`."""
        if not is_log_file_name(file_name):
            raise ValueError(f"{file_name!r} is not a log file name")
        return self.files_out(file_name)

    def staged(self, path: str) -> str:
        """The key of a staged user file; raises `UnsafePath` (see `check_staged_path`)."""
        return self.key(check_staged_path(path))
