"""FastAPI dependencies: settings, DB session, current user and job, bus, S3, event hub.

Collaborators live on `app.state` (set by `app.create_app`), so one process may host several
apps (tests) and nothing is a module global.
"""

from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, Request, Security, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from faststream.nats import NatsBroker
from sqlalchemy import Engine
from sqlmodel import Session

from rondo.contracts.storage import S3Client
from rondo.gateway.auth import authenticate, bearer_token, hash_api_key
from rondo.gateway.config import GatewaySettings
from rondo.gateway.errors import ApiError, not_found
from rondo.gateway.jobs import get_user_job
from rondo.gateway.models import Job, User
from rondo.gateway.pubsub import JobEventHub
from rondo.gateway.rate_limit import FailedAuthLimiter, TokenBucketLimiter
from rondo.gateway.s3_keys import active_credentials
from rondo.gateway.secret_box import SecretBox
from rondo.gateway.stream_guard import StreamGuard
from rondo.gateway.user_files import UserFiles, UserS3Clients

# Documents the scheme in OpenAPI; the header itself is parsed by `bearer_token` so that a
# missing or malformed header gets our own error codes.
bearer_scheme = HTTPBearer(auto_error=False, description="API key: rsk_live_... or rsk_dev_...")


def get_settings(request: Request) -> GatewaySettings:
    settings: GatewaySettings = request.app.state.settings
    return settings


def get_engine(request: Request) -> Engine:
    engine: Engine = request.app.state.engine
    return engine


def get_session(engine: Annotated[Engine, Depends(get_engine)]) -> Iterator[Session]:
    """One session per request, closed when the request ends."""
    with Session(engine) as session:
        yield session


def get_broker(request: Request) -> NatsBroker:
    broker: NatsBroker = request.app.state.broker
    return broker


def get_s3(request: Request) -> S3Client:
    s3: S3Client = request.app.state.s3
    return s3


def get_hub(request: Request) -> JobEventHub:
    hub: JobEventHub = request.app.state.hub
    return hub


def get_stream_guard(request: Request) -> StreamGuard:
    guard: StreamGuard = request.app.state.stream_guard
    return guard


SettingsDep = Annotated[GatewaySettings, Depends(get_settings)]
SessionDep = Annotated[Session, Depends(get_session)]
BrokerDep = Annotated[NatsBroker, Depends(get_broker)]
S3Dep = Annotated[S3Client, Depends(get_s3)]
HubDep = Annotated[JobEventHub, Depends(get_hub)]
StreamGuardDep = Annotated[StreamGuard, Depends(get_stream_guard)]


def client_address(request: Request) -> str:
    """The peer's address as uvicorn reports it (see `rate_limit` on proxies)."""
    return request.client.host if request.client else "unknown"


def get_current_user(
    request: Request,
    session: SessionDep,
    _credentials: Annotated[HTTPAuthorizationCredentials | None, Security(bearer_scheme)],
) -> User:
    """The user of the request's API key; 401 `malformed_bearer` / `invalid_api_key`, 429
    `auth_rate_limited` (this client address sent too many refused keys) or `rate_limited`
    (this key is over its rate). Both limits are checked before the key is looked up, so a
    flood costs no query."""
    key = bearer_token(request.headers.get("Authorization"))
    address = client_address(request)
    failures: FailedAuthLimiter = request.app.state.auth_failures
    failures.check(address)
    limiter: TokenBucketLimiter = request.app.state.rate_limiter
    limiter.check(hash_api_key(key))
    try:
        return authenticate(session, key)
    except ApiError as error:
        if error.status_code == status.HTTP_401_UNAUTHORIZED:
            failures.record_failure(address)
        raise


CurrentUser = Annotated[User, Depends(get_current_user)]


def get_api_key_hash(request: Request, _user: CurrentUser) -> str:
    """The stored hash of the request's (authenticated) key: what a stream registers with
    `StreamGuard` so it ends when that key is revoked."""
    return hash_api_key(bearer_token(request.headers.get("Authorization")))


ApiKeyHash = Annotated[str, Depends(get_api_key_hash)]


def get_owned_job(job_id: str, session: SessionDep, user: CurrentUser) -> Job:
    """The path's job if it belongs to the current user; 404 otherwise (never leaks)."""
    job = get_user_job(session, user.id, job_id)
    if job is None:
        raise not_found("job", job_id)
    return job


OwnedJob = Annotated[Job, Depends(get_owned_job)]


def get_user_files(request: Request, session: SessionDep, user: CurrentUser) -> UserFiles:
    """The user's bucket through their own S3 key; 409 `no_s3_key` for a user without one."""
    box: SecretBox = request.app.state.secret_box
    s3_key = active_credentials(session, user.id, box)
    if s3_key is None:
        raise ApiError(
            status.HTTP_409_CONFLICT,
            "no_s3_key",
            f"user {user.name} has no S3 key yet",
            f"ask the operator to run: rondo users rotate-s3-key {user.name}",
        )
    clients: UserS3Clients = request.app.state.user_s3
    return clients.files(user.bucket, s3_key.access_key_id, s3_key.secret_access_key)


UserFilesDep = Annotated[UserFiles, Depends(get_user_files)]
