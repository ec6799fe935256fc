"""The nats-server configuration file that makes the bus authenticated and permissioned.

One user per bus identity (`rondo.contracts.bus_permissions`), each with its permissions and
only a bcrypt hash of its password: the passwords themselves live in the stack's state file
(0600) and reach each service through its environment, never a command line (argv is
world-readable in /proc). The file is written 0600 and passed with `nats-server -c`; every
other server option stays on the command line.
"""

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import bcrypt

from rondo.contracts.bus_permissions import permissions_for

# The passwords are 256-bit random tokens, so the hash's work factor guards nothing a guess
# could find; it stays low because nats-server checks it on every connect.
BCRYPT_COST = 8


def password_hash(password: str, cost: int = BCRYPT_COST) -> str:
    """A bcrypt hash nats-server accepts in place of a password."""
    return bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds=cost)).decode()


def auth_config(passwords: Mapping[str, str]) -> dict[str, Any]:
    """The `authorization` block: every identity with its hashed password and permissions."""
    users = [
        {
            "user": identity,
            "password": password_hash(password),
            "permissions": permissions_for(identity).config(),
        }
        for identity, password in sorted(passwords.items())
    ]
    return {"authorization": {"users": users}}


def write_auth_config(path: Path, passwords: Mapping[str, str]) -> Path:
    """Write the config file (JSON, which nats-server's format accepts), mode 0600."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        json.dump(auth_config(passwords), out, indent=2)
    os.chmod(path, 0o600)
    return path


def write_identity_env(path: Path, identity: str, password: str) -> Path:
    """An env file (mode 0600) with one identity's `RONDO_NATS_USER` / `RONDO_NATS_PASSWORD`,
    for a deployment that hands each container its own (compose `env_file:`)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        out.write(f"RONDO_NATS_USER={identity}\nRONDO_NATS_PASSWORD={password}\n")
    os.chmod(path, 0o600)
    return path


def main(argv: list[str] | None = None) -> None:
    """`python -m rondo.stack.bus_auth OUT_DIR AGENT_ID...`: fresh passwords for the services,
    the operator and each agent; writes OUT_DIR/nats-auth.conf (hashes only) and one
    OUT_DIR/<identity>.env per identity, all 0600 (see deploy/compose/nats-auth.conf.example)."""
    import argparse
    import secrets

    from rondo.contracts.bus_permissions import OPERATOR, SERVICES, agent_identity

    parser = argparse.ArgumentParser(prog="python -m rondo.stack.bus_auth")
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("agent_ids", nargs="*")
    args = parser.parse_args(argv)
    identities = [*SERVICES, *(agent_identity(a) for a in args.agent_ids), OPERATOR]
    passwords = {identity: secrets.token_urlsafe(32) for identity in identities}
    write_auth_config(args.out_dir / "nats-auth.conf", passwords)
    for identity, password in passwords.items():
        write_identity_env(args.out_dir / f"{identity}.env", identity, password)
    print(f"wrote {args.out_dir}/nats-auth.conf and {len(passwords)} env files")


if __name__ == "__main__":
    main()
