"""The worker-agent on the bus: dispatch/stop consumers, heartbeats, health, shutdown.

Dispatches and stops arrive on durable consumers of this agent's own subjects
(`rondo.agent.<id>.dispatch|stop`, stream RONDO_AGENTS), under the one consumer policy
(`rondo.contracts.consumers`): a handler that raises is retried with a growing delay, a
dispatch that can never be valid is dead-lettered (which fails its job). Heartbeats go out on
core NATS every interval: silence is how the scheduler learns this host is gone.
"""

import asyncio
import contextlib
import logging
from datetime import datetime
from typing import Any

from faststream.nats import NatsBroker

from rondo.contracts.bus import look_up_staging, make_broker, publish, register_health
from rondo.contracts.consumers import DurableConsumers
from rondo.contracts.events import (
    Event,
    JobDispatched,
    RunStopRequested,
    WorkerHeartbeat,
    utc_now,
)
from rondo.contracts.subjects import (
    Durables,
    agent_dispatch_subject,
    agent_stop_subject,
)
from rondo.worker_agent import flare_runs
from rondo.worker_agent.config import AgentSettings
from rondo.worker_agent.downloads import make_http_client
from rondo.worker_agent.inventory import Inventory
from rondo.worker_agent.run_manager import FlareRuns, RunManager
from rondo.worker_agent.runtime import Runtime
from rondo.worker_agent.runtime_docker import make_runtime

logger = logging.getLogger(__name__)

SERVICE = "worker-agent"
PULL_TIMEOUT_S = 5.0
LEFTOVER_KILL_GRACE_S = 5.0


class WorkerAgent:
    """One agent process: `start()`, then `stop()` (kills every run it started)."""

    def __init__(
        self,
        settings: AgentSettings,
        *,
        runtime: Runtime | None = None,
        flare: FlareRuns = flare_runs,
    ) -> None:
        self.settings = settings
        # The owner names this agent's work dir too: two stacks on one host (tests, a dev
        # stack beside CI) both have a `local-0`, and must never end each other's processes.
        owner = f"{settings.agent_id}@{settings.work_root.resolve()}"
        self._runtime = runtime or make_runtime(settings, owner)
        self._flare = flare
        self._inventory = Inventory(settings.inventory)
        self._started_at: datetime = utc_now()
        self._http = make_http_client()
        self._manager: RunManager | None = None
        self._heartbeat_task: asyncio.Task[None] | None = None
        self.broker = self._build_broker()

    @property
    def manager(self) -> RunManager:
        assert self._manager is not None, "the agent is not started"
        return self._manager

    def _build_broker(self) -> NatsBroker:
        agent_id = self.settings.agent_id
        broker = make_broker(self.settings, f"{SERVICE}-{agent_id}")
        consumers = DurableConsumers(broker, self.settings)
        dispatches = consumers(
            JobDispatched,
            Durables.agent_dispatch(agent_id),
            subject=agent_dispatch_subject(agent_id),
            pull_timeout_s=PULL_TIMEOUT_S,
        )
        stops = consumers(
            RunStopRequested,
            Durables.agent_stop(agent_id),
            subject=agent_stop_subject(agent_id),
            pull_timeout_s=PULL_TIMEOUT_S,
        )

        @dispatches
        async def on_dispatch(event: JobDispatched) -> None:
            await self.manager.dispatch(event)

        @stops
        async def on_stop(event: RunStopRequested) -> None:
            await self.manager.stop(event)

        register_health(broker, f"{SERVICE}.{agent_id}", self._health_detail)
        return broker

    async def start(self) -> None:
        """End leftovers of a previous life, connect, then consume and send heartbeats."""
        killed = await asyncio.to_thread(self._runtime.kill_leftovers, LEFTOVER_KILL_GRACE_S)
        if killed:
            logger.warning("ended %d process(es) left by a previous run of this agent", killed)
        self.settings.work_root.mkdir(parents=True, exist_ok=True)
        await self.broker.connect()
        # Agents never declare streams (the bus lets only services): wait for the store.
        store = await look_up_staging(self.broker)
        self._manager = RunManager(
            settings=self.settings,
            publish=self._publish,
            store=store,
            runtime=self._runtime,
            flare=self._flare,
            http=self._http,
        )
        await asyncio.to_thread(self._manager.remove_stale_runs)
        await self.broker.start()
        await self._send_heartbeat()  # the scheduler may place work here right away
        self._heartbeat_task = asyncio.create_task(self._heartbeat_loop())
        logger.info(
            "worker-agent %s up: %d slot(s), FL ports %s, work dir %s",
            self.settings.agent_id,
            len(self._inventory.current()),
            self.settings.fl_port_range,
            self.settings.work_root,
        )

    async def stop(self) -> None:
        """Stop every run (EXITED, expected), then leave the bus."""
        if self._heartbeat_task is not None:
            self._heartbeat_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._heartbeat_task
        if self._manager is not None:
            await self._manager.stop_all("worker-agent shutting down")
        await self.broker.stop()
        await self._http.aclose()
        self._inventory.close()

    # --- heartbeats and health --------------------------------------------------------------

    def heartbeat(self) -> WorkerHeartbeat:
        return WorkerHeartbeat(
            agent_id=self.settings.agent_id,
            host=self.settings.agent_host,
            slots=self._inventory.current(),
            fl_port_range=self.settings.fl_port_range,
            running=self._manager.running() if self._manager else [],
            started_at=self._started_at,
        )

    async def _send_heartbeat(self) -> None:
        await self._publish(self.heartbeat())

    async def _heartbeat_loop(self) -> None:
        while True:
            await asyncio.sleep(self.settings.heartbeat_interval_s)
            try:
                await self._send_heartbeat()
            except Exception:
                logger.exception(
                    "heartbeat failed; next one in %s s", self.settings.heartbeat_interval_s
                )

    def _health_detail(self) -> dict[str, Any]:
        return {
            "agent_id": self.settings.agent_id,
            "running": len(self._manager.running()) if self._manager else 0,
            "gpus": self._inventory.has_gpus,
        }

    async def _publish(self, event: Event) -> None:
        await publish(self.broker, event)
