"""`python -m rondo.worker_agent`: run one worker-agent until SIGTERM/SIGINT.

Configured only by environment variables (see `config.AgentSettings`).
"""

import asyncio
import logging
import signal

from rondo.contracts.telemetry import setup_logging, setup_tracing
from rondo.worker_agent.agent import SERVICE, WorkerAgent
from rondo.worker_agent.config import AgentSettings

logger = logging.getLogger("rondo.worker_agent")


async def serve(settings: AgentSettings) -> None:
    """Start the agent, wait for a termination signal, then stop every run and leave."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    agent = WorkerAgent(settings)
    await agent.start()
    try:
        await stop.wait()
    finally:
        logger.info("worker-agent %s stopping", settings.agent_id)
        await agent.stop()


def main() -> None:
    settings = AgentSettings()
    setup_logging(settings, SERVICE, instance=settings.agent_id)
    provider = setup_tracing(settings, SERVICE)
    try:
        asyncio.run(serve(settings))
    finally:
        provider.shutdown()


if __name__ == "__main__":
    main()
