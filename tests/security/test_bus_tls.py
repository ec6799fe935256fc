"""TLS on the bus's client port (compose, issue 12): the certificates `rondo.stack.bus_tls`
makes, a real nats-server requiring TLS with them and the auth config, and Rondo's own clients
(`make_broker`, `connect_options`) trusting only `RONDO_NATS_TLS_CA`. A server presenting a
certificate of any other CA (an impostor on the network path) is refused before a password
is sent; the test fails if the clients stop verifying (checked once with CERT_NONE).
"""

import asyncio
import secrets
import ssl
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import nats
import pytest

from rondo.contracts.bus import connect_options, declare_streams, make_broker, tls_context
from rondo.contracts.bus_permissions import OPERATOR
from rondo.contracts.config import ServiceSettings
from rondo.stack.bus_auth import write_auth_config
from rondo.stack.bus_tls import write_bus_tls
from rondo.stack.servers import NatsServer

HOST = "127.0.0.1"


@dataclass
class TlsNatsServer(NatsServer):
    """A NatsServer that requires TLS on its client port with `cert_dir`'s certificate."""

    cert_dir: Path = Path()

    def argv(self) -> list[str]:
        return [
            *super().argv(),
            "--tls",
            f"--tlscert={self.cert_dir / 'server.pem'}",
            f"--tlskey={self.cert_dir / 'server-key.pem'}",
        ]

    @property
    def tls_url(self) -> str:
        return f"tls://{self.host}:{self.port}"


@pytest.fixture(scope="module")
def passwords() -> dict[str, str]:
    return {identity: secrets.token_urlsafe(32) for identity in ("scheduler", OPERATOR)}


def start_server(folder: Path, passwords: dict[str, str], names: list[str]) -> TlsNatsServer:
    cert_dir = folder / "tls"
    write_bus_tls(cert_dir, names)
    config = write_auth_config(folder / "nats-auth.conf", passwords)
    server = TlsNatsServer(store_dir=folder / "nats", config_file=config, cert_dir=cert_dir)
    server.start(folder / "nats.log")
    return server


@pytest.fixture(scope="module")
def bus(tmp_path_factory: pytest.TempPathFactory, passwords: dict[str, str]) -> Iterator[Path]:
    """The deployment's server; yields its folder (tls/ca.pem is what clients trust)."""
    folder = tmp_path_factory.mktemp("bus-tls")
    server = start_server(folder, passwords, ["nats-1", HOST])
    (folder / "url").write_text(server.tls_url)
    yield folder
    server.stop()


@pytest.fixture(scope="module")
def impostor(tmp_path_factory: pytest.TempPathFactory, passwords: dict[str, str]) -> Iterator[str]:
    """A server with a certificate for the same names from another CA; yields its URL."""
    folder = tmp_path_factory.mktemp("bus-tls-impostor")
    server = start_server(folder, passwords, ["nats-1", HOST])
    yield server.tls_url
    server.stop()


def settings(url: str, ca: Path, passwords: dict[str, str]) -> ServiceSettings:
    return ServiceSettings(
        nats_url=url, nats_user="scheduler", nats_password=passwords["scheduler"], nats_tls_ca=ca
    )


def test_the_generated_keys_are_private_and_the_certificate_names_every_address(
    tmp_path: Path,
) -> None:
    write_bus_tls(tmp_path, ["nats-1", "10.0.0.10"])
    for key in ("ca-key.pem", "server-key.pem"):
        assert (tmp_path / key).stat().st_mode & 0o777 == 0o600, key
    text = subprocess.run(
        ["openssl", "x509", "-noout", "-text", "-in", str(tmp_path / "server.pem")],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "DNS:nats-1" in text and "IP Address:10.0.0.10" in text, text


async def test_a_service_connects_over_tls_trusting_the_deployment_ca(
    bus: Path, passwords: dict[str, str]
) -> None:
    service = settings((bus / "url").read_text(), bus / "tls" / "ca.pem", passwords)
    broker = make_broker(service, "scheduler")
    await broker.connect()
    try:
        await declare_streams(broker, replicas=1)  # JetStream works through TLS
    finally:
        await broker.stop()
    client = await nats.connect(service.nats_servers, **connect_options(service))
    try:
        assert client.is_connected and client.connected_url is not None
        assert client.connected_url.scheme == "tls"
    finally:
        await client.close()


async def test_a_server_with_another_ca_certificate_is_refused(
    bus: Path, impostor: str, passwords: dict[str, str]
) -> None:
    service = settings(impostor, bus / "tls" / "ca.pem", passwords)
    with pytest.raises(ssl.SSLCertVerificationError):
        await asyncio.wait_for(
            nats.connect(
                service.nats_servers,
                allow_reconnect=False,
                max_reconnect_attempts=0,
                **connect_options(service),
            ),
            timeout=10,
        )


def test_the_context_verifies_the_server_and_its_name(bus: Path) -> None:
    context = tls_context(ServiceSettings(nats_tls_ca=bus / "tls" / "ca.pem"))
    assert context is not None
    assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname
    assert tls_context(ServiceSettings(nats_url="nats://a:4222")) is None
    system = tls_context(ServiceSettings(nats_url="tls://a:4222"))
    assert system is not None and system.verify_mode == ssl.CERT_REQUIRED
