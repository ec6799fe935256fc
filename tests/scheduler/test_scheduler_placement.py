"""Placement rules: GPU preference, memory, pinned agents, spreading, FCFS without blocking."""

from rondo.contracts.events import Slot
from rondo.contracts.training import GpuRequirements
from rondo.scheduler.placement import (
    AgentCapacity,
    Placement,
    PlacementRequest,
    SlotChoice,
    Waiting,
    free_port_pair,
    place,
    place_replacement,
    plan,
)


def gpu(index: int, model: str, free_gb: int, total_gb: int = 24) -> Slot:
    return Slot(
        index=index,
        kind="gpu",
        model=model,
        total_memory_mb=total_gb * 1024,
        free_memory_mb=free_gb * 1024,
    )


def agent(agent_id: str, *slots: Slot, host: str | None = None, **kwargs: object) -> AgentCapacity:
    return AgentCapacity(
        agent_id=agent_id,
        host=host or f"{agent_id}.lan",
        slots=slots,
        fl_port_range=(9000, 9009),
        **kwargs,  # type: ignore[arg-type]
    )


def placed(decision: Placement | Waiting) -> Placement:
    assert isinstance(decision, Placement), decision
    return decision


def test_gpu_models_are_an_ordered_preference() -> None:
    agents = [
        agent("a", gpu(0, "rtx_4090", 20), gpu(1, "h100", 70, 80)),
        agent("b", gpu(0, "h100", 70, 80), gpu(1, "a100", 30, 40)),
    ]
    request = PlacementRequest("j", 3, GpuRequirements(gpu_models=["h100", "rtx_4090"]))
    decision = placed(place(request, agents))
    # both H100s first (spread over the two hosts), then the 4090; an A100 is never used
    assert [(c.agent_id, c.device_index) for c in decision.clients] == [
        ("a", 1),
        ("b", 0),
        ("a", 0),
    ]
    assert [c.device for c in decision.clients] == ["cuda:1", "cuda:0", "cuda:0"]
    too_many = PlacementRequest("j", 4, GpuRequirements(gpu_models=["H100", "RTX 4090"]))
    assert isinstance(place(too_many, agents), Waiting)


def test_memory_must_fit_in_free_memory() -> None:
    agents = [agent("a", gpu(0, "rtx_4090", 10)), agent("b", gpu(0, "rtx_4090", 23))]
    request = PlacementRequest("j", 1, GpuRequirements(estimated_memory_mb=20 * 1024))
    assert placed(place(request, agents)).clients[0].agent_id == "b"


def test_pinned_worker_ids() -> None:
    agents = [agent(name, gpu(0, "rtx_4090", 20), gpu(1, "rtx_4090", 20)) for name in "abc"]
    request = PlacementRequest("j", 2, GpuRequirements(worker_ids=["c"]))
    decision = placed(place(request, agents))
    assert {c.agent_id for c in decision.clients} == {"c"}
    assert decision.server_agent_id == "c"
    waiting = place(PlacementRequest("j", 3, GpuRequirements(worker_ids=["c"])), agents)
    assert isinstance(waiting, Waiting)
    assert waiting.reason == "waiting for 3 workers among c, 2 online"


def test_spreads_over_hosts_and_puts_the_server_with_a_client() -> None:
    agents = [
        agent("a", gpu(0, "x", 20), gpu(1, "x", 20)),
        agent("b", gpu(0, "x", 20), gpu(1, "x", 20)),
        agent("idle", host="idle.lan"),
    ]
    decision = placed(place(PlacementRequest("j", 2), agents))
    assert sorted(c.agent_id for c in decision.clients) == ["a", "b"]
    assert decision.server_agent_id in {"a", "b"}
    assert (decision.fed_learn_port, decision.admin_port) == (9000, 9001)
    assert [c.slot for c in decision.clients] == [0, 1]


def test_server_goes_to_the_least_loaded_agent_when_client_agents_have_no_ports() -> None:
    full = agent("a", gpu(0, "x", 20), used_ports=frozenset(range(9000, 9010)))
    busy = agent("b", gpu(0, "x", 20), busy_slots=frozenset({0}), server_roles=1)
    idle = agent("c")
    decision = placed(place(PlacementRequest("j", 1), [full, busy, idle]))
    assert decision.clients[0].agent_id == "a"
    assert decision.server_agent_id == "c"


def test_a_slot_serves_one_job_and_ports_are_not_reused() -> None:
    agents = [agent("a", gpu(0, "x", 20), busy_slots=frozenset({0}), used_ports=frozenset({9000}))]
    waiting = place(PlacementRequest("j", 1), agents)
    assert isinstance(waiting, Waiting)
    assert waiting.reason == "waiting for 1 worker, 1 online, 1 busy"
    assert free_port_pair((9000, 9003), frozenset({9000, 9002})) == (9001, 9003)
    assert free_port_pair((9000, 9001), frozenset({9000})) is None


def test_fcfs_but_a_waiting_job_never_blocks_a_later_one_that_fits() -> None:
    agents = [agent("a", gpu(0, "x", 20), gpu(1, "x", 20)), agent("b", gpu(0, "x", 20))]
    requests = [
        PlacementRequest("first", 2),
        PlacementRequest("big", 3, GpuRequirements(estimated_memory_mb=24 * 1024)),
        PlacementRequest("small", 1),
        PlacementRequest("late", 1),
    ]
    first, big, small, late = plan(requests, agents)
    assert isinstance(first, Placement)
    assert isinstance(big, Waiting)
    assert big.reason == "waiting for 3 workers with >= 24 GB, 3 online, 2 busy"
    assert isinstance(small, Placement)
    taken = {(c.agent_id, c.device_index) for c in first.clients + small.clients}
    assert len(taken) == 3  # no slot given twice
    assert (small.fed_learn_port, small.admin_port) != (first.fed_learn_port, first.admin_port)
    assert isinstance(late, Waiting)
    assert late.reason == "waiting for 1 worker, 3 online, 3 busy"


def test_waiting_reason_when_nothing_is_online() -> None:
    request = PlacementRequest(
        "j", 2, GpuRequirements(gpu_models=["h100"], estimated_memory_mb=40000)
    )
    waiting = place(request, [])
    assert isinstance(waiting, Waiting)
    assert waiting.reason == "waiting for 2 workers (h100) with >= 39.1 GB, 0 online"


def test_replacement_restarts_in_place_or_moves_and_keeps_the_server() -> None:
    agents = [agent(name, gpu(0, "x", 20), gpu(1, "x", 20)) for name in "ab"]
    kept = [SlotChoice(0, "a", 0, "cuda:0")]
    crashed = SlotChoice(1, "b", 1, "cuda:1")
    request = PlacementRequest("j", 2)
    # the crashed slot's own GPU is free: it restarts there; the server keeps its agent
    again = placed(place_replacement(request, kept, [crashed], "a", agents))
    assert again.clients == (kept[0], crashed)
    assert (again.server_agent_id, again.fed_learn_port) == ("a", 9000)
    # agent b is gone: the slot moves to a's other GPU; the server gets fresh ports
    used = agent("a", gpu(0, "x", 20), gpu(1, "x", 20), used_ports=frozenset({9000, 9001}))
    moved = placed(place_replacement(request, kept, [crashed], "a", [used]))
    assert moved.clients[1] == SlotChoice(1, "a", 1, "cuda:1")
    assert (moved.fed_learn_port, moved.admin_port) == (9002, 9003)
    # the server's agent is gone too: it goes to an agent running a client
    lost_server = placed(place_replacement(request, kept, [crashed], None, agents))
    assert lost_server.server_agent_id in {"a", "b"}
    only_a = agent("a", gpu(0, "x", 20))
    waiting = place_replacement(request, kept, [crashed], "a", [only_a])
    assert isinstance(waiting, Waiting)
    assert waiting.reason == "waiting for 1 worker, 1 online, 1 busy"
