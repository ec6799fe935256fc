"""Free loopback ports, including SeaweedFS's rule that every port P also binds P+10000."""

import random
import socket
from collections.abc import Iterable, Sequence

GRPC_OFFSET = 10_000


def port_is_free(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
        return True


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def free_ports(count: int, host: str = "127.0.0.1", with_grpc_twin: bool = False) -> list[int]:
    """`count` distinct free ports; with `with_grpc_twin`, each P+10000 is free too."""
    chosen: list[int] = []
    while len(chosen) < count:
        port = free_port(host)
        if port in chosen:
            continue
        if with_grpc_twin:
            twin = port + GRPC_OFFSET
            if twin > 65535 or not port_is_free(twin, host) or twin in chosen:
                continue
        chosen.append(port)
    return chosen


FL_PORTS_LOW, FL_PORTS_HIGH = 20000, 30000


def free_port_range(
    size: int,
    host: str = "127.0.0.1",
    avoid: Iterable[tuple[int, int]] = (),
) -> tuple[int, int]:
    """A run of `size` consecutive free ports between 20000 and 30000 (an agent's FL ports).

    `avoid` lists inclusive ranges already lent to someone else (free now, but not ours). The
    search starts at a random block: FL ports are bound only while a job runs, so two stacks
    on one host scanning from the same start would be handed the same idle range.
    """
    taken = list(avoid)
    blocks = list(range(FL_PORTS_LOW, FL_PORTS_HIGH - size, size))
    first = random.randrange(len(blocks))
    for port in blocks[first:] + blocks[:first]:
        last = port + size - 1
        overlaps = any(port <= high and low <= last for low, high in taken)
        if not overlaps and range_is_free(port, last, host):
            return port, last
    raise RuntimeError(f"no {size} consecutive free ports between 20000 and 30000")


def range_is_free(low: int, high: int, host: str = "127.0.0.1") -> bool:
    return all(port_is_free(port, host) for port in range(low, high + 1))


def keep_or_replace(
    ports: Sequence[int], host: str = "127.0.0.1", with_grpc_twin: bool = False
) -> list[int]:
    """The same ports where still free; a fresh free port in place of each one that is taken.

    With `with_grpc_twin`, a port is kept only when P+10000 is free too (SeaweedFS). The result
    has no duplicates (nor, with twins, a port that is another one's twin).
    """
    kept: list[int] = []

    def usable(port: int) -> bool:
        if port <= 0 or port in kept or not port_is_free(port, host):
            return False
        if not with_grpc_twin:
            return True
        twin = port + GRPC_OFFSET
        clashes = twin in kept or port - GRPC_OFFSET in kept
        return twin <= 65535 and not clashes and port_is_free(twin, host)

    for port in ports:
        while not usable(port):
            port = free_ports(1, host, with_grpc_twin)[0]
        kept.append(port)
    return kept
