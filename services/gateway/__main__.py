"""`python -m rondo.gateway`: serve the API with uvicorn, configured by `RONDO_*` variables."""

import asyncio
from collections.abc import Callable
from types import FrameType

import uvicorn

from rondo.contracts.telemetry import setup_logging, setup_tracing
from rondo.gateway.app import create_app
from rondo.gateway.config import SERVICE_NAME, GatewaySettings
from rondo.gateway.pubsub import JobEventHub

# Anything still streaming after this long is cut off on shutdown.
GRACEFUL_SHUTDOWN_S = 5


class GatewayServer(uvicorn.Server):
    """Uvicorn that ends open SSE streams as soon as it is asked to exit.

    Uvicorn waits for open connections before the app's lifespan shutdown runs, and an SSE
    stream never ends by itself: without this, every restart would wait the full graceful
    timeout and then cancel the streams with an error.
    """

    def __init__(self, config: uvicorn.Config, on_exit: Callable[[], None]) -> None:
        super().__init__(config)
        self._on_exit = on_exit

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        # A signal handler: hand the work to the event loop instead of touching it here.
        asyncio.get_running_loop().call_soon_threadsafe(self._on_exit)
        super().handle_exit(sig, frame)


def main() -> None:
    settings = GatewaySettings()
    setup_logging(settings, SERVICE_NAME)
    setup_tracing(settings, SERVICE_NAME)
    app = create_app(settings)
    hub: JobEventHub = app.state.hub
    config = uvicorn.Config(
        app,
        host=settings.gateway_host,
        port=settings.gateway_port,
        log_config=None,  # keep setup_logging's handlers
        timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_S,
    )
    GatewayServer(config, on_exit=hub.close).run()


if __name__ == "__main__":
    main()
