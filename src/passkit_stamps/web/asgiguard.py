"""An ASGI guard in front of the app for what Starlette cannot represent.

Starlette decodes the query string as strict UTF-8 whenever it builds a request URL (e.g. for
its trailing-slash redirect), so ``GET /v1/log/?\\x80`` raised ``UnicodeDecodeError``: a 500.
uvicorn's parser refuses such bytes, other ASGI servers may pass them on; here they are a 400.
"""

from __future__ import annotations

from starlette.responses import PlainTextResponse
from starlette.types import ASGIApp, Receive, Scope, Send


class RequestGuard:
    """Answers 400 to an HTTP request whose query string is not UTF-8; passes the rest on."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            try:
                bytes(scope.get("query_string", b"")).decode("utf-8")
            except UnicodeDecodeError:
                response = PlainTextResponse("query string is not UTF-8\n", status_code=400)
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)
