"""`python -m rondo.artifacts`: run the artifacts service until SIGINT/SIGTERM."""

import asyncio

from rondo.artifacts.config import ArtifactsSettings
from rondo.artifacts.service import SERVICE, build_service
from rondo.contracts.telemetry import setup_logging, setup_tracing


def main() -> None:
    settings = ArtifactsSettings()
    setup_logging(settings, SERVICE)
    provider = setup_tracing(settings, SERVICE)
    try:
        asyncio.run(build_service(settings).app.run())
    finally:
        provider.shutdown()


if __name__ == "__main__":
    main()
