"""Users' own S3 keys: minted in the object store, kept in the gateway's database.

A user has at most one active key (`UserS3Key.revoked_at` unset). The store is changed first and
the database after, so a failure leaves at worst an unused key in the store, never a stored key
the store does not know. Callers commit.
"""

from sqlmodel import Session, col, select

from rondo.gateway.models import User, UserS3Key, utc_now
from rondo.gateway.storage_admin import StorageAdmin, identity_name


def active_s3_key(session: Session, user_id: str) -> UserS3Key | None:
    """The user's current key, or None (a user made before keys existed, or never given one)."""
    statement = (
        select(UserS3Key)
        .where(UserS3Key.user_id == user_id, col(UserS3Key.revoked_at).is_(None))
        .order_by(col(UserS3Key.created_at).desc())
    )
    return session.exec(statement).first()


def _mint(session: Session, user: User, storage: StorageAdmin) -> UserS3Key:
    key = storage.create_key(identity_name(user.id), user.bucket)
    row = UserS3Key(
        user_id=user.id,
        access_key_id=key.access_key_id,
        secret_access_key=key.secret_access_key,
    )
    session.add(row)
    return row


def ensure_s3_key(session: Session, user: User, storage: StorageAdmin) -> UserS3Key:
    """The user's active key if the store still accepts it; otherwise a new one (a store that
    was reset lost its identities, the database still names them)."""
    current = active_s3_key(session, user.id)
    if current is not None and storage.key_exists(identity_name(user.id), current.access_key_id):
        return current
    if current is not None:
        current.revoked_at = utc_now()
        session.add(current)
    return _mint(session, user, storage)


def rotate_s3_key(session: Session, user: User, storage: StorageAdmin) -> tuple[UserS3Key, str]:
    """Mint a new key, then revoke the old one in the store: requests and presigned URLs
    signed with it fail from then on. Returns the new key and the revoked key's id ('' if the
    user had none)."""
    previous = active_s3_key(session, user.id)
    new = _mint(session, user, storage)
    if previous is None:
        return new, ""
    storage.delete_key(identity_name(user.id), previous.access_key_id)
    previous.revoked_at = utc_now()
    session.add(previous)
    return new, previous.access_key_id
