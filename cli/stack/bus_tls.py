"""Certificates for TLS on the bus: a private CA and one certificate the NATS nodes present.

`python -m rondo.stack.bus_tls OUT_DIR NAME...` writes into OUT_DIR
- `ca.pem`: the CA every Rondo service and agent trusts (`RONDO_NATS_TLS_CA`); public;
- `server.pem` / `server-key.pem`: the nodes' certificate, valid for every NAME (host names
  and IP addresses the clients dial: `nats-1`, the control host's address, ...);
- `ca-key.pem`: the CA's key, kept only to sign a replacement (move it offline).
Keys are written 0600. One certificate for all nodes keeps the deployment to one mount; the
names it carries are exactly the addresses in `RONDO_NATS_URL` on every host.
"""

import argparse
import datetime
import ipaddress
import os
from collections.abc import Sequence
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

CA_VALID_DAYS = 3650
SERVER_VALID_DAYS = 825  # the longest lifetime clients commonly accept for a leaf


def _private_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _write(path: Path, data: bytes, mode: int) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "wb") as out:
        out.write(data)
    os.chmod(path, mode)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def subject_names(names: Sequence[str]) -> list[x509.GeneralName]:
    """Each name as an IP address SAN when it parses as one, else as a DNS name."""
    found: list[x509.GeneralName] = []
    for name in names:
        try:
            found.append(x509.IPAddress(ipaddress.ip_address(name)))
        except ValueError:
            found.append(x509.DNSName(name))
    return found


def write_bus_tls(out_dir: Path, names: Sequence[str]) -> Path:
    """Write a fresh CA and a node certificate for `names` into `out_dir`; returns `ca.pem`."""
    if not names:
        raise ValueError("the node certificate needs at least one host name or address")
    out_dir.mkdir(parents=True, exist_ok=True)
    now = datetime.datetime.now(datetime.UTC)
    start = now - datetime.timedelta(minutes=5)  # clocks of other hosts may lag a little

    ca_key = _private_key()
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Rondo bus CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(now + datetime.timedelta(days=CA_VALID_DAYS))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), False)
        .sign(ca_key, hashes.SHA256())
    )

    key = _private_key()
    server = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(now + datetime.timedelta(days=SERVER_VALID_DAYS))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.SubjectAlternativeName(subject_names(names)), critical=False)
        .add_extension(
            # Server auth for clients; client auth too, so the same certificate can secure the
            # cluster routes, where each node is the other's client.
            x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
            ),
            critical=False,
        )
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), False
        )
        .sign(ca_key, hashes.SHA256())
    )

    _write(out_dir / "ca-key.pem", _key_pem(ca_key), 0o600)
    _write(out_dir / "server-key.pem", _key_pem(key), 0o600)
    _write(out_dir / "server.pem", server.public_bytes(serialization.Encoding.PEM), 0o644)
    ca_path = out_dir / "ca.pem"
    _write(ca_path, ca.public_bytes(serialization.Encoding.PEM), 0o644)
    return ca_path


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m rondo.stack.bus_tls",
        description="A CA and the NATS nodes' certificate (see the module's docstring).",
    )
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("names", nargs="+", help="host names and IP addresses clients dial")
    args = parser.parse_args(argv)
    write_bus_tls(args.out_dir, args.names)
    print(f"wrote {args.out_dir}/ca.pem, server.pem, server-key.pem, ca-key.pem")


if __name__ == "__main__":
    main()
