"""Placement: which worker slots and which FL-server agent a job gets. Pure functions.

A job needs one slot per shard; a slot (one GPU, or the CPU of a CPU-only host) serves one job
at a time. Candidate slots honour the job's GPU needs: `gpu_models` is an ordered preference
(a slot of an unlisted model is never used), `estimated_memory_mb` must fit in the slot's free
memory, `worker_ids` pins the job to those agents. Among equals, slots are spread over hosts.
The FL server role needs no slot: it goes to an agent that also runs a client of the job, else
to the least loaded agent, and takes two free ports of that agent's `fl_port_range`.

`plan` places a queue first come, first served, but a job that does not fit never blocks a
later one that does. `place_replacement` places the next run of a job that lost workers.
"""

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

from rondo.contracts.events import Slot
from rondo.contracts.training import GpuRequirements

PORTS_PER_SERVER = 2  # fed_learn_port, admin_port


@dataclass(frozen=True)
class AgentCapacity:
    """An online agent as placement sees it."""

    agent_id: str
    host: str
    slots: Sequence[Slot]
    fl_port_range: tuple[int, int]
    busy_slots: frozenset[int] = frozenset()
    used_ports: frozenset[int] = frozenset()
    server_roles: int = 0

    @property
    def load(self) -> int:
        return len(self.busy_slots) + self.server_roles


@dataclass(frozen=True)
class PlacementRequest:
    job_id: str
    shards: int
    gpu: GpuRequirements = field(default_factory=GpuRequirements)


@dataclass(frozen=True)
class SlotChoice:
    slot: int  # the job's worker slot (= shard index)
    agent_id: str
    device_index: int  # the agent's Slot.index
    device: str  # "cpu" or "cuda:N"


@dataclass(frozen=True)
class Placement:
    job_id: str
    clients: tuple[SlotChoice, ...]
    server_agent_id: str
    fed_learn_port: int
    admin_port: int

    @property
    def agents(self) -> list[str]:
        """Every agent involved, sorted."""
        return sorted({self.server_agent_id, *(client.agent_id for client in self.clients)})


@dataclass(frozen=True)
class Waiting:
    job_id: str
    reason: str


def normalize_model(name: str) -> str:
    """'RTX 4090', 'rtx-4090' and 'rtx_4090' name the same GPU model."""
    return name.strip().lower().replace(" ", "_").replace("-", "_")


def free_port_pair(port_range: tuple[int, int], used: frozenset[int]) -> tuple[int, int] | None:
    """The two lowest ports of the inclusive range not in `used`, or None."""
    low, high = port_range
    free: list[int] = []
    for port in range(low, high + 1):
        if port not in used:
            free.append(port)
            if len(free) == PORTS_PER_SERVER:
                return free[0], free[1]
    return None


def _fits(slot: Slot, gpu: GpuRequirements, memory_mb: int) -> bool:
    if gpu.gpu_models and normalize_model(slot.model) not in {
        normalize_model(model) for model in gpu.gpu_models
    }:
        return False
    return slot.total_memory_mb >= (gpu.estimated_memory_mb or 0) and memory_mb >= (
        gpu.estimated_memory_mb or 0
    )


def _eligible_agents(
    request: PlacementRequest, agents: Sequence[AgentCapacity]
) -> list[AgentCapacity]:
    pinned = set(request.gpu.worker_ids)
    return [agent for agent in agents if not pinned or agent.agent_id in pinned]


def _preference(slot: Slot, gpu: GpuRequirements) -> int:
    if not gpu.gpu_models:
        return 0
    models = [normalize_model(model) for model in gpu.gpu_models]
    return models.index(normalize_model(slot.model))


def _device(slot: Slot) -> str:
    return "cpu" if slot.kind == "cpu" else f"cuda:{slot.index}"


def place(request: PlacementRequest, agents: Sequence[AgentCapacity]) -> Placement | Waiting:
    """Place one job on online `agents`, or say what it waits for."""
    eligible = _eligible_agents(request, agents)
    candidates = [
        (agent, slot)
        for agent in eligible
        for slot in agent.slots
        if slot.index not in agent.busy_slots and _fits(slot, request.gpu, slot.free_memory_mb)
    ]
    if len(candidates) < request.shards:
        return Waiting(request.job_id, waiting_reason(request, eligible))

    chosen: list[tuple[AgentCapacity, Slot]] = []
    per_host: Counter[str] = Counter()
    per_agent: Counter[str] = Counter()
    for _ in range(request.shards):
        agent, slot = min(
            (candidate for candidate in candidates if candidate not in chosen),
            key=lambda c: (
                _preference(c[1], request.gpu),
                per_host[c[0].host],
                per_agent[c[0].agent_id],
                c[0].load,
                -c[1].free_memory_mb,
                c[0].agent_id,
                c[1].index,
            ),
        )
        chosen.append((agent, slot))
        per_host[agent.host] += 1
        per_agent[agent.agent_id] += 1

    server = _server_agent(eligible, per_agent)
    if server is None:
        return Waiting(
            request.job_id,
            "waiting for two free FL server ports on "
            + ", ".join(sorted({agent.agent_id for agent in eligible})),
        )
    agent, (fed_learn_port, admin_port) = server
    clients = tuple(
        SlotChoice(slot=n, agent_id=a.agent_id, device_index=s.index, device=_device(s))
        for n, (a, s) in enumerate(chosen)
    )
    return Placement(request.job_id, clients, agent.agent_id, fed_learn_port, admin_port)


def _server_agent(
    eligible: Sequence[AgentCapacity], clients_per_agent: Counter[str]
) -> tuple[AgentCapacity, tuple[int, int]] | None:
    """An agent running a client of the job if one has ports, else the least loaded one."""
    ranked = sorted(
        eligible,
        key=lambda agent: (
            clients_per_agent[agent.agent_id] == 0,
            agent.server_roles,
            agent.load,
            -clients_per_agent[agent.agent_id],
            agent.agent_id,
        ),
    )
    for agent in ranked:
        ports = free_port_pair(agent.fl_port_range, agent.used_ports)
        if ports is not None:
            return agent, ports
    return None


def describe_need(request: PlacementRequest) -> str:
    """E.g. '3 workers (h100 or a100) with >= 24 GB among agent-1, agent-2'."""
    count = request.shards
    text = f"{count} worker{'s' if count != 1 else ''}"
    if request.gpu.gpu_models:
        text += f" ({' or '.join(request.gpu.gpu_models)})"
    if request.gpu.estimated_memory_mb:
        gigabytes = f"{request.gpu.estimated_memory_mb / 1024:.1f}".removesuffix(".0")
        text += f" with >= {gigabytes} GB"
    if request.gpu.worker_ids:
        text += f" among {', '.join(request.gpu.worker_ids)}"
    return text


def waiting_reason(request: PlacementRequest, eligible: Sequence[AgentCapacity]) -> str:
    """E.g. 'waiting for 3 workers with >= 24 GB, 1 online' (+ ', 1 busy')."""
    matching = [
        (agent, slot)
        for agent in eligible
        for slot in agent.slots
        if _fits(slot, request.gpu, slot.total_memory_mb)
    ]
    busy = sum(slot.index in agent.busy_slots for agent, slot in matching)
    reason = f"waiting for {describe_need(request)}, {len(matching)} online"
    return reason + (f", {busy} busy" if busy else "")


def _reserve(agents: list[AgentCapacity], placement: Placement) -> list[AgentCapacity]:
    reserved: list[AgentCapacity] = []
    for agent in agents:
        taken = {c.device_index for c in placement.clients if c.agent_id == agent.agent_id}
        if agent.agent_id == placement.server_agent_id:
            agent = replace(
                agent,
                used_ports=agent.used_ports | {placement.fed_learn_port, placement.admin_port},
                server_roles=agent.server_roles + 1,
            )
        reserved.append(replace(agent, busy_slots=agent.busy_slots | taken))
    return reserved


def plan(
    requests: Sequence[PlacementRequest], agents: Sequence[AgentCapacity]
) -> list[Placement | Waiting]:
    """Place a queue in order; each placement takes its slots and ports from the next ones."""
    remaining = list(agents)
    decisions: list[Placement | Waiting] = []
    for request in requests:
        decision = place(request, remaining)
        if isinstance(decision, Placement):
            remaining = _reserve(remaining, decision)
        decisions.append(decision)
    return decisions


def place_replacement(
    request: PlacementRequest,
    kept: Sequence[SlotChoice],
    lost: Sequence[SlotChoice],
    server_agent_id: str | None,
    agents: Sequence[AgentCapacity],
) -> Placement | Waiting:
    """Place the next run of a job whose `lost` slots (and maybe its FL server) are gone.

    `agents` are the online agents still trusted, with the job's current slots counted free.
    `kept` slots stay where they are. A lost slot goes back to its own device when that agent
    is among `agents` and the device is free (a crashed process restarts in place), else where
    `place` puts a new worker. The FL server stays on `server_agent_id` (None: it was lost, or
    has no free ports) with two fresh ports, else goes where `place` would put it.
    """
    eligible = _eligible_agents(request, agents)
    by_id = {agent.agent_id: agent for agent in eligible}
    taken = {(choice.agent_id, choice.device_index) for choice in kept}
    in_place: list[SlotChoice] = []
    moving: list[int] = []
    for choice in lost:
        if _free_in_place(choice, by_id, taken, request.gpu):
            in_place.append(choice)
            taken.add((choice.agent_id, choice.device_index))
        else:
            moving.append(choice.slot)

    remaining = [
        replace(agent, busy_slots=agent.busy_slots | {i for a, i in taken if a == agent.agent_id})
        for agent in eligible
    ]
    moved: list[SlotChoice] = []
    if moving:
        decision = place(replace(request, shards=len(moving)), remaining)
        if isinstance(decision, Waiting):
            return decision
        moved = [
            replace(choice, slot=slot)
            for choice, slot in zip(decision.clients, moving, strict=True)
        ]
    clients = tuple(sorted([*kept, *in_place, *moved], key=lambda choice: choice.slot))

    kept_server = by_id.get(server_agent_id) if server_agent_id else None
    if kept_server is not None:
        ports = free_port_pair(kept_server.fl_port_range, kept_server.used_ports)
        if ports is not None:
            return Placement(request.job_id, clients, kept_server.agent_id, *ports)
    server = _server_agent(remaining, Counter(choice.agent_id for choice in clients))
    if server is None:
        return Waiting(request.job_id, "waiting for an agent with two free FL server ports")
    agent, (fed_learn_port, admin_port) = server
    return Placement(request.job_id, clients, agent.agent_id, fed_learn_port, admin_port)


def _free_in_place(
    choice: SlotChoice,
    agents: dict[str, AgentCapacity],
    taken: set[tuple[str, int]],
    gpu: GpuRequirements,
) -> bool:
    agent = agents.get(choice.agent_id)
    if agent is None or (choice.agent_id, choice.device_index) in taken:
        return False
    slot = next((s for s in agent.slots if s.index == choice.device_index), None)
    return (
        slot is not None
        and slot.index not in agent.busy_slots
        and _fits(slot, gpu, slot.free_memory_mb)
    )
