"""Log tailing: lines numbered per source across batches, partial lines held back."""

from pathlib import Path

from rondo.contracts.events import Event, LogBatch, LogSource
from rondo.worker_agent.log_tail import LogTailer


async def test_lines_are_published_in_numbered_batches(tmp_path: Path) -> None:
    published: list[Event] = []
    seen: list[str] = []

    async def publish(event: Event) -> None:
        published.append(event)

    log = tmp_path / "process.log"
    tailer = LogTailer(
        agent_id="agent-1",
        job_id="j",
        run_id="r",
        source=LogSource(role="client", slot=2),
        paths=[log, tmp_path / "*" / "log.txt"],
        publish=publish,
        on_line=seen.append,
    )
    await tailer.flush()  # nothing there yet
    log.write_text("one\ntwo\nthr")
    await tailer.flush()
    with log.open("a") as out:
        out.write("ee\n\x1b[32mfour\x1b[0m\nlast without newline")
    await tailer.flush()
    await tailer.flush(final=True)

    batches = [e for e in published if isinstance(e, LogBatch)]
    assert [(b.first_line, b.lines) for b in batches] == [
        (0, ["one", "two"]),
        (2, ["three", "four"]),
        (4, ["last without newline"]),
    ]
    assert {b.subject for b in batches} == {"rondo.logs.agent-1.j"}
    assert batches[0].source.file_name == "client_2.log"
    assert seen == ["one", "two", "three", "four", "last without newline"]
    assert tailer.recent_lines()[-1] == "last without newline"
