"""The HTTP side of the SDK: one `httpx.Client` to the Rondo API, errors turned into
`RondoError`s, JSON answers validated into the `rondo.contracts.api` models."""

from collections.abc import Iterator, Mapping
from typing import Any, TypeVar

import httpx
from httpx_sse import SSEError, connect_sse
from pydantic import BaseModel, ValidationError

from rondo.contracts.api import ErrorBody
from rondo.errors import ApiError, ConnectionFailed
from rondo.profile import Profile

M = TypeVar("M", bound=BaseModel)

API_TIMEOUT = httpx.Timeout(30.0)
# The event stream sends a keep-alive comment every 15 s: silence beyond this means it is gone.
STREAM_TIMEOUT = httpx.Timeout(30.0, read=60.0)


class ServerEvent(BaseModel):
    """One Server-Sent Event: its `event:` name and JSON `data:`."""

    event: str
    data: Any


def _error_of(response: httpx.Response) -> ApiError:
    """The API's error envelope, or one made up from the status line when it sent none."""
    try:
        body = ErrorBody.model_validate_json(response.read())
    except ValidationError:
        body = ErrorBody(
            code=f"http_{response.status_code}",
            message=f"{response.request.method} {response.request.url.path} answered "
            f"{response.status_code} {response.reason_phrase}",
            hint="is the URL a Rondo API? (rondo login --url ...)",
        )
    return ApiError(response.status_code, body)


def _unreachable(url: str, error: httpx.TransportError) -> ConnectionFailed:
    return ConnectionFailed(
        f"cannot reach the Rondo API at {url}: {error or type(error).__name__}",
        "check the URL (rondo login --url ..., or RONDO_URL) and that the gateway is up "
        "(rondo up starts a local one)",
    )


class ApiClient:
    """Authenticated JSON requests to one Rondo API."""

    def __init__(self, profile: Profile, *, transport: httpx.BaseTransport | None = None) -> None:
        self.url = profile.url.rstrip("/")
        self._http = httpx.Client(
            base_url=self.url,
            headers={"Authorization": f"Bearer {profile.api_key}"},
            timeout=API_TIMEOUT,
            transport=transport,
        )

    def close(self) -> None:
        self._http.close()

    def request(
        self,
        method: str,
        path: str,
        answer: type[M],
        *,
        params: Mapping[str, Any] | None = None,
        body: BaseModel | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> M:
        """Send one request and validate the answer as `answer`."""
        response = self.send(method, path, params=params, body=body, headers=headers)
        try:
            return answer.model_validate_json(response.content)
        except ValidationError as error:
            raise ConnectionFailed(
                f"{method} {path} answered something that is not a {answer.__name__}: {error}",
                "the API and this SDK may be of different versions; update the SDK",
            ) from None

    def send(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, Any] | None = None,
        body: BaseModel | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> httpx.Response:
        """Send one request; raises `ApiError` for an error answer, `ConnectionFailed` when
        the API cannot be reached."""
        content = body.model_dump_json(exclude_none=True) if body is not None else None
        sent_headers = dict(headers or {})
        if content is not None:
            sent_headers["Content-Type"] = "application/json"
        query = {k: v for k, v in (params or {}).items() if v is not None}
        try:
            response = self._http.request(
                method, path, params=query, content=content, headers=sent_headers
            )
        except httpx.TransportError as error:
            raise _unreachable(self.url, error) from error
        if not response.is_success:
            raise _error_of(response)
        return response

    def stream_events(self, path: str) -> Iterator[ServerEvent]:
        """The Server-Sent Events of `path` until the server ends the stream."""
        try:
            with connect_sse(self._http, "GET", path, timeout=STREAM_TIMEOUT) as source:
                if not source.response.is_success:
                    raise _error_of(source.response)
                for sse in source.iter_sse():
                    yield ServerEvent(event=sse.event, data=sse.json() if sse.data else None)
        except httpx.TransportError as error:
            raise _unreachable(self.url, error) from error
        except SSEError as error:
            raise ConnectionFailed(
                f"{path} did not answer an event stream: {error}",
                "is the URL a Rondo API? (rondo login --url ...)",
            ) from error
