"""Job logs in the gateway: the agents' `LogBatch` lines, stored per job and source.

The gateway keeps its own copy (rather than reading `files_out/*.log` from the bucket) because
it must hear every batch anyway to stream `log` events, the artifacts service rewrites those
files only every few seconds, and a tail or range is one indexed query here but a whole-file
read there. A source is `server` or `client_<slot>`; its log is its NVFlare runs in the order
they first appeared, each run's lines in the agent's numbering. A line is stored once per
(job, source, run, line number): redelivered or repeated batches change nothing.

Artifacts writes the complete logs into the user's bucket (`files_out/<source>.log`); the lines
here are a working copy, deleted once the job ended longer ago than the retention
(`RONDO_GATEWAY_LOG_RETENTION_DAYS`), checked every `PRUNE_INTERVAL_S`.
"""

import asyncio
import logging
from collections.abc import Callable
from datetime import datetime, timedelta

import anyio
from fastapi.sse import ServerSentEvent
from sqlalchemy import Engine, delete, func, tuple_
from sqlmodel import Session, col, select

from rondo.contracts.api import JobLogs, JobStreamEvent, LogLines
from rondo.contracts.consumers import DurableConsumers
from rondo.contracts.events import LogBatch, LogSource
from rondo.contracts.layout import files_out_key, log_file_name
from rondo.contracts.states import JobState
from rondo.contracts.subjects import Durables
from rondo.gateway.models import Job, JobLogLine
from rondo.gateway.pubsub import JobEventHub

logger = logging.getLogger(__name__)

MAX_LINES_PER_READ = 10_000
DEFAULT_TAIL = 200
PRUNE_INTERVAL_S = 3600.0


def source_name(source: LogSource) -> str:
    """`server` or `client_<slot>`: the log file's name without `.log`."""
    return source.file_name.removesuffix(".log")


def log_file_key(files_prefix: str, source: str) -> str:
    """Where artifacts keeps the source's complete log in the user's bucket."""
    return files_out_key(files_prefix, log_file_name(source))


class JobLogStore:
    """Log lines of jobs in the gateway's database; each method uses its own session."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    def add(self, batch: LogBatch) -> LogLines | None:
        """Store the batch's lines not stored yet. Returns them, numbered by their place in the
        source's log, or None when nothing was new or the job is unknown (logged, dropped)."""
        source = source_name(batch.source)
        with Session(self._engine) as session:
            if session.get(Job, batch.job_id) is None:
                logger.warning("log lines of unknown job %s dropped", batch.job_id)
                return None
            numbers = range(batch.first_line, batch.first_line + len(batch.lines))
            stored = set(
                session.exec(
                    select(JobLogLine.line_no).where(
                        JobLogLine.job_id == batch.job_id,
                        JobLogLine.source == source,
                        JobLogLine.run_id == batch.run_id,
                        col(JobLogLine.line_no).between(numbers.start, numbers.stop - 1),
                    )
                ).all()
            )
            new = [
                (n, text.rstrip("\r\n"))
                for n, text in zip(numbers, batch.lines, strict=True)
                if n not in stored
            ]
            if not new:
                return None
            run_seq = self._run_seq(session, batch.job_id, source, batch.run_id)
            session.add_all(
                JobLogLine(
                    job_id=batch.job_id,
                    source=source,
                    run_id=batch.run_id,
                    run_seq=run_seq,
                    line_no=number,
                    text=text,
                )
                for number, text in new
            )
            session.commit()
            first_line = self._lines_before(session, batch.job_id, source, run_seq, new[0][0])
            return LogLines(source=source, first_line=first_line, lines=[t for _, t in new])

    @staticmethod
    def _run_seq(session: Session, job_id: str, source: str, run_id: str) -> int:
        """The run's place among the source's runs: its existing one, or after the last."""
        known = session.exec(
            select(JobLogLine.run_seq)
            .where(
                JobLogLine.job_id == job_id,
                JobLogLine.source == source,
                JobLogLine.run_id == run_id,
            )
            .limit(1)
        ).first()
        if known is not None:
            return known
        last = session.exec(
            select(func.max(JobLogLine.run_seq)).where(
                JobLogLine.job_id == job_id, JobLogLine.source == source
            )
        ).one()
        return 0 if last is None else last + 1

    @staticmethod
    def _lines_before(
        session: Session, job_id: str, source: str, run_seq: int, line_no: int
    ) -> int:
        return session.exec(
            select(func.count())
            .select_from(JobLogLine)
            .where(
                JobLogLine.job_id == job_id,
                JobLogLine.source == source,
                tuple_(JobLogLine.run_seq, JobLogLine.line_no) < (run_seq, line_no),
            )
        ).one()

    def read(
        self,
        job_id: str,
        source: str,
        *,
        file_key: str,
        tail: int | None = None,
        start: int | None = None,
        end: int | None = None,
    ) -> JobLogs:
        """Lines `[start, end)` of the source's log (0-based), or its last `tail` lines (the
        default: the last `DEFAULT_TAIL`); at most `MAX_LINES_PER_READ` either way. A source
        with no line (yet, or any more) reads as empty; `file_key` names its complete log."""
        with Session(self._engine) as session:
            where = (JobLogLine.job_id == job_id, JobLogLine.source == source)
            total = session.exec(select(func.count()).select_from(JobLogLine).where(*where)).one()
            if start is None:
                count = min(tail if tail is not None else DEFAULT_TAIL, MAX_LINES_PER_READ)
                first, last = max(0, total - count), total
            else:
                first = start
                last = min(total, end if end is not None else first + DEFAULT_TAIL)
                last = min(last, first + MAX_LINES_PER_READ)
            lines = (
                session.exec(
                    select(JobLogLine.text)
                    .where(*where)
                    .order_by(col(JobLogLine.run_seq), col(JobLogLine.line_no))
                    .offset(first)
                    .limit(last - first)
                ).all()
                if last > first
                else []
            )
        return JobLogs(
            source=source, first_line=first, lines=list(lines), total=total, file_key=file_key
        )

    def prune(self, ended_before: datetime) -> int:
        """Delete the lines of every job that ended (FINISHED, FAILED, CANCELLED) and has not
        changed since `ended_before`; returns how many lines went."""
        ended = select(Job.id).where(
            col(Job.state).in_([state for state in JobState if state.is_terminal]),
            Job.updated_at < ended_before,
        )
        with Session(self._engine) as session:
            result = session.exec(delete(JobLogLine).where(col(JobLogLine.job_id).in_(ended)))
            session.commit()
            return int(result.rowcount or 0)


async def prune_logs_forever(
    store: JobLogStore, retention_days: float, clock: Callable[[], datetime]
) -> None:
    """Every `PRUNE_INTERVAL_S` (and at once), prune the lines of jobs that ended more than
    `retention_days` ago; runs until cancelled. 0 days keeps every line."""
    if retention_days <= 0:
        return
    while True:
        cutoff = clock() - timedelta(days=retention_days)
        try:
            pruned = await anyio.to_thread.run_sync(store.prune, cutoff)
        except Exception:  # the database may be briefly unavailable: try again next time
            logger.exception("pruning job log lines failed")
        else:
            if pruned:
                logger.info("pruned %d log lines of jobs ended before %s", pruned, cutoff)
        await asyncio.sleep(PRUNE_INTERVAL_S)


def register_log_consumer(
    consumers: DurableConsumers, store: JobLogStore, hub: JobEventHub
) -> None:
    """Consume `rondo.logs.*` durably (before the broker starts): store each batch, then send
    its new lines to the job's live streams as `log` events. A batch that cannot be stored
    (database locked or down) is redelivered with a growing delay."""
    lock = asyncio.Lock()  # a run's place (`run_seq`) is read, then written

    @consumers(LogBatch, Durables.GATEWAY_LOGS)
    async def on_log_batch(batch: LogBatch) -> None:
        async with lock:
            lines = await anyio.to_thread.run_sync(store.add, batch)
        if lines is not None:
            event = ServerSentEvent(event=JobStreamEvent.LOG.value, data=lines)
            hub.publish(batch.job_id, event, to_any_job=False)
