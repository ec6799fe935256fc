"""What the benchmarks read from the runs: round times from logs, CPU and memory of processes,
and summary statistics.

Round timing is read the same way for every way of running the job, from NVFlare's own log
lines: the server's `Round <r> finished.` (ScatterAndGather) and the training function's
`RONDO_BENCH_TIMING round=<r> site=<s> train_s=<t>` print, both with their log timestamps.
"""

import contextlib
import math
import re
import statistics
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime

import psutil

LOG_TIME = r"(?P<time>\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3})"
ROUND_FINISHED = re.compile(LOG_TIME + r" .*Round (?P<round>\d+) finished\.")
TRAINING = re.compile(r"RONDO_BENCH_TIMING round=(?P<round>\d+) site=\S+ train_s=(?P<train>[\d.]+)")


@dataclass(frozen=True)
class RoundStats:
    """Per-round means over the steady rounds (round 0 pays the job's start and is left out).

    A round's wall time is the time between the server finishing the previous round and
    finishing this one; its training time is the slowest site's `fl_train_model` call."""

    rounds: int
    wall_s: float
    train_s: float

    @property
    def overhead_s(self) -> float:
        return self.wall_s - self.train_s


def round_stats(server_log: str, client_logs: str) -> RoundStats:
    finished: dict[int, datetime] = {}
    for match in ROUND_FINISHED.finditer(server_log):
        stamp = datetime.strptime(match["time"], "%Y-%m-%d %H:%M:%S,%f")
        finished.setdefault(int(match["round"]), stamp)
    training: dict[int, float] = {}
    for match in TRAINING.finditer(client_logs):
        round_ = int(match["round"])
        training[round_] = max(training.get(round_, 0.0), float(match["train"]))
    steady = [r for r in sorted(finished) if r - 1 in finished and r in training]
    if not steady:
        raise ValueError(
            f"no steady rounds in the logs: finished {sorted(finished)}, trained {sorted(training)}"
        )
    walls = [(finished[r] - finished[r - 1]).total_seconds() for r in steady]
    return RoundStats(
        rounds=len(steady),
        wall_s=statistics.fmean(walls),
        train_s=statistics.fmean(training[r] for r in steady),
    )


def percentile(values: list[float], fraction: float) -> float:
    """The nearest-rank percentile of `values` (not empty): p99 of 100 values is the 99th."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(fraction * len(ordered)) - 1)]


# --- processes --------------------------------------------------------------------------------


def cpu_seconds(processes: Iterable[psutil.Process]) -> float:
    """User + system CPU time of the processes (those that ended count as zero)."""
    total = 0.0
    for proc in processes:
        with contextlib.suppress(psutil.Error):
            times = proc.cpu_times()
            total += times.user + times.system
    return total


def cpu_percent(groups: dict[str, list[psutil.Process]], window_s: float) -> dict[str, float]:
    """Percent of one core each group of processes used over the next `window_s` seconds."""
    before = {name: cpu_seconds(procs) for name, procs in groups.items()}
    started = time.monotonic()
    time.sleep(window_s)
    elapsed = time.monotonic() - started
    return {
        name: 100.0 * (cpu_seconds(procs) - before[name]) / elapsed
        for name, procs in groups.items()
    }


@dataclass
class RssSampler:
    """Samples the summed RSS of `processes()` every `interval_s` in a thread; keeps the peak
    (with its parts, named by `label(process)`)."""

    processes: Callable[[], list[psutil.Process]]
    label: Callable[[psutil.Process], str]
    interval_s: float = 0.5
    peak_bytes: int = 0
    peak_parts: dict[str, int] = field(default_factory=dict)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def __enter__(self) -> "RssSampler":
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            parts: dict[str, int] = {}
            for proc in self.processes():
                with contextlib.suppress(psutil.Error):
                    name = self.label(proc)
                    parts[name] = parts.get(name, 0) + proc.memory_info().rss
            total = sum(parts.values())
            if total > self.peak_bytes:
                self.peak_bytes, self.peak_parts = total, parts
