"""What `rondo up` chose and started, persisted so the next `up` reuses it.

The state file `<data-dir>/stack.json` (mode 0600: it holds credentials and the API key) keeps
the ports, the S3 identities, the bus identities' passwords, the default user's bucket and API
key, the database URLs and the processes started (pid plus creation time, so a reused pid is
never mistaken for ours).
"""

import os
import secrets
from pathlib import Path

import psutil
from pydantic import BaseModel, Field

from rondo.contracts.bus_permissions import OPERATOR, SERVICES, agent_identity
from rondo.contracts.config import inbox_prefix
from rondo.stack.ports import (
    GRPC_OFFSET,
    free_port_range,
    free_ports,
    keep_or_replace,
    range_is_free,
)
from rondo.stack.servers import S3Credentials, SeaweedS3

STATE_FILE_NAME = "stack.json"
PLATFORM_BUCKET = "rondo-platform"
DEFAULT_USER_NAME = "default"
DEFAULT_BUCKET = "rondo-default"
FL_PORTS_PER_AGENT = 20
# Each agent's user code runs as uids of its own block (see rondo.worker_agent.sandbox): far
# above host accounts and the subordinate ids containers get, below 2**31.
SANDBOX_UIDS_PER_AGENT = 64
SANDBOX_UID_BASE = 2_000_000_000
SANDBOX_UID_BLOCKS = 2_000_000
# The gateway accepts keys `rsk_live_<random>` and `rsk_dev_<random>`; a local stack is dev.
DEV_API_KEY_PREFIX = "rsk_dev_"
DATABASE_SERVICES = ("gateway", "scheduler", "artifacts")


class AgentConfig(BaseModel):
    """One local worker-agent: its id, the FL server ports it lends and the uids its user code
    runs as (inclusive ranges; no two agents on the host share either)."""

    agent_id: str
    fl_ports: tuple[int, int]
    sandbox_uids: tuple[int, int] | None = Field(
        default=None, description="RONDO_AGENT_SANDBOX_UIDS; None in a state from before them"
    )

    @property
    def part_name(self) -> str:
        return f"worker-agent-{self.agent_id}"

    @property
    def fl_ports_env(self) -> str:
        """The `RONDO_AGENT_FL_PORTS` value, e.g. '20000-20019'."""
        return f"{self.fl_ports[0]}-{self.fl_ports[1]}"

    @property
    def sandbox_uids_env(self) -> str:
        """The `RONDO_AGENT_SANDBOX_UIDS` value, e.g. '2000000000-2000000063'."""
        assert self.sandbox_uids is not None, "allocated by new_state / reallocated"
        return f"{self.sandbox_uids[0]}-{self.sandbox_uids[1]}"


class ExternalNats(BaseModel):
    """A NATS the stack connects to instead of starting its own (e.g. a cluster)."""

    url: str = Field(description="RONDO_NATS_URL: one server, or several separated by commas")
    stream_replicas: int = Field(default=1, ge=1, le=5, description="RONDO_NATS_STREAM_REPLICAS")


class StackPorts(BaseModel):
    nats: int
    nats_monitor: int
    seaweed: dict[str, int] = Field(description="SeaweedS3.PORT_NAMES -> port (each binds +10000)")
    gateway: int


class DefaultUser(BaseModel):
    name: str = DEFAULT_USER_NAME
    bucket: str = DEFAULT_BUCKET
    api_key: str
    user_id: str | None = Field(default=None, description="Set once the gateway created it")


class ProcessRecord(BaseModel):
    """A process `rondo up` started; `create_time` tells it apart from a later one with its pid."""

    pid: int
    create_time: float
    log_path: Path

    @classmethod
    def of(cls, pid: int, log_path: Path) -> "ProcessRecord":
        """The record of a process just started (one already gone records as never alive)."""
        try:
            create_time = psutil.Process(pid).create_time()
        except psutil.NoSuchProcess:
            create_time = 0.0
        return cls(pid=pid, create_time=create_time, log_path=log_path)

    def process(self) -> psutil.Process | None:
        """The live process this record names, or None (exited, zombie, or pid reused)."""
        try:
            proc = psutil.Process(self.pid)
            if abs(proc.create_time() - self.create_time) > 0.01:
                return None
            return None if proc.status() == psutil.STATUS_ZOMBIE else proc
        except psutil.NoSuchProcess:
            return None


class StackState(BaseModel):
    data_dir: Path = Field(description="Absolute; every path below derives from it")
    stack_id: str = Field(description="Marks the stack's processes (env RONDO_STACK_ID)")
    host: str = "127.0.0.1"
    ports: StackPorts
    agents: list[AgentConfig]
    platform_bucket: str = PLATFORM_BUCKET
    s3_admin: S3Credentials = Field(description="The platform's identity: every bucket")
    s3_user: S3Credentials | None = Field(
        default=None,
        description="The default user's S3 key (their bucket only), as the gateway minted it",
    )
    user: DefaultUser
    databases: dict[str, str] = Field(description="service -> SQLAlchemy URL")
    processes: dict[str, ProcessRecord] = Field(default_factory=dict, description="part -> pid")
    external_nats: ExternalNats | None = Field(
        default=None, description="Set: use this NATS, start none (ports.nats* unused)"
    )
    trust_user_code: bool = Field(
        default=False,
        description="`rondo up --trust-user-code`: workers run user code as their own user",
    )
    bus_passwords: dict[str, str] = Field(
        default_factory=dict,
        description="Bus identity (service, agent-<id>, operator) -> its NATS password; the "
        "server's config holds only bcrypt hashes of them",
    )

    def bus_identities(self) -> list[str]:
        """Every identity of this stack's bus: the services, each agent, the operator."""
        return [*SERVICES, *(agent_identity(a.agent_id) for a in self.agents), OPERATOR]

    def ensure_bus_passwords(self) -> None:
        """A fresh random password for each identity that has none (a new stack, a new
        agent); existing ones are kept."""
        for identity in self.bus_identities():
            if identity not in self.bus_passwords:
                self.bus_passwords[identity] = secrets.token_urlsafe(32)

    def nats_connect_options(self, identity: str = OPERATOR) -> dict[str, str]:
        """`nats.connect` keyword arguments for `identity` (default: the operator, which the
        CLI and tests use); none where the stack has no password for it."""
        password = self.bus_passwords.get(identity)
        if password is None:
            return {}
        return {"user": identity, "password": password, "inbox_prefix": inbox_prefix(identity)}

    @property
    def nats_url(self) -> str:
        if self.external_nats is not None:
            return self.external_nats.url
        return f"nats://{self.host}:{self.ports.nats}"

    @property
    def nats_stream_replicas(self) -> int:
        return self.external_nats.stream_replicas if self.external_nats is not None else 1

    @property
    def nats_health_url(self) -> str:
        return f"http://{self.host}:{self.ports.nats_monitor}/healthz?js-enabled-only=true"

    @property
    def s3_endpoint(self) -> str:
        return f"http://{self.host}:{self.ports.seaweed['s3']}"

    @property
    def gateway_url(self) -> str:
        return f"http://{self.host}:{self.ports.gateway}"

    @property
    def logs_dir(self) -> Path:
        return self.data_dir / "logs"

    @property
    def s3_config_path(self) -> Path:
        return self.data_dir / "s3.json"

    @property
    def nats_auth_config_path(self) -> Path:
        """nats-server's users and permissions (`rondo.stack.bus_auth`), mode 0600."""
        return self.data_dir / "nats-auth.conf"

    def recorded_ports(self) -> list[int]:
        """Every port the stack binds: servers, SeaweedFS's gRPC twins, gateway, FL ranges."""
        seaweed = list(self.ports.seaweed.values())
        fl_ports = [p for a in self.agents for p in range(a.fl_ports[0], a.fl_ports[1] + 1)]
        return [
            self.ports.nats,
            self.ports.nats_monitor,
            *seaweed,
            *(p + GRPC_OFFSET for p in seaweed),
            self.ports.gateway,
            *fl_ports,
        ]

    def reallocated(self, workers: int) -> "StackState":
        """A copy for the next start: the same ports where still free, fresh ones otherwise,
        and exactly `workers` agents (existing ids and FL ranges kept)."""
        nats, monitor, gateway = keep_or_replace(
            [self.ports.nats, self.ports.nats_monitor, self.ports.gateway], self.host
        )
        seaweed_names = list(self.ports.seaweed)
        seaweed = keep_or_replace(
            [self.ports.seaweed[name] for name in seaweed_names], self.host, with_grpc_twin=True
        )
        ports = StackPorts(
            nats=nats,
            nats_monitor=monitor,
            seaweed=dict(zip(seaweed_names, seaweed, strict=True)),
            gateway=gateway,
        )
        agents: list[AgentConfig] = []
        for index in range(workers):
            agent_id = agent_id_for(index)
            previous = next((a for a in self.agents if a.agent_id == agent_id), None)
            if previous is not None and range_is_free(*previous.fl_ports, self.host):
                agent = previous
            else:
                taken = [a.fl_ports for a in (*agents, *self.agents)]
                fl_ports = free_port_range(FL_PORTS_PER_AGENT, self.host, avoid=taken)
                agent = AgentConfig(agent_id=agent_id, fl_ports=fl_ports)
            if agent.sandbox_uids is None:
                taken_uids = [a.sandbox_uids for a in (*agents, *self.agents) if a.sandbox_uids]
                agent = agent.model_copy(update={"sandbox_uids": free_uid_range(taken_uids)})
            agents.append(agent)
        return self.model_copy(update={"ports": ports, "agents": agents})


def free_uid_range(avoid: list[tuple[int, int]]) -> tuple[int, int]:
    """A block of SANDBOX_UIDS_PER_AGENT uids no host account uses, picked at random (stacks on
    one host never learn of each other's ranges; 2M blocks make a clash unlikely), that
    overlaps none of `avoid` and that no running process uses."""
    in_use = {
        uid
        for proc in psutil.process_iter(["uids"])
        if proc.info["uids"]
        for uid in proc.info["uids"]
    }
    while True:
        first = SANDBOX_UID_BASE + secrets.randbelow(SANDBOX_UID_BLOCKS) * SANDBOX_UIDS_PER_AGENT
        last = first + SANDBOX_UIDS_PER_AGENT - 1
        clashes = any(a <= last and first <= b for a, b in avoid)
        if not clashes and not any(first <= uid <= last for uid in in_use):
            return (first, last)


def agent_id_for(index: int) -> str:
    return f"local-{index}"


def state_path(data_dir: Path) -> Path:
    return data_dir / STATE_FILE_NAME


def new_state(data_dir: Path, workers: int, host: str = "127.0.0.1") -> StackState:
    """A first-time stack: free ports, fresh credentials and API key, SQLite databases."""
    data_dir = data_dir.resolve()
    nats, monitor, gateway = free_ports(3, host)
    seaweed = free_ports(len(SeaweedS3.PORT_NAMES), host, with_grpc_twin=True)
    agents: list[AgentConfig] = []
    for index in range(workers):
        fl_ports = free_port_range(FL_PORTS_PER_AGENT, host, avoid=[a.fl_ports for a in agents])
        uids = free_uid_range([a.sandbox_uids for a in agents if a.sandbox_uids])
        agents.append(
            AgentConfig(agent_id=agent_id_for(index), fl_ports=fl_ports, sandbox_uids=uids)
        )
    return StackState(
        data_dir=data_dir,
        stack_id=secrets.token_hex(8),
        host=host,
        ports=StackPorts(
            nats=nats,
            nats_monitor=monitor,
            seaweed=dict(zip(SeaweedS3.PORT_NAMES, seaweed, strict=True)),
            gateway=gateway,
        ),
        agents=agents,
        s3_admin=_new_credentials("rondo-platform"),
        user=DefaultUser(api_key=DEV_API_KEY_PREFIX + secrets.token_urlsafe(32)),
        databases={
            service: f"sqlite:///{data_dir / 'db' / f'{service}.db'}"
            for service in DATABASE_SERVICES
        },
    )


def _new_credentials(name: str, buckets: list[str] | None = None) -> S3Credentials:
    return S3Credentials(
        access_key="RONDO" + secrets.token_hex(8).upper(),
        secret_key=secrets.token_urlsafe(30),
        name=name,
        buckets=buckets,
    )


def load_state(data_dir: Path) -> StackState | None:
    """The persisted state of the stack in `data_dir`, or None if it was never started."""
    path = state_path(data_dir)
    if not path.exists():
        return None
    return StackState.model_validate_json(path.read_text(encoding="utf-8"))


def save_state(state: StackState) -> None:
    """Write atomically (temp file, then rename), mode 0600."""
    path = state_path(state.data_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_suffix(".json.tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        out.write(state.model_dump_json(indent=2))
    os.chmod(temporary, 0o600)
    os.replace(temporary, path)
