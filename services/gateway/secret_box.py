"""Users' S3 secrets at rest: sealed with Fernet (AES-128-CBC + HMAC-SHA256) in the database.

The gateway must keep each user's S3 secret (it signs their presigned URLs with it), so a copy
of its database alone must not give away every bucket. The key comes from
`RONDO_GATEWAY_SECRETS_KEY` (what a deployment with a shared database sets, the same on every
gateway), else from `<data dir>/gateway-secrets.key`, made on first use and readable by its
owner only. A sealed value is `fernet:<token>`; a value without the prefix was stored before
secrets were sealed, is read as is, and is sealed when the gateway starts.
"""

import os
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken
from sqlalchemy import Engine
from sqlmodel import Session, col, select

from rondo.gateway.config import GatewaySettings
from rondo.gateway.models import UserS3Key

SEALED_PREFIX = "fernet:"
KEY_FILE = "gateway-secrets.key"


class SecretKeyError(RuntimeError):
    """The secrets key is unusable, or does not open what the database holds."""


class SecretBox:
    """Seals and opens secrets with one Fernet key."""

    def __init__(self, key: str | bytes) -> None:
        try:
            self._fernet = Fernet(key)
        except ValueError as error:
            raise SecretKeyError(
                "RONDO_GATEWAY_SECRETS_KEY must be 32 url-safe base64-encoded bytes; make one "
                'with: python -c "from cryptography.fernet import Fernet; '
                'print(Fernet.generate_key().decode())"'
            ) from error

    def seal(self, secret: str) -> str:
        return SEALED_PREFIX + self._fernet.encrypt(secret.encode()).decode()

    def open(self, stored: str) -> str:
        """The secret `seal` made `stored` from; a value stored unsealed comes back as is."""
        if not stored.startswith(SEALED_PREFIX):
            return stored
        try:
            return self._fernet.decrypt(stored.removeprefix(SEALED_PREFIX)).decode()
        except InvalidToken as error:
            raise SecretKeyError(
                "a stored S3 secret does not open with this secrets key: start the gateway "
                "with the RONDO_GATEWAY_SECRETS_KEY (or key file) it sealed them with"
            ) from error


def load_secret_box(settings: GatewaySettings) -> SecretBox:
    """The box for the configured key, or for the data dir's key file (made if missing)."""
    if settings.gateway_secrets_key:
        return SecretBox(settings.gateway_secrets_key)
    path = settings.data_dir / KEY_FILE
    if not path.exists():
        _write_new_key(path)
    return SecretBox(path.read_bytes().strip())


def seal_unsealed_secrets(engine: Engine, box: SecretBox) -> int:
    """Seal every S3 secret stored before sealing existed; returns how many were sealed."""
    with Session(engine) as session:
        rows = session.exec(
            select(UserS3Key).where(col(UserS3Key.secret_access_key).not_like(SEALED_PREFIX + "%"))
        ).all()
        for row in rows:
            row.secret_access_key = box.seal(row.secret_access_key)
            session.add(row)
        session.commit()
        return len(rows)


def _write_new_key(path: Path) -> None:
    """Write a new key to `path` unless it exists. The key appears there whole or not at all
    (linked from a private temporary file): of two processes starting together, one key wins
    and both read it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    draft = path.with_name(f".{path.name}.{os.getpid()}")
    descriptor = os.open(draft, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "wb") as key_file:
        key_file.write(Fernet.generate_key() + b"\n")
    try:
        os.link(draft, path)
    except FileExistsError:
        pass
    finally:
        draft.unlink()
