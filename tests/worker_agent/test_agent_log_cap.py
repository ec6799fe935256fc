"""The per-job log cap: a process that prints without end gets its first lines published up to
the cap, then ONE marker line saying how many were dropped; nothing floods the log stream."""

import asyncio
import re
import subprocess
import sys
from pathlib import Path

import pytest

from rondo.contracts.events import Event, LogBatch, LogSource
from rondo.worker_agent.log_tail import LogTailer

FLOOD = "import itertools\nfor i in itertools.count():\n    print(f'line {i} ' + 'x' * 80)\n"


def _tailer(log: Path, published: list[Event], **caps: int) -> LogTailer:
    async def publish(event: Event) -> None:
        published.append(event)

    return LogTailer(
        agent_id="agent-1",
        job_id="j",
        run_id="r",
        source=LogSource(role="client", slot=0),
        paths=[log],
        publish=publish,
        interval_s=0.05,
        **caps,
    )


def _lines(published: list[Event]) -> list[str]:
    return [line for event in published if isinstance(event, LogBatch) for line in event.lines]


@pytest.mark.timeout(60)
async def test_a_process_printing_without_end_is_capped_with_one_marker(tmp_path: Path) -> None:
    log = tmp_path / "process.log"
    published: list[Event] = []
    tailer = _tailer(log, published, max_lines=2000)
    with log.open("wb") as out:
        process = subprocess.Popen([sys.executable, "-c", FLOOD], stdout=out)
    task = asyncio.create_task(tailer.run())
    try:
        while log.stat().st_size < 5_000_000:  # well past the cap, still growing
            await asyncio.sleep(0.1)
    finally:
        process.kill()
        process.wait()
        task.cancel()
    await tailer.flush(final=True)

    lines = _lines(published)
    assert lines[:2000] == [f"line {i} " + "x" * 80 for i in range(2000)]
    assert len(lines) == 2001, "the cap was not applied"
    marker = re.fullmatch(r"\[rondo\] (\d+) more line\(s\) of this log were dropped: .*", lines[-1])
    assert marker, lines[-1]
    written = len(log.read_text().splitlines())  # a last partial line is read at the end too
    assert int(marker.group(1)) == tailer.dropped_lines == written - 2000
    await tailer.flush(final=True)
    assert len(_lines(published)) == 2001, "one marker only"


async def test_the_byte_cap_applies_too(tmp_path: Path) -> None:
    log = tmp_path / "process.log"
    log.write_text("".join(f"{i:09d}\n" for i in range(100)))  # 10 bytes a line
    published: list[Event] = []
    tailer = _tailer(log, published, max_bytes=250)
    await tailer.flush(final=True)
    lines = _lines(published)
    assert lines[:-1] == [f"{i:09d}" for i in range(25)]
    assert lines[-1].startswith("[rondo] 75 more line(s)")
