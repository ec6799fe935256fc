"""The gateway's FastAPI application: HTTP routes, bus consumers, lifespan, telemetry.

`create_app(settings)` wires everything onto `app.state` and returns the app; the lifespan
connects the bus (`start_broker`: connect, declare streams, start the read-model consumers)
and stops it on shutdown. Process-wide setup (logging, the tracer provider) is `__main__`'s.
"""

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from importlib.metadata import PackageNotFoundError, version

from fastapi import FastAPI
from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor
from opentelemetry.trace import TracerProvider

from rondo.contracts.bus import make_broker, register_health, start_broker
from rondo.contracts.consumers import DurableConsumers
from rondo.contracts.heartbeats import HeartbeatIntake
from rondo.contracts.storage import platform_s3_client
from rondo.gateway import (
    routes_compat,
    routes_files,
    routes_health,
    routes_jobs,
    routes_logs,
    routes_workers,
)
from rondo.gateway.body_limit import BodySizeLimit
from rondo.gateway.config import SERVICE_NAME, GatewaySettings
from rondo.gateway.dashboard import install_dashboard
from rondo.gateway.db import init_db, make_engine
from rondo.gateway.errors import install_error_handlers
from rondo.gateway.job_logs import JobLogStore, prune_logs_forever, register_log_consumer
from rondo.gateway.models import utc_now
from rondo.gateway.pubsub import JobEventHub
from rondo.gateway.rate_limit import FailedAuthLimiter, TokenBucketLimiter
from rondo.gateway.read_model import register_read_model
from rondo.gateway.secret_box import load_secret_box, seal_unsealed_secrets
from rondo.gateway.storage_admin import make_storage_admin
from rondo.gateway.stream_guard import StreamGuard
from rondo.gateway.submissions import republish_forever
from rondo.gateway.user_files import UserS3Clients
from rondo.gateway.workers import WorkerRegistry

logger = logging.getLogger(__name__)


def _version() -> str:
    try:
        return version("rondo")
    except PackageNotFoundError:
        return "0.0.0"


def create_app(
    settings: GatewaySettings | None = None, *, tracer_provider: TracerProvider | None = None
) -> FastAPI:
    """Build the gateway app. Creates the DB tables; connects to nothing until it starts.

    `tracer_provider` defaults to the global one (`setup_tracing`); tests pass their own.
    """
    settings = settings or GatewaySettings()
    engine = make_engine(settings.database_url)
    init_db(engine)
    secret_box = load_secret_box(settings)
    seal_unsealed_secrets(engine, secret_box)
    broker = make_broker(settings, SERVICE_NAME)
    hub = JobEventHub()
    consumers = DurableConsumers(broker, settings)
    register_read_model(consumers, engine, hub)
    log_store = JobLogStore(engine)
    register_log_consumer(consumers, log_store, hub)
    workers = WorkerRegistry(online_s=settings.gateway_worker_online_s)
    heartbeats = HeartbeatIntake(workers.observe)
    register_health(broker, SERVICE_NAME, detail=lambda: {"sse_listeners": hub.listener_count()})

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        await start_broker(broker, settings)
        await heartbeats.start(broker.connection)
        logger.info("gateway connected to %s", settings.nats_url)
        pruning = asyncio.create_task(
            prune_logs_forever(log_store, settings.gateway_log_retention_days, utc_now)
        )
        outbox = asyncio.create_task(republish_forever(engine, broker, utc_now))
        try:
            yield
        finally:
            pruning.cancel()
            outbox.cancel()
            await heartbeats.stop()
            hub.close()
            await broker.stop()
            engine.dispose()

    app = FastAPI(
        title="Rondo gateway",
        version=_version(),
        description="Submit and watch federated-learning jobs. Authenticate with "
        "`Authorization: Bearer rsk_live_...`.",
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.engine = engine
    app.state.broker = broker
    app.state.s3 = platform_s3_client(settings)
    app.state.hub = hub
    app.state.log_store = log_store
    app.state.workers = workers
    app.state.user_s3 = UserS3Clients(settings)
    app.state.storage_admin = make_storage_admin(settings)
    app.state.secret_box = secret_box
    app.state.rate_limiter = TokenBucketLimiter(
        settings.gateway_rate_limit_per_s, settings.gateway_rate_limit_burst
    )
    app.state.auth_failures = FailedAuthLimiter(
        settings.gateway_auth_failures_per_s, settings.gateway_auth_failure_burst
    )
    app.state.stream_guard = StreamGuard(engine, settings.gateway_stream_auth_check_s)

    install_error_handlers(app)
    app.include_router(routes_health.router)
    app.include_router(routes_jobs.router)
    app.include_router(routes_logs.router)
    app.include_router(routes_files.router)
    app.include_router(routes_workers.router)
    app.include_router(routes_compat.router)
    app.add_middleware(BodySizeLimit, max_bytes=settings.gateway_max_body_bytes)
    install_dashboard(app)
    FastAPIInstrumentor.instrument_app(
        app, tracer_provider=tracer_provider, excluded_urls="/healthz"
    )
    return app
