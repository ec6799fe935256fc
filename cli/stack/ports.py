"""Free loopback ports, including SeaweedFS's rule that every port P also binds P+10000."""

import socket

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


def free_port_range(size: int, host: str = "127.0.0.1", start: int = 20000) -> tuple[int, int]:
    """A run of `size` consecutive free ports (for an agent's FL server ports)."""
    port = start
    while port + size < 30000:
        if all(port_is_free(p, host) for p in range(port, port + size)):
            return port, port + size - 1
        port += size
    raise RuntimeError(f"no {size} consecutive free ports between {start} and 30000")
