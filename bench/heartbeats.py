"""The scheduler under a large fleet: N simulated worker-agents heartbeating on a real NATS.

    .venv/bin/python bench/heartbeats.py [--agents 5000] [--rate 1] [--duration 45]

Starts a real nats-server and the real scheduler (`python -m rondo.scheduler`, pinned to one
core), then publishes every agent's heartbeat `--rate` times a second from another process,
spread evenly, for `--duration` seconds. All agents join in the first second, as they do when
a scheduler restarts with a known fleet.

Lag: every `--probe-every` seconds a new probe agent sends its first heartbeat; the scheduler
logs "worker <id> ... joined" as its registry takes it in (a join is also the heavier path of
a heartbeat: the registry writes the worker to the database and wakes placement). The bench
tails the scheduler's log and measures publish -> registry update for each probe. The worker
panel of a job is derived from the registry on the reconciler's next tick (woken at once when
a worker returns), so this lag is what the panel waits for on top of that tick.

Prints the scheduler's CPU (% of one core) and the lag percentiles, for the whole run and for
the steady part after `--warmup` seconds, plus what NATS saw (slow consumers).
"""

import argparse
import asyncio
import contextlib
import json
import multiprocessing
import os
import re
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import nats
import psutil
from measure import cpu_seconds, percentile

from rondo.stack.processes import kill_tree, spawn
from rondo.stack.servers import NatsServer

SCHEDULER_CORE = 0
# The machine may run other work: the scheduler gets its core first (root only, else as is).
# It runs in its own session, hence its own autogroup: the group's niceness is what counts.
SCHEDULER_NICE = -10
LOAD_CORES = 1  # publisher, nats-server and this process
JOINED = re.compile(rb"worker ((?:probe|agent)-\d+) \(")
LOG_POLL_S = 0.005
PROBE_TIMEOUT_S = 30.0
FLUSH_EVERY = 200  # publishes between flushes: the client's outbound buffer is bounded


def heartbeat(agent_id: str, started_at: str, free_memory_mb: int = 81000) -> bytes:
    """One WorkerHeartbeat as an agent sends it: a one-GPU host, nothing running."""
    event = {
        "event_id": uuid.uuid4().hex,
        "occurred_at": datetime.now(UTC).isoformat(),
        "schema_version": 1,
        "agent_id": agent_id,
        "host": "10.0.0.1",
        "slots": [
            {
                "index": 0,
                "kind": "gpu",
                "model": "h100",
                "total_memory_mb": 81559,
                "free_memory_mb": free_memory_mb,
            }
        ],
        "fl_port_range": [20000, 20019],
        "running": [],
        "started_at": started_at,
    }
    return json.dumps(event).encode()


HEADERS = {"content-type": "application/json"}


def subject(agent_id: str) -> str:
    return f"rondo.worker.heartbeat.{agent_id}"


# --- the fleet (its own process) -----------------------------------------------------------


def run_fleet(
    nats_url: str, agents: int, rate_hz: float, duration_s: float, sent: "multiprocessing.Value"
) -> None:  # type: ignore[type-arg]
    """Publish `agents` heartbeats `rate_hz` times a second each, evenly spread."""
    os.sched_setaffinity(0, {LOAD_CORES})
    asyncio.run(_publish_fleet(nats_url, agents, rate_hz, duration_s, sent))


async def _publish_fleet(
    nats_url: str,
    agents: int,
    rate_hz: float,
    duration_s: float,
    sent: "multiprocessing.Value",  # type: ignore[type-arg]
) -> None:
    connection = await nats.connect(nats_url)
    started_at = datetime.now(UTC).isoformat()
    ids = [f"agent-{index:05d}" for index in range(agents)]
    per_second = agents * rate_hz
    start = time.monotonic()
    count = 0
    while (elapsed := time.monotonic() - start) < duration_s:
        due = int(elapsed * per_second)
        while count < due:
            agent_id = ids[count % agents]
            # Agents report their slots' free memory as read at each beat: it moves.
            free_memory_mb = 81000 - (count * 7919) % 4096
            await connection.publish(
                subject(agent_id), heartbeat(agent_id, started_at, free_memory_mb), headers=HEADERS
            )
            count += 1
            if count % FLUSH_EVERY == 0:
                await connection.flush()
        sent.value = count
        await asyncio.sleep(0.005)
    await connection.flush()
    await connection.close()


# --- probes and the scheduler's log ----------------------------------------------------------


@dataclass
class LogWatcher:
    """Notes when each agent's "joined" line appears in the scheduler's log."""

    path: Path
    seen: dict[str, float] = field(default_factory=dict)
    fleet_joined: int = 0
    last_fleet_join: float = 0.0
    _offset: int = 0

    async def run(self) -> None:
        buffer = b""
        while True:
            with self.path.open("rb") as log:
                log.seek(self._offset)
                chunk = log.read()
            self._offset += len(chunk)
            now = time.monotonic()
            buffer += chunk
            *lines, buffer = buffer.split(b"\n")
            for line in lines:
                match = JOINED.search(line)
                if match is None:
                    continue
                agent_id = match[1].decode()
                if agent_id.startswith("agent-"):
                    self.fleet_joined += 1
                    self.last_fleet_join = now
                else:
                    self.seen.setdefault(agent_id, now)
            await asyncio.sleep(LOG_POLL_S)


@dataclass(frozen=True)
class Probe:
    sent_at: float
    lag_s: float | None  # None: not seen within PROBE_TIMEOUT_S


async def probe_loop(
    nats_url: str, watcher: LogWatcher, every_s: float, until: float
) -> list[Probe]:
    """One new agent's first heartbeat every `every_s`, each waited for in the log."""
    connection = await nats.connect(nats_url)
    started_at = datetime.now(UTC).isoformat()
    probes: list[Probe] = []
    index = 0
    while time.monotonic() < until:
        agent_id = f"probe-{index}"
        index += 1
        await connection.publish(
            subject(agent_id), heartbeat(agent_id, started_at), headers=HEADERS
        )
        await connection.flush()
        sent_at = time.monotonic()
        deadline = sent_at + PROBE_TIMEOUT_S
        while agent_id not in watcher.seen and time.monotonic() < deadline:
            await asyncio.sleep(LOG_POLL_S)
        seen = watcher.seen.get(agent_id)
        probes.append(Probe(sent_at, seen - sent_at if seen is not None else None))
        await asyncio.sleep(max(0.0, sent_at + every_s - time.monotonic()))
    await connection.close()
    return probes


# --- the run ---------------------------------------------------------------------------------


def start_scheduler(work: Path, nats_url: str) -> psutil.Process:
    data_dir = work / "scheduler"
    env = {
        **os.environ,
        "RONDO_NATS_URL": nats_url,
        "RONDO_DATA_DIR": str(data_dir),
        "RONDO_SCHEDULER_DATABASE_URL": f"sqlite:///{data_dir / 'scheduler.db'}",
        "RONDO_S3_ENDPOINT": "http://127.0.0.1:9",  # never reached: nothing is dispatched
        "RONDO_S3_ACCESS_KEY": "unused",
        "RONDO_S3_SECRET_KEY": "unused",
    }
    process = spawn(
        [sys.executable, "-m", "rondo.scheduler"], work / "scheduler.console.log", env=env
    )
    scheduler = psutil.Process(process.pid)
    scheduler.cpu_affinity([SCHEDULER_CORE])
    with contextlib.suppress(psutil.AccessDenied, OSError):
        scheduler.nice(SCHEDULER_NICE)
        Path(f"/proc/{process.pid}/autogroup").write_text(str(SCHEDULER_NICE))
    return scheduler


async def wait_healthy(nats_url: str, timeout_s: float = 60) -> None:
    connection = await nats.connect(nats_url)
    deadline = time.monotonic() + timeout_s
    try:
        while True:
            try:
                await connection.request("rondo.health.scheduler", b"", timeout=1)
                return
            except (nats.errors.NoRespondersError, nats.errors.TimeoutError):
                if time.monotonic() > deadline:
                    raise TimeoutError("the scheduler did not answer its health check") from None
                await asyncio.sleep(0.2)
    finally:
        await connection.close()


def summarize(label: str, probes: list[Probe]) -> str:
    lags = [p.lag_s for p in probes if p.lag_s is not None]
    lost = len(probes) - len(lags)
    if not lags:
        return f"{label:<24}{len(probes):>7}   none seen"
    return (
        f"{label:<24}{len(probes):>7}{percentile(lags, 0.5) * 1000:>9.0f}"
        f"{percentile(lags, 0.99) * 1000:>9.0f}{max(lags) * 1000:>9.0f}"
        f"{'' if not lost else f'   ({lost} not seen in {PROBE_TIMEOUT_S:.0f} s)'}"
    )


async def bench(args: argparse.Namespace, work: Path) -> None:
    os.sched_setaffinity(0, {LOAD_CORES})
    nats_server = NatsServer(store_dir=work / "nats")
    nats_server.start(work / "nats.log")
    scheduler = None
    try:
        psutil.Process(nats_server.process.pid).cpu_affinity([LOAD_CORES])  # type: ignore[union-attr]
        scheduler = start_scheduler(work, nats_server.url)
        await wait_healthy(nats_server.url)
        watcher = LogWatcher(work / "scheduler" / "logs" / "scheduler.log")
        watch = asyncio.create_task(watcher.run())

        sent = multiprocessing.get_context("spawn").Value("q", 0)
        fleet = multiprocessing.get_context("spawn").Process(
            target=run_fleet,
            args=(nats_server.url, args.agents, args.rate, args.duration, sent),
        )
        cpu = {"start": cpu_seconds([scheduler])}
        start = time.monotonic()
        fleet.start()

        async def note_cpu_after_warmup() -> None:
            await asyncio.sleep(args.warmup)
            cpu["warm"] = cpu_seconds([scheduler])

        warm = asyncio.create_task(note_cpu_after_warmup())
        probes = await probe_loop(nats_server.url, watcher, args.probe_every, start + args.duration)
        await warm
        elapsed = time.monotonic() - start
        cpu["end"] = cpu_seconds([scheduler])
        fleet.join()
        watch.cancel()
        varz = nats_server.monitor("/varz") or {}
    finally:
        if scheduler is not None:
            kill_tree(scheduler.pid)
        nats_server.stop()

    steady = [p for p in probes if p.sent_at - start >= args.warmup]
    print(
        f"\n{args.agents} agents x {args.rate:g} Hz = {args.agents * args.rate:.0f} heartbeats/s "
        f"for {args.duration:.0f} s ({sent.value} sent); scheduler pinned to one core"
    )
    whole = 100 * (cpu["end"] - cpu["start"]) / elapsed
    after = 100 * (cpu["end"] - cpu["warm"]) / (elapsed - args.warmup)
    print(
        f"scheduler CPU (% of one core): {whole:.0f}% over the run, "
        f"{after:.0f}% after the first {args.warmup:.0f} s"
    )
    absorbed = watcher.last_fleet_join - start
    print(
        f"fleet joins taken in: {watcher.fleet_joined} of {args.agents}, "
        f"the last at {absorbed:.1f} s"
    )
    print(f"NATS slow consumers: {varz.get('slow_consumers', '?')}")
    print(f"\nheartbeat -> registry update{'':<4}probes   p50 ms   p99 ms   max ms")
    print(summarize("whole run", probes))
    print(summarize(f"after {args.warmup:.0f} s", steady))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--agents", type=int, default=5000)
    parser.add_argument("--rate", type=float, default=1.0, help="heartbeats per agent per second")
    parser.add_argument("--duration", type=float, default=45.0, help="seconds of heartbeats")
    parser.add_argument("--warmup", type=float, default=10.0, help="seconds left out of 'steady'")
    parser.add_argument("--probe-every", type=float, default=0.25, help="seconds between probes")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="rondo-heartbeats-") as work:
        asyncio.run(bench(args, Path(work)))


if __name__ == "__main__":
    main()
