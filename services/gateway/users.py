"""User administration behind the operator commands: users, API keys, S3 identities.

Each function takes a session and commits its own change. API keys are shown once (only their
hash is stored); a user's S3 key reaches their bucket only and is kept so the gateway can sign
their presigned URLs (`rondo.gateway.s3_keys`).

One bucket per user, one user per bucket. User names are unique case-insensitively (`Default`
is `default`); bucket names are lower-cased. A new user's bucket is refused, with an error that
says to pass `--bucket`, when it is the platform's bucket, another user's, or already in the
object store without being a Rondo user's (it may hold anyone's data). A default bucket derived
from the name (`rondo-<name>`) that collides is refused the same way, never renamed behind the
operator's back: the bucket name is what the user types, so it must be the one they are told.
"""

import logging
import re
from datetime import datetime

from pydantic import BaseModel
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select

from rondo.gateway.auth import (
    KEY_PREFIXES,
    LIVE_PREFIX,
    api_key_record,
    generate_api_key,
    hash_api_key,
    is_well_formed_key,
)
from rondo.gateway.models import ApiKey, User, user_name_key, utc_now
from rondo.gateway.s3_keys import active_s3_key, ensure_s3_key, rotate_s3_key
from rondo.gateway.secret_box import SecretBox
from rondo.gateway.storage_admin import BucketExists, StorageAdmin, StorageAdminError

logger = logging.getLogger(__name__)

USER_NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}$")
BUCKET_PATTERN = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
DEFAULT_BUCKET_PREFIX = "rondo-"
# `rsk_live_` and a few random characters: enough to tell a user's keys apart.
MIN_REVOKE_PREFIX_CHARS = 11


class ManageError(Exception):
    """A refused operator command; the message says why."""


class CreatedUser(BaseModel):
    user_id: str
    name: str
    api_key: str
    bucket: str


class NewUser(CreatedUser):
    """A user ready to work: API key, bucket, and the S3 key that reaches only that bucket."""

    s3_access_key: str
    s3_secret_key: str


class ApiKeyInfo(BaseModel):
    prefix: str
    created_at: datetime
    revoked_at: datetime | None


class UserSummary(BaseModel):
    user_id: str
    name: str
    bucket: str
    created_at: datetime
    api_keys: list[ApiKeyInfo]
    s3_access_key: str | None


class MintedKey(BaseModel):
    name: str
    api_key: str


class RevokedKeys(BaseModel):
    name: str
    revoked: list[str]


class RotatedS3Key(BaseModel):
    name: str
    bucket: str
    s3_access_key: str
    s3_secret_key: str
    revoked_access_key: str


PASS_BUCKET = "pass --bucket NAME with a new bucket name for this user"


def normalise_bucket(bucket: str) -> str:
    """S3 bucket names are lower case: `Rondo-Ada` means `rondo-ada`."""
    return bucket.strip().lower()


def _check_names(name: str, bucket: str) -> None:
    if not USER_NAME_PATTERN.match(name):
        raise ManageError(f"invalid user name {name!r} (letters, digits, _ . @ -; max 64)")
    if not BUCKET_PATTERN.match(bucket) or ".." in bucket:
        raise ManageError(f"invalid bucket name {bucket!r} (S3 rules: a-z 0-9 . -, 3-63 chars)")


def default_bucket(name: str) -> str:
    """`rondo-<name>` with the name made a valid bucket name (lower case, `-` for the rest).

    Different names can give one bucket (`alice@corp.com`, `alice.corp.com`): the second user
    is then refused (`add_user`) and needs `--bucket`."""
    slug = re.sub(r"[^a-z0-9-]+", "-", name.lower()).strip("-")
    return (DEFAULT_BUCKET_PREFIX + slug)[:63].rstrip("-")


def _find_user(session: Session, name: str) -> User | None:
    return session.exec(select(User).where(User.name_key == user_name_key(name))).first()


def _user_named(session: Session, name: str) -> User:
    user = _find_user(session, name)
    if user is None:
        raise ManageError(f"no user named {name} (rondo users list shows them)")
    return user


def _bucket_owner(session: Session, bucket: str) -> User | None:
    return session.exec(select(User).where(User.bucket == bucket)).first()


def check_bucket_free(session: Session, bucket: str, platform_bucket: str) -> None:
    """Raise `ManageError` when `bucket` cannot be a new user's: it is the platform's bucket
    (every job's startup kits) or already another user's. The store is asked separately
    (`add_user`), for buckets that exist outside Rondo."""
    if bucket == normalise_bucket(platform_bucket):
        raise ManageError(
            f"bucket {bucket} is the platform's own bucket (it holds every job's startup kits) "
            f"and is never a user's; {PASS_BUCKET}"
        )
    owner = _bucket_owner(session, bucket)
    if owner is not None:
        raise ManageError(f"bucket {bucket} is already user {owner.name}'s; {PASS_BUCKET}")


def create_user(
    session: Session, name: str, bucket: str, api_key: str | None = None
) -> CreatedUser:
    """Create a user with an API key (minted unless given) and commit. The bucket and S3 key
    are `add_user`'s.

    Idempotent when `api_key` is given: an existing user with the same bucket gets that key
    (if it has not already) and the same answer. Raises `ManageError` for an existing user
    without `api_key` (its keys cannot be shown again), a different bucket, a malformed key,
    a key that belongs to someone else, or a new user whose bucket is another user's. Names
    match case-insensitively; the bucket is lower-cased.
    """
    bucket = normalise_bucket(bucket)
    _check_names(name, bucket)
    if api_key is not None and not is_well_formed_key(api_key):
        raise ManageError("--api-key must look like rsk_live_<random> or rsk_dev_<random>")

    key_row = (
        session.exec(select(ApiKey).where(ApiKey.key_hash == hash_api_key(api_key))).first()
        if api_key is not None
        else None
    )
    user = _find_user(session, name)
    if user is not None:
        if api_key is None:
            raise ManageError(
                f"user {user.name} exists (names are case-insensitive); its API keys are "
                "stored hashed and cannot be shown again (pass --api-key to re-register a key "
                "you hold, or pick another name)"
            )
        if user.bucket != bucket:
            raise ManageError(f"user {user.name} exists with bucket {user.bucket}, not {bucket}")
    if key_row is not None and (user is None or key_row.user_id != user.id):
        raise ManageError("that API key belongs to another user")
    if key_row is not None and key_row.revoked_at is not None:
        raise ManageError("that API key was revoked; mint a new one")

    if user is None:
        owner = _bucket_owner(session, bucket)
        if owner is not None:
            raise ManageError(f"bucket {bucket} is already user {owner.name}'s; {PASS_BUCKET}")
        user = User(name=name, bucket=bucket)  # name_key: filled in on insert
        session.add(user)
        try:
            session.flush()  # the key row references the user
        except IntegrityError:
            # Another command created the same name or bucket between our check and here.
            session.rollback()
            raise ManageError(
                f"user {name} or bucket {bucket} was just taken by another command; "
                f"run this again to see which ({PASS_BUCKET} if it is the bucket)"
            ) from None
    key = api_key or generate_api_key()
    if key_row is None:
        session.add(api_key_record(user.id, key))
    session.commit()
    return CreatedUser(user_id=user.id, name=user.name, api_key=key, bucket=user.bucket)


def add_user(
    session: Session,
    storage: StorageAdmin,
    box: SecretBox,
    name: str,
    bucket: str,
    api_key: str | None = None,
    *,
    platform_bucket: str,
) -> NewUser:
    """`create_user`, plus the user's bucket and S3 key.

    A new user's bucket must be new: refused (`ManageError`, saying to pass `--bucket`) when it
    is `platform_bucket`, another user's, or already in the store. An existing user's bucket
    is created again if missing, never emptied.

    Idempotent like `create_user` when `api_key` is given: the answer repeats the stored S3
    key while the store still accepts it (a new one otherwise). A refused command leaves the
    store as it was; when the store fails, a user this call created is removed again, with the
    empty bucket it made, so the same command can simply be run again.
    """
    bucket = normalise_bucket(bucket)
    existed = _find_user(session, name) is not None
    if not existed:
        _check_names(name, bucket)
        check_bucket_free(session, bucket, platform_bucket)
    created = create_user(session, name, bucket, api_key)
    user = session.get(User, created.user_id)
    assert user is not None
    bucket_made = False
    try:
        if existed:
            storage.ensure_bucket(bucket)
        else:
            storage.create_bucket(bucket)
            bucket_made = True
        s3_key = ensure_s3_key(session, user, storage, box)
        session.commit()
    except (StorageAdminError, BucketExists) as error:
        session.rollback()
        if not existed:
            session.delete(user)
            session.commit()
            if bucket_made:
                _remove_new_bucket(storage, bucket)
        if isinstance(error, BucketExists):
            raise ManageError(
                f"bucket {bucket} already exists in the object store and is no Rondo user's: "
                f"it may hold someone else's data, so it is not handed out; {PASS_BUCKET}"
            ) from None
        raise
    return NewUser(
        **created.model_dump(),
        s3_access_key=s3_key.access_key_id,
        s3_secret_key=s3_key.secret_access_key,
    )


def _remove_new_bucket(storage: StorageAdmin, bucket: str) -> None:
    """Undo a bucket this command made (still empty) so that running it again succeeds."""
    try:
        storage.delete_bucket(bucket)
    except StorageAdminError as error:
        logger.warning("could not remove the new bucket %s again: %s", bucket, error)


def list_users(session: Session) -> list[UserSummary]:
    """Every user by name, with their API keys (prefixes only) and current S3 key id."""
    users = session.exec(select(User).order_by(col(User.name))).all()
    summaries = []
    for user in users:
        keys = session.exec(
            select(ApiKey).where(ApiKey.user_id == user.id).order_by(col(ApiKey.created_at))
        ).all()
        s3_key = active_s3_key(session, user.id)
        summaries.append(
            UserSummary(
                user_id=user.id,
                name=user.name,
                bucket=user.bucket,
                created_at=user.created_at,
                api_keys=[
                    ApiKeyInfo(
                        prefix=key.display_prefix,
                        created_at=key.created_at,
                        revoked_at=key.revoked_at,
                    )
                    for key in keys
                ],
                s3_access_key=s3_key.access_key_id if s3_key else None,
            )
        )
    return summaries


def add_api_key(session: Session, name: str, prefix: str = LIVE_PREFIX) -> MintedKey:
    """Mint another API key for the user (shown only in this answer)."""
    if prefix not in KEY_PREFIXES:
        raise ManageError(f"an API key prefix is one of {', '.join(KEY_PREFIXES)}")
    user = _user_named(session, name)
    key = generate_api_key(prefix)
    session.add(api_key_record(user.id, key))
    session.commit()
    return MintedKey(name=user.name, api_key=key)


def revoke_api_keys(session: Session, name: str, key_or_prefix: str | None) -> RevokedKeys:
    """Revoke one of the user's active API keys, named by the whole key or by the prefix
    `rondo users list` shows; all of them when `key_or_prefix` is None. Requests with a revoked
    key get 401 from then on. Raises `ManageError` when no key, or more than one, matches."""
    user = _user_named(session, name)
    keys = session.exec(
        select(ApiKey).where(ApiKey.user_id == user.id, col(ApiKey.revoked_at).is_(None))
    ).all()
    if key_or_prefix is None:
        matching = list(keys)
    elif is_well_formed_key(key_or_prefix):
        matching = [key for key in keys if key.key_hash == hash_api_key(key_or_prefix)]
    elif len(key_or_prefix) < MIN_REVOKE_PREFIX_CHARS:
        raise ManageError(
            f"give the key's first {MIN_REVOKE_PREFIX_CHARS} characters or more "
            "(rondo users list shows them)"
        )
    else:
        matching = [key for key in keys if key.display_prefix.startswith(key_or_prefix)]
    if not matching:
        raise ManageError(f"user {name} has no active API key {key_or_prefix or ''}".rstrip())
    if key_or_prefix is not None and len(matching) > 1:
        raise ManageError(f"{key_or_prefix} names {len(matching)} keys; give the whole key")
    now = utc_now()
    for key in matching:
        key.revoked_at = now
        session.add(key)
    session.commit()
    return RevokedKeys(name=user.name, revoked=[key.display_prefix for key in matching])


def rotate_user_s3_key(
    session: Session, storage: StorageAdmin, box: SecretBox, name: str
) -> RotatedS3Key:
    """Give the user a new S3 key and revoke the old one in the store at once (presigned URLs
    signed with it stop working)."""
    user = _user_named(session, name)
    new, revoked = rotate_s3_key(session, user, storage, box)
    session.commit()
    return RotatedS3Key(
        name=user.name,
        bucket=user.bucket,
        s3_access_key=new.access_key_id,
        s3_secret_key=new.secret_access_key,
        revoked_access_key=revoked,
    )
