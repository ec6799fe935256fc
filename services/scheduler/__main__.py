"""`python -m rondo.scheduler`: run the scheduler until SIGINT/SIGTERM."""

import asyncio

from rondo.contracts.telemetry import setup_logging, setup_tracing
from rondo.scheduler.config import SchedulerSettings
from rondo.scheduler.service import SERVICE, build_app


def main() -> None:
    settings = SchedulerSettings()
    setup_logging(settings, SERVICE)
    provider = setup_tracing(settings, SERVICE)
    app, _ = build_app(settings)
    try:
        asyncio.run(app.run())
    finally:
        provider.shutdown()


if __name__ == "__main__":
    main()
