"""The local stack's persisted state: secrets stay private, ports are reused or replaced."""

import socket
import stat
from itertools import pairwise
from pathlib import Path

from rondo.stack.ports import GRPC_OFFSET, keep_or_replace, port_is_free
from rondo.stack.state import load_state, new_state, save_state


def test_state_round_trips_privately(tmp_path: Path) -> None:
    state = new_state(tmp_path / "data", workers=2)
    save_state(state)
    path = tmp_path / "data" / "stack.json"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert load_state(tmp_path / "data") == state
    assert state.s3_user is None  # minted by the gateway when the default user is made
    assert state.s3_admin.buckets is None


def test_reallocation_keeps_free_ports_and_replaces_taken_ones(tmp_path: Path) -> None:
    state = new_state(tmp_path, workers=2)
    with socket.socket() as squatter:
        squatter.bind((state.host, state.ports.gateway))
        squatter.listen()
        moved = state.reallocated(workers=3)
    assert moved.ports.gateway != state.ports.gateway
    assert (moved.ports.nats, moved.ports.seaweed) == (state.ports.nats, state.ports.seaweed)
    assert moved.agents[:2] == state.agents
    assert [agent.agent_id for agent in moved.agents] == ["local-0", "local-1", "local-2"]
    ranges = sorted(agent.fl_ports for agent in moved.agents)
    assert all(high - low + 1 == 20 for low, high in ranges)
    assert all(later[0] > earlier[1] for earlier, later in pairwise(ranges))
    assert state.reallocated(workers=1).agents == state.agents[:1]


def test_keep_or_replace_respects_the_grpc_twin() -> None:
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        taken_twin = squatter.getsockname()[1] - GRPC_OFFSET
        assert taken_twin > 0 and port_is_free(taken_twin)
        (replacement,) = keep_or_replace([taken_twin], with_grpc_twin=True)
    assert replacement != taken_twin
    assert port_is_free(replacement) and port_is_free(replacement + GRPC_OFFSET)
