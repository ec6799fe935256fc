"""Turning spool files into events: the FL server's round files and the clients' out_dir files.

The NVFlare server process writes `$RONDO_SPOOL_DIR/{run_started,round_<r>,run_ended}.json`
(+ `round_<r>.pt`), each `.json` renamed into place last (the records of
`rondo.contracts.spool`). The client
executor writes the user's out_dir files to `$RONDO_OUT_SPOOL/round_<r>/...`. Watchers poll
those folders, put the bytes into the NATS object store and publish the events.

Each file is published once: a ledger (one line per done file, next to the spool, not in it)
survives agent restarts, and event ids are derived from the file's identity, so a publish
repeated after a crash is also dropped by JetStream's de-duplication window.
"""

import asyncio
import base64
import logging
import os
import stat
from pathlib import Path
from typing import BinaryIO, TypeVar

from nats.js.object_store import ObjectStore

from rondo.contracts.events import (
    ArtifactStaged,
    RoundCompleted,
    RunEnded,
    RunStarted,
    WorkerContribution,
)
from rondo.contracts.layout import client_name, flare_site_slot, staged_output_path
from rondo.contracts.spool import (
    OUT_ROUND_DIR,
    ROUND_FILE,
    RUN_ENDED_FILE,
    RUN_STARTED_FILE,
    RoundRecord,
    RunEndedRecord,
    RunStartedRecord,
    SpoolRecord,
    out_round_dir,
    read_record,
)
from rondo.worker_agent.publishing import Publish, stable_event_id

logger = logging.getLogger(__name__)

SPOOL_POLL_S = 0.2


def digest_to_hex(digest: str | None) -> str:
    """NATS object digests read 'SHA-256=<urlsafe base64>'; events carry hex."""
    if not digest or "=" not in digest:
        return ""
    encoded = digest.split("=", 1)[1]
    return base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4)).hex()


class UnsafeSpoolFile(OSError):
    """A spool entry is a link, not a regular file, or not owned by the spool's owner."""


def open_spool_file(path: Path, owner_uid: int | None = None) -> BinaryIO:
    """Open a file user code wrote, for the agent to read: never through a symbolic link, only
    a regular file, and (given `owner_uid`) only one that uid owns. User code may swap a file
    or a folder above it for a link at any moment; the agent (root) must not read the host's
    files for it. The checks are made on the opened file, so there is no race."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    try:
        status = os.fstat(fd)
        if not stat.S_ISREG(status.st_mode):
            raise UnsafeSpoolFile(f"{path} is not a regular file")
        if owner_uid is not None and status.st_uid != owner_uid:
            raise UnsafeSpoolFile(f"{path} is owned by uid {status.st_uid}, not {owner_uid}")
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def spool_owner(folder: Path) -> int:
    """The uid that writes a spool folder (the agent locks it down before the process starts)."""
    return os.lstat(folder).st_uid


async def stage_file(
    store: ObjectStore, name: str, path: Path, owner_uid: int | None = None
) -> tuple[int, str]:
    """Put a file into the object store under `name` (see `open_spool_file`); returns
    (size, sha256 hex)."""
    with open_spool_file(path, owner_uid) as data:
        info = await store.put(name, data)
    return int(info.size or 0), digest_to_hex(info.digest)


class Ledger:
    """The names already published, one a line in a small append-only file."""

    def __init__(self, path: Path) -> None:
        self._path = path
        self._done: set[str] = set()
        if path.exists():
            self._done = {line for line in path.read_text().splitlines() if line}

    def __contains__(self, key: str) -> bool:
        return key in self._done

    def add(self, key: str) -> None:
        self._path.parent.mkdir(parents=True, exist_ok=True)
        with self._path.open("a") as out:
            out.write(key + "\n")
        self._done.add(key)


def slot_of(site_name: str, site_names: list[str]) -> int:
    """The slot of a client site: its position in the run's site list (`site-<slot>-<gen>`)."""
    if site_name in site_names:
        return site_names.index(site_name)
    slot = flare_site_slot(site_name)
    return -1 if slot is None else slot


class ServerSpoolWatcher:
    """Publishes RunStarted, RoundCompleted (checkpoint staged first) and RunEnded, in order.

    `num_rounds` (the job's total) stands in when a round file does not say it.
    """

    def __init__(
        self,
        *,
        spool_dir: Path,
        ledger_path: Path,
        agent_id: str,
        job_id: str,
        run_id: str,
        site_names: list[str],
        num_rounds: int,
        store: ObjectStore,
        publish: Publish,
    ) -> None:
        self._spool = spool_dir
        self._agent_id = agent_id
        self._num_rounds = num_rounds
        self._ledger = Ledger(ledger_path)
        self._job_id = job_id
        self._run_id = run_id
        self._site_names = site_names
        self._store = store
        self._publish = publish
        self.nvflare_job_id: str | None = None
        self.ended: RunEnded | None = None

    async def run(self, interval_s: float = SPOOL_POLL_S) -> None:
        """Scan until cancelled; a failed scan is logged and retried on the next tick."""
        while True:
            try:
                await self.scan()
            except Exception:
                logger.exception("spool scan of %s failed; retrying", self._spool)
            await asyncio.sleep(interval_s)

    async def scan(self) -> None:
        """One pass: publish every complete spool file not published yet."""
        if not self._spool.is_dir():
            return
        await self._run_started()
        await self._rounds()
        if (self._spool / RUN_ENDED_FILE).exists():
            await self._rounds()  # whatever landed between the two listings comes first
            await self._run_ended()

    async def _run_started(self) -> None:
        path = self._spool / RUN_STARTED_FILE
        if RUN_STARTED_FILE in self._ledger or not path.exists():
            return
        started = _read_record(RunStartedRecord, path, spool_owner(self._spool))
        self.nvflare_job_id = started.nvflare_job_id
        await self._publish(
            RunStarted(
                event_id=stable_event_id(self._job_id, self._run_id, RUN_STARTED_FILE),
                agent_id=self._agent_id,
                job_id=self._job_id,
                run_id=self._run_id,
                nvflare_job_id=self.nvflare_job_id,
            )
        )
        self._ledger.add(RUN_STARTED_FILE)

    async def _rounds(self) -> None:
        rounds = sorted(
            (int(m.group(1)), p.name)
            for p in self._spool.iterdir()
            if (m := ROUND_FILE.match(p.name))
        )
        for round_number, name in rounds:
            if name not in self._ledger:
                await self._round(round_number, name)

    async def _round(self, round_number: int, name: str) -> None:
        owner = spool_owner(self._spool)
        summary = _read_record(RoundRecord, self._spool / name, owner)
        checkpoint = (self._spool / name).with_suffix(".pt")
        if not checkpoint.exists():
            logger.warning("spool %s has no checkpoint %s yet", name, checkpoint.name)
            return
        object_name = f"{self._job_id}/{self._run_id}/round_{round_number}.pt"
        _, sha256 = await stage_file(self._store, object_name, checkpoint, owner)
        contributions = [
            WorkerContribution(
                site_name=c.site_name,
                slot=slot_of(c.site_name, self._site_names),
                samples=c.samples,
                metrics=c.metrics,
            )
            for c in summary.contributions
        ]
        await self._publish(
            RoundCompleted(
                event_id=stable_event_id(self._job_id, self._run_id, name),
                agent_id=self._agent_id,
                job_id=self._job_id,
                run_id=self._run_id,
                round=round_number if summary.round is None else summary.round,
                num_rounds=summary.num_rounds or self._num_rounds,
                metrics=summary.metrics,
                contributions=contributions,
                duration_s=summary.duration_s,
                checkpoint_object=object_name,
                checkpoint_sha256=sha256,
            )
        )
        self._ledger.add(name)

    async def _run_ended(self) -> None:
        if RUN_ENDED_FILE in self._ledger:
            return
        ended = _read_record(RunEndedRecord, self._spool / RUN_ENDED_FILE, spool_owner(self._spool))
        self.ended = RunEnded(
            event_id=stable_event_id(self._job_id, self._run_id, RUN_ENDED_FILE),
            agent_id=self._agent_id,
            job_id=self._job_id,
            run_id=self._run_id,
            completed=ended.completed,
            error=ended.error,
        )
        await self._publish(self.ended)
        self._ledger.add(RUN_ENDED_FILE)


class OutSpoolStager:
    """Stages a client's out_dir files (`<out_spool>/round_<r>/<relpath>`) as ArtifactStaged.

    The executor renames each round folder into place whole, so a `round_<r>` folder that
    exists is complete (its temporary folders live under `.staging/`, which is skipped).
    Symbolic links are never followed: user code must not be able to stage the host's files.
    """

    def __init__(
        self,
        *,
        out_spool: Path,
        ledger_path: Path,
        agent_id: str,
        job_id: str,
        run_id: str,
        slot: int,
        generation: int,
        store: ObjectStore,
        publish: Publish,
    ) -> None:
        self._out_spool = out_spool
        self._agent_id = agent_id
        self._ledger = Ledger(ledger_path)
        self._job_id = job_id
        self._run_id = run_id
        self._slot = slot
        self._generation = generation
        self._store = store
        self._publish = publish

    async def run(self, interval_s: float = SPOOL_POLL_S) -> None:
        """Scan until cancelled; a failed scan is logged and retried on the next tick."""
        while True:
            try:
                await self.scan()
            except Exception:
                logger.exception("out spool scan of %s failed; retrying", self._out_spool)
            await asyncio.sleep(interval_s)

    async def scan(self) -> None:
        """Stage every file of every round folder not staged yet."""
        if not self._out_spool.is_dir():
            return
        for round_dir in sorted(self._out_spool.iterdir()):
            match = OUT_ROUND_DIR.match(round_dir.name)
            if not match or round_dir.is_symlink() or not round_dir.is_dir():
                continue
            round_number = int(match.group(1))
            for path in sorted(_regular_files(round_dir)):
                relpath = path.relative_to(round_dir).as_posix()
                key = f"{out_round_dir(round_number)}/{relpath}"
                if key in self._ledger:
                    continue
                try:
                    await self._stage(round_number, relpath, path, key)
                except UnsafeSpoolFile as error:  # user code planted it: skip it for good
                    logger.warning("not staging %s: %s", key, error)
                    self._ledger.add(key)

    async def _stage(self, round_number: int, relpath: str, path: Path, key: str) -> None:
        output_path = staged_output_path(self._slot, round_number, relpath)
        object_name = f"{self._job_id}/{self._run_id}/{client_name(self._slot)}/{key}"
        owner = spool_owner(self._out_spool)
        size, sha256 = await stage_file(self._store, object_name, path, owner)
        await self._publish(
            ArtifactStaged(
                event_id=stable_event_id(self._job_id, self._run_id, self._slot, key),
                agent_id=self._agent_id,
                job_id=self._job_id,
                run_id=self._run_id,
                object_name=object_name,
                path=output_path,
                size=size,
                sha256=sha256,
                generation=self._generation,
            )
        )
        self._ledger.add(key)


def _regular_files(folder: Path) -> list[Path]:
    """Regular files under `folder`, not descending into (or returning) symbolic links."""
    found = []
    for entry in folder.iterdir():
        if entry.is_symlink():
            continue
        if entry.is_dir():
            found += _regular_files(entry)
        elif entry.is_file():
            found.append(entry)
    return found


R = TypeVar("R", bound=SpoolRecord)


def _read_record(kind: type[R], path: Path, owner_uid: int | None = None) -> R:
    with open_spool_file(path, owner_uid) as file:
        return read_record(kind, file.read(), path.name)
