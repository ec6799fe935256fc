"""The worker-agent's settings, read from `RONDO_*` / `RONDO_AGENT_*` environment variables."""

import hashlib
import re
import socket
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, field_validator, model_validator
from pydantic_settings import NoDecode, SettingsConfigDict

from rondo.contracts.config import ServiceSettings
from rondo.contracts.events import Slot

# Uids no host account uses (above the usual 0-65535 and the subordinate ids containers get):
# a range derived per agent is one of these blocks.
DERIVED_UID_BASE = 2_000_000_000
DERIVED_UID_BLOCK_SIZE = 64
DERIVED_UID_BLOCKS = 2_000_000

# The agent id becomes part of NATS subjects and durable consumer names: no dots or wildcards.
AGENT_ID_PATTERN = re.compile(r"^[A-Za-z0-9_-]+$")


def default_agent_id() -> str:
    """This host's name, made safe for subjects (`gpu-1.lab` -> `gpu-1-lab`)."""
    return re.sub(r"[^A-Za-z0-9_-]", "-", socket.gethostname()) or "agent"


def parse_range(value: object, variable: str, example: str) -> object:
    """An inclusive range written 'FIRST-LAST' as the tuple (FIRST, LAST); other values as
    they are (already a tuple, or None)."""
    if isinstance(value, str):
        first, sep, last = value.partition("-")
        if not sep:
            raise ValueError(f"{variable} must look like '{example}'")
        return (int(first), int(last))
    return value


class AgentSettings(ServiceSettings):
    """One worker-agent: its identity, what it offers the scheduler, and where it works."""

    # Fields are read from the exact variable in their alias and can be passed by name in code.
    model_config = SettingsConfigDict(env_prefix="RONDO_", extra="ignore", populate_by_name=True)

    agent_id: str = Field(
        default_factory=default_agent_id,
        validation_alias="RONDO_AGENT_ID",
        description="Unique per host; names this agent's subjects and durables",
    )
    agent_host: str = Field(
        default="127.0.0.1",
        validation_alias="RONDO_AGENT_HOST",
        description="Address other hosts dial to reach an FL server run by this agent",
    )
    fl_port_range: Annotated[tuple[int, int], NoDecode] = Field(
        default=(20000, 20019),
        validation_alias="RONDO_AGENT_FL_PORTS",
        description="Inclusive port range lent to FL servers, written 'FIRST-LAST'",
    )
    sandbox_uids: Annotated[tuple[int, int] | None, NoDecode] = Field(
        default=None,
        validation_alias="RONDO_AGENT_SANDBOX_UIDS",
        description="Inclusive uid range, 'FIRST-LAST', each NVFlare process (user code) runs "
        "as one of (with the gid of the same number); unset: a range derived from the agent id "
        "and work dir. Used when the agent runs as root; no two agents on a host may share uids",
    )
    trust_user_code: bool = Field(
        default=False,
        validation_alias="RONDO_AGENT_TRUST_USER_CODE",
        description="Run user code as the agent's own user, unsandboxed (every job is trusted); "
        "without it an agent that cannot switch users refuses every run",
    )
    inventory: list[Slot] | None = Field(
        default=None,
        validation_alias="RONDO_AGENT_INVENTORY",
        description="Declared slots (JSON list of Slot); unset: detect GPUs, else one CPU slot",
    )
    work_dir: Path | None = Field(
        default=None,
        validation_alias="RONDO_AGENT_WORK_DIR",
        description="Kits, shards, envs and NVFlare workspaces; default <data_dir>/agents/<id>",
    )
    torch_threads: int = Field(default=1, ge=1, validation_alias="RONDO_AGENT_TORCH_THREADS")
    memory_limit_mb: int | None = Field(
        default=None,
        gt=0,
        validation_alias="RONDO_AGENT_MEMORY_LIMIT_MB",
        description="Memory each NVFlare process started as a local process may allocate "
        "(RLIMIT_DATA: heap and private mappings, not code or reserved address space); "
        "unset: no limit. A client container's memory limit (Docker runtime; unset: 16384)",
    )
    runtime: Literal["auto", "process", "docker"] = Field(
        default="auto",
        validation_alias="RONDO_AGENT_RUNTIME",
        description="Where NVFlare clients run: containers (docker), local processes (process), "
        "or containers when a Docker engine answers (auto)",
    )
    image: str = Field(
        default="rondo/agent:0.1.0",
        validation_alias="RONDO_AGENT_IMAGE",
        description="Image of the client containers (rondo, nvflare and torch installed)",
    )
    heartbeat_interval_s: float = Field(
        default=2.0, gt=0, validation_alias="RONDO_AGENT_HEARTBEAT_INTERVAL_S"
    )
    requirements_timeout_s: float = Field(
        default=600.0, gt=0, validation_alias="RONDO_AGENT_REQUIREMENTS_TIMEOUT_S"
    )
    submit_timeout_s: float = Field(
        default=900.0,
        gt=0,
        validation_alias="RONDO_AGENT_SUBMIT_TIMEOUT_S",
        description="How long the FL server waits for its clients before the run is failed",
    )
    log_max_lines: int = Field(
        default=200_000,
        gt=0,
        validation_alias="RONDO_AGENT_LOG_MAX_LINES",
        description="Lines of one process's log published per run; past it (or past "
        "RONDO_AGENT_LOG_MAX_BYTES) one marker line says how many were dropped",
    )
    log_max_bytes: int = Field(
        default=50 * 1024 * 1024, gt=0, validation_alias="RONDO_AGENT_LOG_MAX_BYTES"
    )
    keep_run_dirs: bool = Field(
        default=False,
        validation_alias="RONDO_AGENT_KEEP_RUN_DIRS",
        description="Keep a stopped run's folder (kits hold private keys: debugging only)",
    )
    shard_max_bytes: int = Field(
        default=64 * 1024**3,
        gt=0,
        validation_alias="RONDO_AGENT_SHARD_MAX_BYTES",
        description="Largest unpacked size of one shard",
    )
    shard_max_ratio: float = Field(
        default=200.0,
        gt=1,
        validation_alias="RONDO_AGENT_SHARD_MAX_RATIO",
        description="Largest uncompressed/compressed size ratio of a shard entry (zip bombs)",
    )

    @field_validator("agent_id")
    @classmethod
    def _agent_id_is_subject_safe(cls, value: str) -> str:
        if not AGENT_ID_PATTERN.match(value):
            raise ValueError("RONDO_AGENT_ID may contain only letters, digits, '-' and '_'")
        return value

    @field_validator("fl_port_range", mode="before")
    @classmethod
    def _parse_port_range(cls, value: object) -> object:
        return parse_range(value, "RONDO_AGENT_FL_PORTS", "20000-20019")

    @field_validator("sandbox_uids", mode="before")
    @classmethod
    def _parse_uid_range(cls, value: object) -> object:
        return parse_range(value, "RONDO_AGENT_SANDBOX_UIDS", "2000000000-2000000063")

    @field_validator("sandbox_uids")
    @classmethod
    def _uid_range_is_unprivileged(cls, value: tuple[int, int] | None) -> tuple[int, int] | None:
        if value is not None and not 1000 <= value[0] <= value[1] < 2**31 - 1:
            raise ValueError(
                "RONDO_AGENT_SANDBOX_UIDS must be FIRST-LAST with 1000 <= FIRST <= LAST"
            )
        return value

    @field_validator("fl_port_range")
    @classmethod
    def _port_range_is_ordered(cls, value: tuple[int, int]) -> tuple[int, int]:
        first, last = value
        if not 0 < first <= last < 65536:
            raise ValueError("RONDO_AGENT_FL_PORTS must be FIRST-LAST with 0 < FIRST <= LAST")
        return value

    @model_validator(mode="after")
    def _default_work_dir(self) -> "AgentSettings":
        if self.work_dir is None:
            self.work_dir = self.data_dir / "agents" / self.agent_id
        return self

    @property
    def sandbox_uid_range(self) -> tuple[int, int]:
        """The configured uid range, or one derived from the agent id and work dir (stable
        across restarts, so a new life of the agent finds its previous life's processes)."""
        if self.sandbox_uids is not None:
            return self.sandbox_uids
        digest = hashlib.sha256(f"{self.agent_id}@{self.work_root}".encode()).digest()
        block = int.from_bytes(digest[:4], "big") % DERIVED_UID_BLOCKS
        first = DERIVED_UID_BASE + block * DERIVED_UID_BLOCK_SIZE
        return (first, first + DERIVED_UID_BLOCK_SIZE - 1)

    @property
    def work_root(self) -> Path:
        """The work dir, always set after validation."""
        assert self.work_dir is not None
        return self.work_dir
