"""Several "hosts" on one machine: network namespaces joined by veth pairs to a bridge.

The root namespace owns the bridge's address (servers that every host reaches listen there);
each host is a namespace with its own address on the same /24, so hosts reach each other and
the root directly, without routing or forwarding. Only addresses inside 10.231.0.0/16 are
used, and only on these interfaces: nothing is routed anywhere else. Needs root (CI is).
"""

import secrets
import subprocess
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass

SUBNET_PREFIX = "10.231"


class NetnsError(RuntimeError):
    """An `ip` command failed; the message has its output."""


@dataclass(frozen=True)
class Host:
    namespace: str
    address: str

    def command(self, argv: Sequence[str]) -> list[str]:
        """`argv` run inside this host's namespace."""
        return ["ip", "netns", "exec", self.namespace, *argv]


@dataclass(frozen=True)
class HostNetwork:
    root_address: str  # the root namespace's address on the bridge
    hosts: list[Host]


def ip(*args: str) -> str:
    result = subprocess.run(["ip", *args], capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise NetnsError(f"`ip {' '.join(args)}` failed: {result.stderr.strip()}")
    return result.stdout


def namespace_of(pid: int) -> str:
    """The named namespace process `pid` lives in ('' for the root namespace)."""
    return ip("netns", "identify", str(pid)).strip()


@contextmanager
def host_network(count: int) -> Iterator[HostNetwork]:
    """`count` hosts on a fresh bridge; everything is deleted again when the block ends.
    Raises NetnsError (saying why) where namespaces cannot be made."""
    tag = secrets.token_hex(2)
    subnet = _unused_subnet()
    bridge = f"rb{tag}"
    with ExitStack() as cleanup:
        ip("link", "add", bridge, "type", "bridge")
        cleanup.callback(ip, "link", "del", bridge)
        ip("addr", "add", f"{subnet}.1/24", "dev", bridge)
        ip("link", "set", bridge, "up")
        hosts = []
        for index in range(count):
            host = Host(namespace=f"rondo-{tag}-{index}", address=f"{subnet}.{index + 2}")
            outside, inside = f"rh{tag}{index}", f"rn{tag}{index}"
            ip("netns", "add", host.namespace)
            cleanup.callback(ip, "netns", "del", host.namespace)
            ip("link", "add", outside, "type", "veth", "peer", "name", inside)
            ip("link", "set", outside, "master", bridge)
            ip("link", "set", outside, "up")
            ip("link", "set", inside, "netns", host.namespace)
            ip("-n", host.namespace, "addr", "add", f"{host.address}/24", "dev", inside)
            ip("-n", host.namespace, "link", "set", inside, "up")
            ip("-n", host.namespace, "link", "set", "lo", "up")
            hosts.append(host)
        yield HostNetwork(root_address=f"{subnet}.1", hosts=hosts)


def _unused_subnet() -> str:
    """A 10.231.N /24 that no interface of this machine uses yet."""
    in_use = ip("-o", "-4", "addr", "show")
    for _ in range(100):
        subnet = f"{SUBNET_PREFIX}.{secrets.randbelow(254) + 1}"
        if f" {subnet}." not in in_use:
            return subnet
    raise NetnsError(f"no free /24 left in {SUBNET_PREFIX}.0.0/16")
