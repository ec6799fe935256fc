"""Tailing a process's log files into `LogBatch` events (one numbered line stream per source).

Lines of all files of one source (the server, or client slot n) share one counter:
`first_line` of a batch is the index of its first line in that source's stream. Event ids are
derived from (run, source, first_line), so re-tailing after an agent restart reproduces the
same ids and JetStream drops the repeats.
"""

import asyncio
import collections
import glob
import logging
import os
import re
import stat
from collections.abc import Callable
from pathlib import Path

from rondo.contracts.events import LogBatch, LogSource
from rondo.worker_agent.publishing import Publish, stable_event_id

logger = logging.getLogger(__name__)

BATCH_INTERVAL_S = 0.5
MAX_LINES_PER_BATCH = 500  # keeps a batch far below NATS's 1 MB message limit
MAX_LINE_CHARS = 4000
READ_CHUNK_BYTES = 256 * 1024
ERROR_TAIL_LINES = 30
# A job's log, per run and source, is published up to these caps; a process that prints without
# end would otherwise fill the log stream and the gateway's database. The rest is read (readiness
# and error lines are still noticed) but not published, and ONE marker line saying how many
# lines were dropped ends the source's stream when the tailer's final flush runs.
MAX_LINES_PER_SOURCE = 200_000
MAX_BYTES_PER_SOURCE = 50 * 1024 * 1024
# Colour codes some loggers write even into files.
ANSI_ESCAPE = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


class _FollowedFile:
    """One file read incrementally; tolerates the file appearing late or being truncated."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._offset = 0
        self._partial = b""

    def read_lines(self, include_partial: bool) -> list[str]:
        # The agent creates the log; user code may replace it by a link or a file of its own
        # (its folder is the user's): the agent must then read nothing, never the link's target.
        try:
            fd = os.open(self.path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
        except OSError:  # missing, or a link
            return []
        handle = os.fdopen(fd, "rb")
        status = os.fstat(fd)
        if not stat.S_ISREG(status.st_mode) or status.st_uid != os.geteuid():
            handle.close()
            return []
        size = status.st_size
        if size < self._offset:  # truncated or replaced: start over
            self._offset, self._partial = 0, b""
        lines: list[bytes] = []
        with handle:
            handle.seek(self._offset)
            while chunk := handle.read(READ_CHUNK_BYTES):
                self._offset += len(chunk)
                *complete, self._partial = (self._partial + chunk).split(b"\n")
                lines += complete
        if include_partial and self._partial:
            lines.append(self._partial)
            self._partial = b""
        return [_clean(line) for line in lines]


def _clean(raw: bytes) -> str:
    line = ANSI_ESCAPE.sub("", raw.decode("utf-8", errors="replace").rstrip("\r"))
    return line if len(line) <= MAX_LINE_CHARS else line[:MAX_LINE_CHARS] + " [truncated]"


class LogTailer:
    """Follows `paths` (glob patterns allowed: NVFlare's per-job log appears later) and
    publishes their new lines as LogBatch events every `interval_s`.

    `on_line` sees every line as it is read (used to notice readiness messages).
    At most `max_lines` lines / `max_bytes` bytes (UTF-8, newlines included) are published;
    the lines after the cap are counted and announced by one marker line at the final flush.
    The cap applies to the stream in read order, so a re-tail after an agent restart keeps
    the same lines and numbers them the same (stable event ids).
    """

    def __init__(
        self,
        *,
        agent_id: str,
        job_id: str,
        run_id: str,
        source: LogSource,
        paths: list[Path],
        publish: Publish,
        on_line: Callable[[str], None] | None = None,
        interval_s: float = BATCH_INTERVAL_S,
        max_lines: int = MAX_LINES_PER_SOURCE,
        max_bytes: int = MAX_BYTES_PER_SOURCE,
    ) -> None:
        self._agent_id = agent_id
        self._job_id = job_id
        self._run_id = run_id
        self._source = source
        self._patterns = paths
        self._publish = publish
        self._on_line = on_line
        self._interval_s = interval_s
        self._files: dict[Path, _FollowedFile] = {}
        self._pending: list[str] = []
        self._next_line = 0
        self._recent: collections.deque[str] = collections.deque(maxlen=ERROR_TAIL_LINES)
        self._max_lines = max_lines
        self._max_bytes = max_bytes
        self._kept_lines = 0
        self._kept_bytes = 0
        self._dropped = 0
        self._marked = False

    @property
    def dropped_lines(self) -> int:
        """Lines read beyond the cap, not published."""
        return self._dropped

    def recent_lines(self) -> list[str]:
        """The last lines read, for an error message when the process dies."""
        return list(self._recent)

    async def run(self) -> None:
        """Tail and publish until cancelled; call `flush(final=True)` afterwards."""
        while True:
            try:
                await self.flush()
            except Exception:
                logger.exception("publishing %s log lines failed; retrying", self._source)
            await asyncio.sleep(self._interval_s)

    async def flush(self, final: bool = False) -> None:
        """Read what is new and publish it; `final` also takes an unterminated last line."""
        self._read(include_partial=final)
        if final and self._dropped and not self._marked:
            self._pending.append(
                f"[rondo] {self._dropped} more line(s) of this log were dropped: a job's log is "
                f"capped at {self._max_lines} lines / {self._max_bytes} bytes per source"
            )
            self._marked = True
        while self._pending:
            batch = self._pending[:MAX_LINES_PER_BATCH]
            await self._publish(
                LogBatch(
                    event_id=stable_event_id(
                        self._job_id, self._run_id, self._source.file_name, self._next_line
                    ),
                    agent_id=self._agent_id,
                    job_id=self._job_id,
                    run_id=self._run_id,
                    source=self._source,
                    first_line=self._next_line,
                    lines=batch,
                )
            )
            # Only published lines advance the counter: a failed publish is retried as is.
            self._next_line += len(batch)
            del self._pending[: len(batch)]

    def _read(self, include_partial: bool) -> None:
        for path in self._expand():
            followed = self._files.setdefault(path, _FollowedFile(path))
            for line in followed.read_lines(include_partial):
                self._keep_or_drop(line)
                self._recent.append(line)
                if self._on_line is not None:
                    self._on_line(line)

    def _keep_or_drop(self, line: str) -> None:
        size = len(line.encode()) + 1
        if self._dropped or (
            self._kept_lines >= self._max_lines or self._kept_bytes + size > self._max_bytes
        ):
            self._dropped += 1  # once over the cap, every later line is dropped too
            return
        self._pending.append(line)
        self._kept_lines += 1
        self._kept_bytes += size

    def _expand(self) -> list[Path]:
        found: list[Path] = []
        for pattern in self._patterns:
            if any(char in str(pattern) for char in "*?["):
                found += sorted(Path(p) for p in glob.glob(str(pattern)))
            else:
                found.append(pattern)
        return list(dict.fromkeys(found))
