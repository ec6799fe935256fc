"""The spool files an NVFlare run writes and the worker-agent reads (docs/design.md, "Spool
files"): the one format both sides use.

The FL server's `RoundReporter` (worker-agent `flare_reporter.py`, inside the NVFlare server
process) writes into `$RONDO_SPOOL_DIR`:

- `run_started.json` (`RunStartedRecord`), when the run starts;
- per round `round_<r:05d>.pt` (a plain state dict), then `round_<r:05d>.json`
  (`RoundRecord`), the `.json` renamed into place after its `.pt`;
- `run_ended.json` (`RunEndedRecord`), last.

Each `.json` is written to `<name>.tmp` and renamed, so a reader never sees half a file. The
agent (`spool.py`) reads them with `read_record`; records ignore unknown keys, so a newer
writer's extra fields do not stop an older agent. Client executors write the user's out_dir
files to `$RONDO_OUT_SPOOL/round_<r>/<relpath>` (`out_round_dir`), each round folder renamed
into place whole from `$RONDO_OUT_SPOOL/.staging/`.
"""

import json
import re
from pathlib import Path
from typing import TypeVar

from pydantic import BaseModel, ConfigDict, Field

SPOOL_ENV = "RONDO_SPOOL_DIR"
OUT_SPOOL_ENV = "RONDO_OUT_SPOOL"

RUN_STARTED_FILE = "run_started.json"
RUN_ENDED_FILE = "run_ended.json"
ROUND_FILE = re.compile(r"^round_(\d+)\.json$")
OUT_ROUND_DIR = re.compile(r"^round_(\d+)$")
OUT_STAGING_DIR = ".staging"  # in-progress round folders of the out spool; never read


class SpoolRecord(BaseModel):
    """Fields every spool record shares: unknown keys are ignored (see the module docstring)."""

    model_config = ConfigDict(extra="ignore")


class RunStartedRecord(SpoolRecord):
    nvflare_job_id: str = ""


class SpoolContribution(SpoolRecord):
    """One site's accepted training result in a round."""

    site_name: str = Field(description="NVFlare site name (`site-<slot>-<generation>`)")
    samples: int = 0
    metrics: dict[str, float] = Field(default_factory=dict)


class RoundRecord(SpoolRecord):
    """A completed round; its checkpoint is the `.pt` of the same stem."""

    round: int | None = Field(default=None, description="None: the file name's round")
    num_rounds: int | None = Field(default=None, description="The run's total, when known")
    metrics: dict[str, float] = Field(default_factory=dict)
    contributions: list[SpoolContribution] = Field(default_factory=list)
    duration_s: float = 0.0


class RunEndedRecord(SpoolRecord):
    completed: bool = False
    error: str | None = None


R = TypeVar("R", bound=SpoolRecord)


def round_stem(round_number: int) -> str:
    """`round_<r:05d>`: the stem of a round's `.json` and `.pt` in the server spool."""
    return f"round_{round_number:05d}"


def out_round_dir(round_number: int) -> str:
    """`round_<r>`: a client's out-spool folder of round `r`."""
    return f"round_{round_number}"


def write_record(path: Path, record: SpoolRecord) -> None:
    """Write `record` to `path` atomically (`<name>.tmp`, then renamed).

    Plain `json.dumps` of the record's fields: a NaN metric stays NaN (pydantic's JSON would
    write null, which the reader could not take as a float)."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(record.model_dump(), indent=1))
    tmp.replace(path)


def read_record(kind: type[R], content: bytes, name: str) -> R:
    """Parse a spool file's bytes as `kind`; raises ValueError (incl. pydantic's
    ValidationError) naming the file when it is not a JSON object of that shape."""
    data = json.loads(content.decode())
    if not isinstance(data, dict):
        raise ValueError(f"{name} is not a JSON object")
    return kind.model_validate(data)
