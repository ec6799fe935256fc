"""The web dashboard: its pages, its static assets (ours and Monaco's), and `GET /api/events`.

Every page path answers with the same shell (`web/index.html`); the browser's router
(`web/static/js/router.js`) draws the page for the path, so a reload or a shared link of any
page works. Assets come only from this package and from the npm packages installed at set-up
into `web/node_modules` (`scripts/lib/venv.sh`), never from a CDN.
"""

import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, Depends, FastAPI
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse
from fastapi.sse import EventSourceResponse, ServerSentEvent
from fastapi.staticfiles import StaticFiles
from sqlalchemy import Engine
from sqlmodel import Session

from rondo.contracts.api import JobPublic, UserStreamEvent
from rondo.gateway.deps import ApiKeyHash, CurrentUser, HubDep, StreamGuardDep, get_engine
from rondo.gateway.errors import ERROR_RESPONSES
from rondo.gateway.jobs import get_user_job
from rondo.gateway.pubsub import ANY_JOB

logger = logging.getLogger(__name__)

WEB_DIR = Path(__file__).resolve().parent / "web"
PAGE_SHELL = WEB_DIR / "index.html"
STATIC_DIR = WEB_DIR / "static"
MONACO_DIR = WEB_DIR / "node_modules" / "monaco-editor" / "min"

STATIC_URL = "/static"
MONACO_URL = "/monaco"

# The browser's router knows these; the server only has to answer them with the shell.
PAGE_PATHS = (
    "/",
    "/signin",
    "/jobs",
    "/jobs/new",
    "/jobs/{job_id}",
    "/files",
    "/files/view",
    "/workers",
)

# Scripts only from this origin (no inline script, so an injected one never runs). Monaco
# injects styles and starts workers from blob URLs; presigned S3 URLs (uploads, downloads,
# image previews) point at the object store's own origin, which the gateway cannot always
# know (a proxy may front it), hence http(s) there.
CONTENT_SECURITY_POLICY = "; ".join(
    (
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self' 'unsafe-inline'",
        "img-src 'self' data: blob: http: https:",
        "connect-src 'self' http: https:",
        "font-src 'self' data:",
        "worker-src 'self' blob:",
        "object-src 'none'",
        "base-uri 'self'",
        "frame-ancestors 'none'",
    )
)
SHELL_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    # The shell is tiny and names the assets: always revalidate it so a new version shows.
    "Cache-Control": "no-cache",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}

EngineDep = Annotated[Engine, Depends(get_engine)]

router = APIRouter()


def page_shell() -> FileResponse:
    """The one HTML page every dashboard path answers with."""
    return FileResponse(PAGE_SHELL, media_type="text/html", headers=SHELL_HEADERS)


for _path in PAGE_PATHS:
    router.add_api_route(_path, page_shell, methods=["GET"], include_in_schema=False)


class _Ownership:
    """Which job ids belong to one user, looked up once per id (a stream hears every job)."""

    def __init__(self, engine: Engine, user_id: str) -> None:
        self._engine = engine
        self._user_id = user_id
        self._known: dict[str, bool] = {}

    async def owns(self, job_id: str) -> bool:
        if job_id not in self._known:
            self._known[job_id] = await run_in_threadpool(self._lookup, job_id)
        return self._known[job_id]

    def _lookup(self, job_id: str) -> bool:
        with Session(self._engine) as session:
            return get_user_job(session, self._user_id, job_id) is not None


@router.get(
    "/api/events",
    response_class=EventSourceResponse,
    tags=["jobs"],
    responses=ERROR_RESPONSES,
)
async def stream_user_events(
    user: CurrentUser,
    hub: HubDep,
    engine: EngineDep,
    guard: StreamGuardDep,
    key_hash: ApiKeyHash,
) -> AsyncIterator[ServerSentEvent]:
    """Server-Sent Events of every change to the user's jobs: `ready` once subscribed (list
    the jobs after it and no change is missed), then `state`, `progress` and `failed` with the
    job's JobPublic. Rounds and logs stay on the per-job stream. Open until the client leaves,
    the gateway shuts down, or the API key is revoked (or its user removed).
    """
    ownership = _Ownership(engine, user.id)
    with hub.subscribe(ANY_JOB) as queue, guard.watch(key_hash, queue):
        yield ServerSentEvent(event=UserStreamEvent.READY.value, data={})
        while (event := await queue.get()) is not None:
            job = event.data
            if isinstance(job, JobPublic) and await ownership.owns(job.id):
                yield event


def install_dashboard(app: FastAPI) -> None:
    """Serve the dashboard's pages, assets and user stream from `app`.

    Without Monaco installed (`npm ci` in `web/`), the file viewer falls back to plain text.
    """
    app.include_router(router)
    app.mount(STATIC_URL, StaticFiles(directory=STATIC_DIR), name="dashboard-static")
    if MONACO_DIR.is_dir():
        app.mount(MONACO_URL, StaticFiles(directory=MONACO_DIR), name="monaco")
    else:
        logger.warning("no Monaco at %s: the file viewer shows plain text", MONACO_DIR)
