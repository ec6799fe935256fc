"""A hostile job: a valid tiny model whose import (server and clients) and training try to
reach what is not theirs. Each attempt's outcome is recorded, never the content read:

- the server prints `SANDBOX_ATTEMPTS <json>` into its log (files_out/server.log);
- each client writes `attempts.json` into its out_dir (files_out/client_<n>/round_0/).

An outcome is "refused: <error>" or "allowed: <what happened>". `payload.env` may name more
paths to try (`extra.other_run_file`: a file of another job's run folder on this host).
"""

import json
import os
import sys
import sysconfig
import uuid
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

MARKER = "SANDBOX_ATTEMPTS"
PLATFORM_VARIABLE_PREFIXES = ("RONDO_S3_", "RONDO_NATS_", "RONDO_GATEWAY_", "AWS_")
PLATFORM_VARIABLES = ("RONDO_DATA_DIR", "RONDO_STACK_ID", "RONDO_PLATFORM_BUCKET")


class TinyNet(nn.Module):
    def __init__(self, in_features: int = 4) -> None:
        super().__init__()
        self.fc = nn.Linear(in_features, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x)


def _try(action: Callable[[], str]) -> str:
    try:
        return "allowed: " + action()
    except Exception as error:  # what the sandbox answers: PermissionError, mostly
        return f"refused: {type(error).__name__}: {error}"[:300]


def _read(path: Path) -> Callable[[], str]:
    return lambda: f"read {len(path.read_bytes())} bytes of {path}"


def _list(path: Path) -> Callable[[], str]:
    return lambda: f"listed {len(os.listdir(path))} entries of {path}"


def _write_into(folder: Path) -> Callable[[], str]:
    def write() -> str:
        probe = folder / f"sandbox-probe-{uuid.uuid4().hex}.pth"
        probe.write_text("import os\n")
        probe.unlink()
        return f"wrote and removed {probe}"

    return write


def _environ_of(pid: int) -> Callable[[], str]:
    def read() -> str:
        data = Path(f"/proc/{pid}/environ").read_bytes()
        return f"read {len(data)} bytes of pid {pid}'s environ"

    return read


def _signal(pid: int) -> Callable[[], str]:
    def send() -> str:
        os.kill(pid, 0)
        return f"may signal pid {pid}"

    return send


def _base_site_packages() -> Path:
    """The agent's own site-packages (torch, nvflare, rondo), outside the job's env."""
    for entry in sys.path:
        if entry.endswith("site-packages") and not entry.startswith(sys.prefix):
            return Path(entry)
    return Path(sysconfig.get_paths()["purelib"])


def _own_environ() -> str:
    leaked = sorted(
        name
        for name in os.environ
        if name.startswith(PLATFORM_VARIABLE_PREFIXES) or name in PLATFORM_VARIABLES
    )
    if leaked:
        return "platform variables present: " + ", ".join(leaked)
    raise PermissionError("no platform variable in the environment")


def _platform_processes() -> dict[str, int]:
    """Name -> pid of the stack's services and servers (command lines are world-readable)."""
    found: dict[str, int] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        for name in ("rondo.gateway", "rondo.worker_agent", "rondo.scheduler", "nats-server"):
            if name in command and "-c" not in command.split():
                found.setdefault(name, int(entry.name))
    return found


def _process_folder() -> tuple[str, Path] | None:
    """This process's role and folder (<work_root>/runs/<job>/<run>/<server|client_n>)."""
    if os.environ.get("RONDO_OUT_SPOOL"):
        return "client", Path(os.environ["RONDO_OUT_SPOOL"]).parent
    if os.environ.get("RONDO_SPOOL_DIR"):
        return "server", Path(os.environ["RONDO_SPOOL_DIR"]).parent
    return None


def attempts(extra: dict | None = None) -> dict[str, str]:
    where = _process_folder()
    found: dict[str, str] = {"uid": str(os.getuid())}
    if where is None:  # a job process without the agent's variables: nothing to aim at
        return found
    role, process_folder = where
    run_folder = process_folder.parent
    work_root = run_folder.parents[2]
    data_dir = work_root.parents[1]
    checks: dict[str, Callable[[], str]] = {
        "own environ has platform variables": _own_environ,
        "read stack.json": _read(data_dir / "stack.json"),
        "read s3.json": _read(data_dir / "s3.json"),
        "read the secrets key file": _read(data_dir / "gateway-secrets.key"),
        "read db/gateway.db": _read(data_dir / "db" / "gateway.db"),
        "list the data dir": _list(data_dir),
        "list this agent's runs": _list(work_root / "runs"),
        "write into the requirements env cache": _write_into(work_root / "envs"),
        "write into the interpreter's site-packages": _write_into(
            Path(sysconfig.get_paths()["purelib"])
        ),
        "write into the job env (sys.prefix)": _write_into(Path(sys.prefix)),
        "write into the agent's site-packages": _write_into(_base_site_packages()),
        "write into the interpreter's stdlib": _write_into(Path(json.__file__).parent),
    }
    for name, pid in _platform_processes().items():
        checks[f"read {name}'s /proc environ"] = _environ_of(pid)
        checks[f"signal {name}"] = _signal(pid)
    if role == "client":
        checks["list the server's folder"] = _list(run_folder / "server")
        checks["read the server's kit"] = _read(
            run_folder / "server" / "kit" / "startup" / "fed_server.json"
        )
        checks["read the server's admin kit"] = _read(
            run_folder / "server" / "admin_kit" / "startup" / "fed_admin.json"
        )
    else:
        checks["list client_0's folder"] = _list(run_folder / "client_0")
        checks["list client_0's shard"] = _list(run_folder / "client_0" / "data")
        checks["read client_0's kit"] = _read(
            run_folder / "client_0" / "kit" / "startup" / "fed_client.json"
        )
    other = (extra or {}).get("other_run_file")
    if other:
        checks["read another job's run folder"] = _read(Path(other))
    found["role"] = role
    found.update({name: _try(check) for name, check in checks.items()})
    return found


# At import: on the FL server (and on every client).
_AT_IMPORT = attempts()
if _AT_IMPORT.get("role") == "server":
    print(MARKER, json.dumps(_AT_IMPORT), flush=True)


def fl_train_model(payload, out_dir, logger=None):
    env = payload["env"]
    found = {"at_import": _AT_IMPORT, "in_training": attempts(env)}
    (Path(out_dir) / "attempts.json").write_text(json.dumps(found, indent=2))
    data_root = Path(payload["dataset"]["data_root"])
    samples = sum(len(f.read_text().splitlines()) for f in sorted(data_root.glob("*.csv")))
    weights = {k: torch.full_like(v, 1.0) for k, v in TinyNet().state_dict().items()}
    return {"state_dict": weights, "num_samples": max(samples, 1), "metrics": {"loss": 1.0}}
