"""The runs on this agent: preparing, starting, supervising and stopping their NVFlare processes.

A dispatch starts one lifecycle task per process (the FL server, each client slot):

    PREPARING  download kit(s), job files, shard (unpacked safely) / checkpoint, requirements
    STARTED    the NVFlare process is spawned; its output is tailed into LogBatch events,
               its spool (server) or out spool (client) is watched
    READY      the server is listening / the client has registered (seen in its log)
    EXITED     once per process: expected after a stop, otherwise with the error and log tail

Folders: `<work_root>/runs/<job_id>/<run_id>/{job_files,server,client_<slot>}`, job envs under
`<work_root>/envs`. A stopped run's folder is removed (kits hold private keys, shards can be
large) unless `keep_run_dirs` is set; so are the folders a previous life of the agent left.

User code is hostile: each process runs as its own sandbox uid (see `sandbox`), claimed before
it is prepared and lent again once its whole process tree is gone. Its folders are given to
that uid just before it starts; everything else the agent keeps (ledgers, the admin kit, the
job files, the output log) stays the agent's own.
"""

import asyncio
import contextlib
import logging
import shutil
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Literal, Protocol

import httpx
from nats.js.object_store import ObjectStore

from rondo.contracts.events import (
    ClientAssignment,
    JobDispatched,
    LogSource,
    ProcessPhase,
    RunningProcess,
    RunProcessChanged,
    RunStopRequested,
    ServerAssignment,
)
from rondo.contracts.layout import SERVER_SITE, source_name
from rondo.worker_agent.config import AgentSettings
from rondo.worker_agent.downloads import DownloadError, JobFilesCache, download
from rondo.worker_agent.flare_runs import HOME_FOLDER, ClientRunSpec, ProcessSpec, ServerRunSpec
from rondo.worker_agent.log_tail import LogTailer
from rondo.worker_agent.publishing import Publish, stable_event_id
from rondo.worker_agent.requirements_env import RequirementsEnvs, RequirementsError
from rondo.worker_agent.runtime import ProcessHandle, Runtime
from rondo.worker_agent.sandbox import (
    Sandbox,
    SandboxRefused,
    SandboxUser,
    lock_down,
    make_private_to_agent,
    make_traversable,
    sandbox_mode,
)
from rondo.worker_agent.shards import ExtractLimits, UnsafeArchive, safe_extract, unpack_shard
from rondo.worker_agent.spool import OutSpoolStager, ServerSpoolWatcher

logger = logging.getLogger(__name__)

Role = Literal["server", "client"]

# Lines NVFlare logs once a participant is usable (server_train.py, fed_client_base.py).
SERVER_READY_MARKER = "Server started"
CLIENT_READY_MARKER = "Successfully registered client"
WATCH_INTERVAL_S = 0.5
KILL_GRACE_S = 10.0
MAX_ERROR_CHARS = 8000
REQUIREMENTS_FILE = Path("requirements") / "requirements.txt"


class SubmitFailed(Exception):
    """The FL server could not get the NVFlare job submitted (clients missing, app invalid)."""


# Failures whose message is already written for the user (it names the object and the cause).
USER_FACING_ERRORS = (
    DownloadError,
    UnsafeArchive,
    RequirementsError,
    SubmitFailed,
    SandboxRefused,
)


class FlareRuns(Protocol):
    """What the agent needs from `rondo.worker_agent.flare_runs` (a fake in tests)."""

    def server_process(self, spec: ServerRunSpec) -> ProcessSpec: ...

    def submit_run(self, spec: ServerRunSpec, timeout_s: float) -> str: ...

    def client_process(self, spec: ClientRunSpec) -> ProcessSpec: ...


@dataclass
class AgentProcess:
    """One NVFlare process of a run on this agent, from preparation to exit."""

    job_id: str
    run_id: str
    role: Role
    site_name: str
    slot: int | None
    folder: Path
    user: SandboxUser | None = None  # the sandbox uid it runs as, while claimed
    handle: ProcessHandle | None = None
    lifecycle: asyncio.Task[None] | None = None
    tailer: LogTailer | None = None
    watchers: list[ServerSpoolWatcher | OutSpoolStager] = field(default_factory=list)
    background: list[asyncio.Task[None]] = field(default_factory=list)
    stopping: bool = False
    ready: bool = False
    exited: bool = False

    def as_running(self) -> RunningProcess:
        return RunningProcess(
            job_id=self.job_id,
            run_id=self.run_id,
            role=self.role,
            site_name=self.site_name,
            slot=self.slot,
            pid=self.handle.pid if self.handle else None,
        )


@dataclass
class Run:
    job_id: str
    run_id: str
    folder: Path
    job_files: JobFilesCache
    processes: list[AgentProcess] = field(default_factory=list)


class RunManager:
    """Owns every run dispatched to this agent. All methods run on the agent's event loop."""

    def __init__(
        self,
        *,
        settings: AgentSettings,
        publish: Publish,
        store: ObjectStore,
        runtime: Runtime,
        flare: FlareRuns,
        http: httpx.AsyncClient,
    ) -> None:
        self._settings = settings
        self._publish = publish
        self._store = store
        self._runtime = runtime
        self._flare = flare
        self._http = http
        self.sandbox = Sandbox(sandbox_mode(settings.trust_user_code), settings.sandbox_uid_range)
        self._envs = RequirementsEnvs(
            settings.work_root / "envs",
            timeout_s=settings.requirements_timeout_s,
            sandbox=self.sandbox,
        )
        self._limits = ExtractLimits(
            max_total_bytes=settings.shard_max_bytes, max_ratio=settings.shard_max_ratio
        )
        self._runs: dict[str, Run] = {}
        self._finished_runs: set[str] = set()
        # The time of the newest dispatch seen per job: a job has one current run.
        self._newest_dispatch: dict[str, datetime] = {}

    # --- what the bus asks ----------------------------------------------------------------

    @property
    def runs_dir(self) -> Path:
        return self._settings.work_root / "runs"

    def remove_stale_runs(self) -> None:
        """End processes still running as this agent's sandbox uids and delete run folders a
        previous life of the agent left; then prepare the work dir (reachable, not listable,
        by sandbox uids) and check that a sandbox uid can run the interpreter from there."""
        killed = self.sandbox.end_leftovers()
        if killed:
            logger.warning("ended %d process(es) left running as this agent's uids", killed)
        if not self._settings.keep_run_dirs:
            shutil.rmtree(self.runs_dir, ignore_errors=True)
        make_traversable(self._settings.work_root, self.runs_dir, self._settings.work_root / "envs")
        self.sandbox.probe(self._envs.base_python, self.runs_dir)
        logger.info("user code: %s", self.sandbox.describe())

    def running(self) -> list[RunningProcess]:
        """Every process of this agent that has not exited (preparing ones included)."""
        return [
            process.as_running()
            for run in self._runs.values()
            for process in run.processes
            if not process.exited
        ]

    async def dispatch(self, event: JobDispatched) -> None:
        """Start preparing the run's processes and return at once (preparing may take minutes).

        A redelivered dispatch, or one for a run already stopped, is ignored. A job has one
        current run: a dispatch older than the job's newest one seen here is ignored (an agent
        cut off from the bus may get it late), and a newer one first stops the job's older
        runs on this agent, so they never share a device with it.
        """
        if event.run_id in self._runs or event.run_id in self._finished_runs:
            logger.info("dispatch of run %s already handled; ignored", event.run_id)
            return
        newest = self._newest_dispatch.get(event.job_id)
        if newest is not None and event.occurred_at < newest:
            logger.info("dispatch of run %s is superseded by a newer one; ignored", event.run_id)
            self._finished_runs.add(event.run_id)
            return
        self._newest_dispatch[event.job_id] = event.occurred_at
        superseded = [run for run in self._runs.values() if run.job_id == event.job_id]
        await self._stop_runs(superseded, f"superseded by run {event.run_id}")
        folder = self.runs_dir / event.job_id / event.run_id
        # Other uids may pass through to their own process folder, never list or read others.
        make_traversable(self.runs_dir, folder.parent, folder)
        (folder / "job_files").mkdir(mode=0o700, exist_ok=True)
        run = Run(
            job_id=event.job_id,
            run_id=event.run_id,
            folder=folder,
            job_files=JobFilesCache(self._http, folder / "job_files"),
        )
        self._runs[event.run_id] = run
        if event.server is not None:
            process = self._new_process(run, "server", SERVER_SITE, None)
            self._launch(process, self._server_lifecycle(run, process, event.server))
        for assignment in event.clients:
            process = self._new_process(run, "client", assignment.site_name, assignment.slot)
            self._launch(process, self._client_lifecycle(run, process, assignment))

    async def stop(self, event: RunStopRequested) -> None:
        """Kill every process tree of the run and publish their EXITED (expected) events."""
        self._finished_runs.add(event.run_id)
        run = self._runs.pop(event.run_id, None)
        if run is None:
            logger.info("stop of run %s: nothing of it runs here", event.run_id)
            return
        logger.info("stopping run %s (%s)", event.run_id, event.reason or "no reason given")
        await asyncio.gather(*(self._stop_process(p) for p in run.processes))
        if not self._settings.keep_run_dirs:
            await asyncio.to_thread(shutil.rmtree, run.folder, True)

    async def stop_all(self, reason: str) -> None:
        """Stop every run (agent shutdown)."""
        await self._stop_runs(list(self._runs.values()), reason)

    async def _stop_runs(self, runs: list[Run], reason: str) -> None:
        await asyncio.gather(
            *(
                self.stop(
                    RunStopRequested(
                        job_id=run.job_id,
                        agent_id=self._settings.agent_id,
                        run_id=run.run_id,
                        reason=reason,
                    )
                )
                for run in runs
            )
        )

    # --- lifecycles -------------------------------------------------------------------------

    def _new_process(self, run: Run, role: Role, site_name: str, slot: int | None) -> AgentProcess:
        folder = run.folder / source_name(slot if role == "client" else None)
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)  # the agent's until locked down
        process = AgentProcess(run.job_id, run.run_id, role, site_name, slot, folder)
        run.processes.append(process)
        return process

    def _launch(self, process: AgentProcess, lifecycle: Coroutine[Any, Any, None]) -> None:
        process.lifecycle = asyncio.create_task(self._supervise(process, lifecycle))

    async def _supervise(self, process: AgentProcess, lifecycle: Coroutine[Any, Any, None]) -> None:
        """Run a lifecycle; any failure ends the process and is published as EXITED."""
        try:
            await lifecycle
        except asyncio.CancelledError:
            raise  # stopped: `_stop_process` publishes
        except USER_FACING_ERRORS as error:
            await self._fail(process, str(error))
        except Exception as error:
            logger.exception(
                "%s %s of run %s failed", process.role, process.site_name, process.run_id
            )
            await self._fail(process, f"{type(error).__name__}: {error}")

    async def _client_lifecycle(
        self, run: Run, process: AgentProcess, assignment: ClientAssignment
    ) -> None:
        await self._phase(process, ProcessPhase.PREPARING)
        process.user = self.sandbox.claim()
        kit_dir = await self._fetch_kit(assignment.kit_url, process.folder / "kit", "client kit")
        job_files_dir = await run.job_files.fetch(assignment.job_files)
        data_root = process.folder / "data"
        await self._fetch_shard(assignment, process.folder / "shard.zip", data_root)
        job_python = await self._envs.python_for(job_files_dir / REQUIREMENTS_FILE)
        out_spool = process.folder / "out_spool"
        spec = await asyncio.to_thread(
            self._flare.client_process,
            ClientRunSpec(
                kit_dir=kit_dir,
                site_name=assignment.site_name,
                slot=assignment.slot,
                data_root=data_root,
                out_spool=out_spool,
                device=assignment.device,
                python=job_python.python,
                torch_threads=self._settings.torch_threads,
                requirements_file=job_files_dir / REQUIREMENTS_FILE,
                requirements_sha256=job_python.requirements_sha256,
                user=process.user,
            ),
        )
        if process.user is not None:
            await asyncio.to_thread(
                lock_down,
                process.folder,
                process.user,
                # The data root too: hosted-format apps write their outputs under it.
                private=[kit_dir, data_root, out_spool, process.folder / HOME_FOLDER],
                readable=[],
            )
        process.watchers.append(
            OutSpoolStager(
                out_spool=out_spool,
                ledger_path=process.folder / "out_spool.ledger",
                agent_id=self._settings.agent_id,
                job_id=run.job_id,
                run_id=run.run_id,
                slot=assignment.slot,
                generation=assignment.generation,
                store=self._store,
                publish=self._publish,
            )
        )
        await self._start(process, spec, CLIENT_READY_MARKER)
        exit_code = await self._wait_for_exit(process)
        await self._exited_on_its_own(process, exit_code)

    async def _server_lifecycle(
        self, run: Run, process: AgentProcess, assignment: ServerAssignment
    ) -> None:
        await self._phase(process, ProcessPhase.PREPARING)
        process.user = self.sandbox.claim()
        kit_dir, admin_kit_dir = await asyncio.gather(
            self._fetch_kit(assignment.kit_url, process.folder / "kit", "server kit"),
            self._fetch_kit(assignment.admin_kit_url, process.folder / "admin_kit", "admin kit"),
        )
        job_files_dir = await run.job_files.fetch(assignment.job_files)
        initial_checkpoint = None
        if assignment.initial_checkpoint_url:
            initial_checkpoint = await download(
                self._http,
                assignment.initial_checkpoint_url,
                process.folder / "initial_checkpoint.pt",
                "initial checkpoint",
            )
        job_python = await self._envs.python_for(job_files_dir / REQUIREMENTS_FILE)
        spool_dir = process.folder / "spool"
        run_spec = ServerRunSpec(
            kit_dir=kit_dir,
            admin_kit_dir=admin_kit_dir,
            admin_name=assignment.admin_name,
            job_files_dir=job_files_dir,
            work_dir=process.folder / "work",
            spool_dir=spool_dir,
            assignment=assignment,
            initial_checkpoint=initial_checkpoint,
            python=job_python.python,
            torch_threads=self._settings.torch_threads,
            job_id=run.job_id,
            user=process.user,
        )
        spec = await asyncio.to_thread(self._flare.server_process, run_spec)
        if process.user is not None:
            work_dir = process.folder / "work"
            await asyncio.to_thread(make_private_to_agent, admin_kit_dir)
            await asyncio.to_thread(
                lock_down,
                process.folder,
                process.user,
                private=[kit_dir, spool_dir, work_dir / "model_out", process.folder / HOME_FOLDER],
                readable=[p for p in [initial_checkpoint] if p is not None],
                passable=[work_dir],
            )
        process.watchers.append(
            ServerSpoolWatcher(
                spool_dir=spool_dir,
                ledger_path=process.folder / "spool.ledger",
                agent_id=self._settings.agent_id,
                job_id=run.job_id,
                run_id=run.run_id,
                site_names=assignment.site_names,
                num_rounds=assignment.config.num_rounds,
                store=self._store,
                publish=self._publish,
            )
        )
        await self._start(process, spec, SERVER_READY_MARKER)
        exit_code = await self._submit_while_running(process, run_spec)
        await self._exited_on_its_own(process, exit_code)

    async def _submit_while_running(self, process: AgentProcess, run_spec: ServerRunSpec) -> int:
        """Submit the NVFlare job (it waits for the clients) while watching the server.

        Returns the server's exit code; a failed submission raises (the server is then killed
        by `_fail`). The submission runs in a thread that cannot be interrupted: when the server
        dies first, it ends by itself at its timeout and its result is ignored.
        """
        submit = asyncio.ensure_future(
            asyncio.to_thread(self._flare.submit_run, run_spec, self._settings.submit_timeout_s)
        )
        exit_wait = asyncio.ensure_future(self._wait_for_exit(process))
        try:
            await asyncio.wait({submit, exit_wait}, return_when=asyncio.FIRST_COMPLETED)
            if not exit_wait.done():
                try:
                    nvflare_job_id = submit.result()
                except Exception as error:
                    raise SubmitFailed(f"could not submit the NVFlare job: {error}") from error
                logger.info("run %s submitted as NVFlare job %s", process.run_id, nvflare_job_id)
                await self._mark_ready(process)  # in case the log marker was missed
            return await exit_wait
        finally:
            exit_wait.cancel()
            submit.add_done_callback(_ignore_result)

    # --- steps ------------------------------------------------------------------------------

    async def _fetch_kit(self, url: str, kit_dir: Path, what: str) -> Path:
        archive = await download(self._http, url, kit_dir.with_suffix(".zip"), what)
        if kit_dir.exists():
            await asyncio.to_thread(shutil.rmtree, kit_dir)
        try:
            await asyncio.to_thread(safe_extract, archive, kit_dir, ExtractLimits(), True)
        except UnsafeArchive as error:
            raise UnsafeArchive(f"{what}: {error}") from error
        finally:
            archive.unlink(missing_ok=True)
        return kit_dir

    async def _fetch_shard(
        self, assignment: ClientAssignment, archive: Path, data_root: Path
    ) -> None:
        await download(self._http, assignment.shard_url, archive, f"shard {assignment.shard_key}")
        try:
            await asyncio.to_thread(
                unpack_shard, archive, data_root, assignment.shard_key, self._limits
            )
        finally:
            archive.unlink(missing_ok=True)

    async def _start(self, process: AgentProcess, spec: ProcessSpec, ready_marker: str) -> None:
        """Spawn the process, then tail its logs and run its spool watchers in the background.

        `spec.log_files` is the process's own stdout/stderr: NVFlare mirrors every log line of
        the participant and of its job processes there, with the user's prints and tracebacks.
        """
        process.handle = await asyncio.to_thread(self._runtime.start, spec)
        await self._phase(process, ProcessPhase.STARTED)
        process.tailer = LogTailer(
            agent_id=self._settings.agent_id,
            job_id=process.job_id,
            run_id=process.run_id,
            source=LogSource(role=process.role, slot=process.slot),
            paths=spec.log_files,
            publish=self._publish,
            on_line=self._ready_detector(process, ready_marker),
            max_lines=self._settings.log_max_lines,
            max_bytes=self._settings.log_max_bytes,
        )
        process.background = [
            asyncio.create_task(process.tailer.run()),
            *(asyncio.create_task(watcher.run()) for watcher in process.watchers),
        ]

    def _ready_detector(self, process: AgentProcess, marker: str) -> Callable[[str], None]:
        def on_line(line: str) -> None:
            if marker in line and not process.ready:
                process.background.append(asyncio.create_task(self._mark_ready(process)))

        return on_line

    async def _wait_for_exit(self, process: AgentProcess) -> int:
        assert process.handle is not None
        while (exit_code := process.handle.poll()) is None:
            process.handle.track()
            await asyncio.sleep(WATCH_INTERVAL_S)
        return exit_code

    async def _drain(self, process: AgentProcess) -> None:
        """After the process tree is gone: stop background work, publish what is left."""
        current = asyncio.current_task()
        for task in process.background:
            if task is not current:
                task.cancel()
        await asyncio.gather(*process.background, return_exceptions=True)
        for watcher in process.watchers:
            try:
                await watcher.scan()
            except Exception:
                logger.exception("final spool scan of %s failed", process.folder)
        if process.tailer is not None:
            try:
                await process.tailer.flush(final=True)
            except Exception:
                logger.exception("final log flush of %s failed", process.folder)

    # --- endings ----------------------------------------------------------------------------

    async def _exited_on_its_own(self, process: AgentProcess, exit_code: int) -> None:
        """The root process ended without a stop request: end its tree, report it unexpected."""
        if process.stopping:
            return
        assert process.handle is not None
        await asyncio.to_thread(process.handle.kill_tree, KILL_GRACE_S)
        await self._drain(process)
        tail = process.tailer.recent_lines() if process.tailer else []
        error = f"{process.role} process exited with code {exit_code}"
        if tail:
            error += "; last log lines:\n" + "\n".join(tail)
        await self._exited(process, exit_code=exit_code, error=error, expected=False)

    async def _fail(self, process: AgentProcess, error: str) -> None:
        """Preparing or starting failed: end whatever was started, report the error."""
        if process.stopping:
            return
        exit_code = None
        if process.handle is not None:
            exit_code = await asyncio.to_thread(process.handle.kill_tree, KILL_GRACE_S)
            await self._drain(process)
        logger.warning(
            "%s %s of run %s failed: %s", process.role, process.site_name, process.run_id, error
        )
        await self._exited(process, exit_code=exit_code, error=error, expected=False)

    async def _stop_process(self, process: AgentProcess) -> None:
        if process.exited:
            return
        process.stopping = True
        if process.lifecycle is not None and not process.lifecycle.done():
            process.lifecycle.cancel()
            await asyncio.wait([process.lifecycle])
        exit_code = None
        if process.handle is not None:
            exit_code = await asyncio.to_thread(process.handle.kill_tree, KILL_GRACE_S)
            await self._drain(process)
        await self._exited(process, exit_code=exit_code, error=None, expected=True)

    # --- events -----------------------------------------------------------------------------

    async def _mark_ready(self, process: AgentProcess) -> None:
        if process.ready or process.stopping or process.exited:
            return
        process.ready = True
        await self._phase(process, ProcessPhase.READY)

    async def _exited(
        self, process: AgentProcess, *, exit_code: int | None, error: str | None, expected: bool
    ) -> None:
        if process.exited:
            return
        process.exited = True
        user, process.user = process.user, None
        await asyncio.to_thread(self.sandbox.release, user)
        if error is not None and len(error) > MAX_ERROR_CHARS:
            error = error[:200] + "\n[...]\n" + error[-(MAX_ERROR_CHARS - 210) :]
        await self._phase(
            process, ProcessPhase.EXITED, exit_code=exit_code, error=error, expected=expected
        )

    async def _phase(
        self,
        process: AgentProcess,
        phase: ProcessPhase,
        *,
        exit_code: int | None = None,
        error: str | None = None,
        expected: bool = False,
    ) -> None:
        event = RunProcessChanged(
            event_id=stable_event_id(
                process.job_id, process.run_id, process.role, process.site_name, phase
            ),
            job_id=process.job_id,
            run_id=process.run_id,
            agent_id=self._settings.agent_id,
            role=process.role,
            site_name=process.site_name,
            slot=process.slot,
            phase=phase,
            exit_code=exit_code,
            error=error,
            expected=expected,
        )
        try:
            await self._publish(event)
        except Exception:
            logger.exception("publishing %s of %s failed", phase, process.site_name)


def _ignore_result(task: "asyncio.Future[str]") -> None:
    """Retrieve a finished submission's outcome so asyncio does not warn about it."""
    with contextlib.suppress(BaseException):
        task.result()
