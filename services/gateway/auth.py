"""API keys: minting, hashing at rest, and resolving a Bearer header to its user.

A key is `rsk_live_<random>` (or `rsk_dev_<random>`); only its SHA-256 is stored, so the key
itself is shown once, when it is created.
"""

import hashlib
import secrets

from sqlmodel import Session, select

from rondo.gateway.errors import unauthorized
from rondo.gateway.models import ApiKey, User

LIVE_PREFIX = "rsk_live_"
DEV_PREFIX = "rsk_dev_"
KEY_PREFIXES = (LIVE_PREFIX, DEV_PREFIX)
DISPLAY_PREFIX_CHARS = 13
_MIN_SECRET_CHARS = 16


def generate_api_key(prefix: str = LIVE_PREFIX) -> str:
    """A new random key (256 bits, URL-safe)."""
    if prefix not in KEY_PREFIXES:
        raise ValueError(f"API key prefix must be one of {KEY_PREFIXES}")
    return prefix + secrets.token_urlsafe(32)


def is_well_formed_key(key: str) -> bool:
    """A known prefix followed by enough URL-safe characters."""
    for prefix in KEY_PREFIXES:
        if key.startswith(prefix):
            rest = key[len(prefix) :]
            return len(rest) >= _MIN_SECRET_CHARS and all(c.isalnum() or c in "-_" for c in rest)
    return False


def hash_api_key(key: str) -> str:
    """What is stored: sha256 hex of the full key."""
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def api_key_record(user_id: str, key: str) -> ApiKey:
    """The row to store for a freshly minted (or operator-supplied) key."""
    return ApiKey(
        user_id=user_id, key_hash=hash_api_key(key), display_prefix=key[:DISPLAY_PREFIX_CHARS]
    )


def bearer_token(authorization: str | None) -> str:
    """The key in an `Authorization: Bearer <key>` header.

    Raises 401 `malformed_bearer` when the header is missing or not a Bearer credential.
    """
    if not authorization:
        raise unauthorized(
            "malformed_bearer",
            "the Authorization header is missing",
            "send 'Authorization: Bearer rsk_live_...'",
        )
    scheme, _, token = authorization.strip().partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token or " " in token:
        raise unauthorized(
            "malformed_bearer",
            "the Authorization header must be 'Bearer <api key>'",
            "send 'Authorization: Bearer rsk_live_...'",
        )
    return token


def authenticate(session: Session, key: str) -> User:
    """The user owning an active key. Raises 401 `invalid_api_key` otherwise."""
    if not is_well_formed_key(key):
        raise unauthorized(
            "invalid_api_key",
            "the API key is not a Rondo key (expected rsk_live_... or rsk_dev_...)",
            "copy the whole key the operator gave you",
        )
    statement = (
        select(User)
        .join(ApiKey)
        .where(ApiKey.key_hash == hash_api_key(key), ApiKey.revoked_at.is_(None))  # type: ignore[union-attr]
    )
    user = session.exec(statement).first()
    if user is None:
        raise unauthorized(
            "invalid_api_key",
            "the API key is unknown or revoked",
            "ask the operator for a new key",
        )
    return user
