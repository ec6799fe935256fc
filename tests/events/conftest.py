"""Fixtures of the event-policy tests: a nats-server of each module's own (its durable
consumers never meet those of other tests), settings with short retry delays, a broker that
watches subjects."""

from collections.abc import AsyncIterator, Iterator

import pytest
from events_helpers import Watcher

from rondo.contracts.bus import declare_streams, make_broker
from rondo.contracts.config import ServiceSettings
from rondo.stack.servers import NatsServer

RETRY_DELAY_S = 0.2
MAX_RETRY_DELAY_S = 0.5


@pytest.fixture(scope="module")
def own_nats(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NatsServer]:
    root = tmp_path_factory.mktemp("events-nats")
    server = NatsServer(store_dir=root / "store")
    server.start(root / "nats.log")
    yield server
    server.stop()


@pytest.fixture(scope="module")
def events_settings(
    own_nats: NatsServer,
    service_settings: ServiceSettings,
    tmp_path_factory: pytest.TempPathFactory,
) -> ServiceSettings:
    """The session's settings (S3, credentials) on this module's nats-server."""
    values = service_settings.model_dump()
    values |= {
        "nats_url": own_nats.url,
        "data_dir": tmp_path_factory.mktemp("events-data"),
        "consumer_retry_delay_s": RETRY_DELAY_S,
        "consumer_max_retry_delay_s": MAX_RETRY_DELAY_S,
    }
    return ServiceSettings(**values)


@pytest.fixture
async def watcher(events_settings: ServiceSettings) -> AsyncIterator[Watcher]:
    broker = make_broker(events_settings, "test-watcher")
    await broker.connect()
    await declare_streams(broker, replicas=1)
    yield Watcher(broker)
    await broker.stop()
