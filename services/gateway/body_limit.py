"""Request size limit: a body over `max_bytes` gets 413 before any route reads it.

A declared `Content-Length` is checked at once; a chunked body is read up to the limit, then
replayed to the app (at most `max_bytes` are held). Large files never pass through the API:
they go to the object store by presigned URL.
"""

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from rondo.contracts.api import ErrorBody
from rondo.gateway.errors import error_response


class BodySizeLimit:
    """Pure ASGI middleware (streaming responses such as SSE pass through untouched)."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        declared = headers.get(b"content-length")
        if declared is not None:
            if declared.isdigit() and int(declared) > self.max_bytes:
                await self._refuse(scope, receive, send)
                return
            await self.app(scope, receive, send)
            return
        if b"chunked" not in headers.get(b"transfer-encoding", b"").lower():
            await self.app(scope, receive, send)
            return
        messages: list[Message] = []
        size = 0
        while True:
            message = await receive()
            messages.append(message)
            if message["type"] != "http.request":
                break
            size += len(message.get("body", b""))
            if size > self.max_bytes:
                await self._refuse(scope, receive, send)
                return
            if not message.get("more_body", False):
                break

        async def replay() -> Message:
            return messages.pop(0) if messages else await receive()

        await self.app(scope, replay, send)

    async def _refuse(self, scope: Scope, receive: Receive, send: Send) -> None:
        body = ErrorBody(
            code="request_too_large",
            message=f"the request body is larger than {self.max_bytes} bytes",
            hint="upload files to your bucket by presigned URL (POST /api/files/upload-url)",
        )
        await error_response(413, body)(scope, receive, send)
