"""Users' own S3 keys: minted in the object store, kept in the gateway's database.

A user has at most one active key (`UserS3Key.revoked_at` unset). The store is changed first and
the database after, so a failure leaves at worst an unused key in the store, never a stored key
the store does not know. Secrets are stored sealed (`rondo.gateway.secret_box`); what this
module hands out is opened. Callers commit.
"""

from dataclasses import dataclass

from sqlmodel import Session, col, select

from rondo.gateway.models import User, UserS3Key, utc_now
from rondo.gateway.secret_box import SecretBox
from rondo.gateway.storage_admin import StorageAdmin, identity_name


@dataclass(frozen=True)
class S3Credentials:
    """A user's S3 key as the store knows it (the secret in clear)."""

    access_key_id: str
    secret_access_key: str


def active_s3_key(session: Session, user_id: str) -> UserS3Key | None:
    """The user's current key, or None (a user made before keys existed, or never given one)."""
    statement = (
        select(UserS3Key)
        .where(UserS3Key.user_id == user_id, col(UserS3Key.revoked_at).is_(None))
        .order_by(col(UserS3Key.created_at).desc())
    )
    return session.exec(statement).first()


def active_credentials(session: Session, user_id: str, box: SecretBox) -> S3Credentials | None:
    """The user's current key with its secret opened, or None (see `active_s3_key`)."""
    row = active_s3_key(session, user_id)
    return None if row is None else _opened(row, box)


def _opened(row: UserS3Key, box: SecretBox) -> S3Credentials:
    return S3Credentials(row.access_key_id, box.open(row.secret_access_key))


def _mint(session: Session, user: User, storage: StorageAdmin, box: SecretBox) -> S3Credentials:
    key = storage.create_key(identity_name(user.id), user.bucket)
    session.add(
        UserS3Key(
            user_id=user.id,
            access_key_id=key.access_key_id,
            secret_access_key=box.seal(key.secret_access_key),
        )
    )
    return S3Credentials(key.access_key_id, key.secret_access_key)


def ensure_s3_key(
    session: Session, user: User, storage: StorageAdmin, box: SecretBox
) -> S3Credentials:
    """The user's active key if the store still accepts it; otherwise a new one (a store that
    was reset lost its identities, the database still names them)."""
    current = active_s3_key(session, user.id)
    if current is not None and storage.key_exists(identity_name(user.id), current.access_key_id):
        return _opened(current, box)
    if current is not None:
        current.revoked_at = utc_now()
        session.add(current)
    return _mint(session, user, storage, box)


def rotate_s3_key(
    session: Session, user: User, storage: StorageAdmin, box: SecretBox
) -> tuple[S3Credentials, str]:
    """Mint a new key, then revoke the old one in the store: requests and presigned URLs
    signed with it fail from then on. Returns the new key and the revoked key's id ('' if the
    user had none)."""
    previous = active_s3_key(session, user.id)
    new = _mint(session, user, storage, box)
    if previous is None:
        return new, ""
    storage.delete_key(identity_name(user.id), previous.access_key_id)
    previous.revoked_at = utc_now()
    session.add(previous)
    return new, previous.access_key_id
