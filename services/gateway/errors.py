"""The one error envelope (`ErrorBody`: code, message, hint) for every error the API returns.

Routes raise `ApiError` (or one of the helpers below); FastAPI's own errors (422 validation,
404 unknown route, 405, ...) and unexpected exceptions are translated to the same envelope.
"""

import logging
from typing import Any

from fastapi import FastAPI, Request, status
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from rondo.contracts.api import ErrorBody
from rondo.contracts.job_checks import Problem

logger = logging.getLogger(__name__)

# Responses every route may give, for the OpenAPI document.
ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    status.HTTP_401_UNAUTHORIZED: {"model": ErrorBody, "description": "Missing or bad API key"},
    status.HTTP_422_UNPROCESSABLE_CONTENT: {"model": ErrorBody, "description": "Invalid request"},
}

_CODES_BY_STATUS = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    429: "rate_limited",
}


class ApiError(Exception):
    """An error with its HTTP status and envelope; raised anywhere below a route."""

    def __init__(
        self,
        status_code: int,
        code: str,
        message: str,
        hint: str = "",
        headers: dict[str, str] | None = None,
        problems: list[Problem] | None = None,
    ) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.body = ErrorBody(code=code, message=message, hint=hint, problems=problems)
        self.headers = headers


def not_found(what: str, ident: str) -> ApiError:
    """404 that never tells whether the object exists for someone else."""
    return ApiError(
        status.HTTP_404_NOT_FOUND,
        "not_found",
        f"{what} {ident} not found",
        "check the id; you only see your own jobs",
    )


def unauthorized(code: str, message: str, hint: str) -> ApiError:
    return ApiError(
        status.HTTP_401_UNAUTHORIZED,
        code,
        message,
        hint,
        headers={"WWW-Authenticate": "Bearer"},
    )


def error_response(
    status_code: int, body: ErrorBody, headers: dict[str, str] | None = None
) -> JSONResponse:
    # Unset optional fields (`problems`, a problem's `line`, ...) are left out of the body.
    content = body.model_dump(mode="json", exclude_none=True)
    return JSONResponse(status_code=status_code, content=content, headers=headers)


async def _api_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ApiError)
    return error_response(exc.status_code, exc.body, exc.headers)


def _location(loc: tuple[Any, ...]) -> str:
    parts = [str(part) for part in loc if part not in ("body", "query", "path", "header")]
    return ".".join(parts) or "request"


async def _validation_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    problems = [f"{_location(tuple(e.get('loc', ())))}: {e.get('msg', '')}" for e in exc.errors()]
    body = ErrorBody(
        code="validation_error",
        message="; ".join(problems) or "invalid request",
        hint="fix the named fields; GET /docs shows the request schema",
    )
    return error_response(status.HTTP_422_UNPROCESSABLE_CONTENT, body)


async def _http_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    body = ErrorBody(
        code=_CODES_BY_STATUS.get(exc.status_code, f"http_{exc.status_code}"),
        message=str(exc.detail),
        hint="GET /docs lists the routes" if exc.status_code in (404, 405) else "",
    )
    return error_response(exc.status_code, body, getattr(exc, "headers", None))


async def _unexpected_error(request: Request, exc: Exception) -> JSONResponse:
    logger.exception("unhandled error on %s %s", request.method, request.url.path)
    body = ErrorBody(
        code="internal_error",
        message="the gateway failed to handle this request",
        hint="retry; if it persists, send the operator the time of the request",
    )
    return error_response(status.HTTP_500_INTERNAL_SERVER_ERROR, body)


def install_error_handlers(app: FastAPI) -> None:
    """Make every error response an `ErrorBody`."""
    app.add_exception_handler(ApiError, _api_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(Exception, _unexpected_error)
