"""The Rondo services of the local stack: which module runs each part, with which environment.

Every service runs as `python -m <module>` configured only by `RONDO_*` variables (see
docs/design.md); one worker-agent part per configured agent.
"""

import importlib.util
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field

from rondo.contracts.bus_permissions import agent_identity
from rondo.contracts.subjects import health_subject
from rondo.stack.processes import current_env
from rondo.stack.state import AgentConfig, StackState

SERVICE_MODULES: Mapping[str, str] = {
    "gateway": "rondo.gateway",
    "scheduler": "rondo.scheduler",
    "artifacts": "rondo.artifacts",
    "worker-agent": "rondo.worker_agent",
}

# Every process of a stack carries this variable (children inherit it), so `rondo down` can
# find processes that left the recorded process trees.
STACK_ID_ENV = "RONDO_STACK_ID"
# What a worker-agent's environment never carries, whatever the caller's has: platform S3
# keys (agents use presigned URLs only) and AWS credentials.
AGENT_WITHHELD_PREFIXES = ("RONDO_S3_", "AWS_")


@dataclass(frozen=True)
class ServicePart:
    """One service process of the stack."""

    name: str  # the part's name: "gateway", "worker-agent-local-0", ...
    health_service: str  # answers rondo.health.<this>: "gateway", "worker-agent.local-0", ...
    module: str
    env: Mapping[str, str] = field(repr=False)

    @property
    def argv(self) -> list[str]:
        return [sys.executable, "-m", self.module]

    @property
    def health_subject(self) -> str:
        return health_subject(self.health_service)


def module_is_runnable(module: str) -> bool:
    """Whether `python -m module` would find the module (a package needs `__main__`)."""
    try:
        spec = importlib.util.find_spec(module)
        if spec is None:
            return False
        if spec.submodule_search_locations is None:
            return True
        return importlib.util.find_spec(f"{module}.__main__") is not None
    except (ImportError, ValueError):
        return False


def missing_services() -> list[str]:
    """Services whose module cannot be run with `python -m` here."""
    return [s for s, module in SERVICE_MODULES.items() if not module_is_runnable(module)]


def bus_identity_env(state: StackState, identity: str) -> dict[str, str]:
    """`RONDO_NATS_USER` / `RONDO_NATS_PASSWORD` of one bus identity (none on a stack made
    before the bus had identities, until its next `up` makes them)."""
    password = state.bus_passwords.get(identity)
    if password is None:
        return {}
    return {"RONDO_NATS_USER": identity, "RONDO_NATS_PASSWORD": password}


def stack_env(state: StackState, identity: str) -> dict[str, str]:
    """The environment a service of the stack starts with (the caller's, plus these), as
    bus identity `identity`."""
    return current_env(
        **bus_identity_env(state, identity),
        RONDO_NATS_URL=state.nats_url,
        RONDO_NATS_STREAM_REPLICAS=str(state.nats_stream_replicas),
        RONDO_S3_ENDPOINT=state.s3_endpoint,
        RONDO_S3_REGION="garage",
        RONDO_S3_ACCESS_KEY=state.s3_admin.access_key,
        RONDO_S3_SECRET_KEY=state.s3_admin.secret_key,
        RONDO_PLATFORM_BUCKET=state.platform_bucket,
        RONDO_DATA_DIR=str(state.data_dir),
        PYTHONUNBUFFERED="1",
        **{STACK_ID_ENV: state.stack_id},
    )


def gateway_env(state: StackState) -> dict[str, str]:
    return {
        **stack_env(state, "gateway"),
        "RONDO_GATEWAY_HOST": state.host,
        "RONDO_GATEWAY_PORT": str(state.ports.gateway),
        "RONDO_GATEWAY_DATABASE_URL": state.databases["gateway"],
    }


def service_parts(state: StackState) -> list[ServicePart]:
    """The gateway, scheduler, artifacts and one worker-agent per configured agent."""
    parts = [
        ServicePart("gateway", "gateway", SERVICE_MODULES["gateway"], gateway_env(state)),
        ServicePart(
            "scheduler",
            "scheduler",
            SERVICE_MODULES["scheduler"],
            {
                **stack_env(state, "scheduler"),
                "RONDO_SCHEDULER_DATABASE_URL": state.databases["scheduler"],
            },
        ),
        ServicePart(
            "artifacts",
            "artifacts",
            SERVICE_MODULES["artifacts"],
            {
                **stack_env(state, "artifacts"),
                "RONDO_ARTIFACTS_DATABASE_URL": state.databases["artifacts"],
            },
        ),
    ]
    parts += [agent_part(state, agent) for agent in state.agents]
    return parts


def agent_part(state: StackState, agent: AgentConfig, host: str | None = None) -> ServicePart:
    """One worker-agent of the stack; `host` is the address its FL servers are dialled at
    (default: the stack's host). Its NVFlare processes run as local processes: the local
    stack needs no Docker engine, even where one is present.

    Agents hold no platform S3 keys: everything they fetch or store goes through presigned
    URLs and the NATS object store. User code runs as the agent's uid range (sandboxed; the
    agent refuses runs where it cannot switch users), or as the agent's user when the stack
    trusts user code."""
    env = {
        name: value
        for name, value in stack_env(state, agent_identity(agent.agent_id)).items()
        if not name.startswith(AGENT_WITHHELD_PREFIXES)
    }
    env.update(
        {
            "RONDO_AGENT_ID": agent.agent_id,
            "RONDO_AGENT_HOST": host or state.host,
            "RONDO_AGENT_FL_PORTS": agent.fl_ports_env,
            "RONDO_AGENT_WORK_DIR": str(state.data_dir / "agents" / agent.agent_id),
            "RONDO_AGENT_RUNTIME": "process",
            "RONDO_AGENT_TRUST_USER_CODE": "1" if state.trust_user_code else "0",
        }
    )
    if agent.sandbox_uids is not None:
        env["RONDO_AGENT_SANDBOX_UIDS"] = agent.sandbox_uids_env
    return ServicePart(
        agent.part_name, f"worker-agent.{agent.agent_id}", SERVICE_MODULES["worker-agent"], env
    )


def manage_argv() -> list[str]:
    """The gateway's operator command (`create-user ...` follows)."""
    return [sys.executable, "-m", f"{SERVICE_MODULES['gateway']}.manage"]
