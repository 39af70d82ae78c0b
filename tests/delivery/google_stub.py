"""A stand-in of the Google Wallet REST API for loyalty classes and objects: a dict of resources
behind one handler, served through respx (in-process tests) or as an ASGI app on loopback (the
crash test's worker runs in another process, where respx cannot reach)."""

from __future__ import annotations

import json
import threading
import time
from typing import Any

import httpx

PREFIX = "/walletobjects/v1/"
TOKEN_PATH = "/token"


class GoogleStub:
    def __init__(self) -> None:
        self.classes: dict[str, dict[str, Any]] = {}
        self.objects: dict[str, dict[str, Any]] = {}
        self.calls: list[tuple[str, str, dict[str, Any]]] = []
        #: Answer every object call with this (status, reason) while set.
        self.fail_with: tuple[int, str] | None = None
        self._lock = threading.Lock()

    def handle(self, method: str, path: str, body: bytes) -> tuple[int, dict[str, Any]]:
        if path.endswith(TOKEN_PATH):
            return 200, {"access_token": "stub-token", "expires_in": 3600, "token_type": "Bearer"}
        data = json.loads(body) if body else {}
        with self._lock:
            self.calls.append((method, path, data))
            rest = path.split(PREFIX, 1)[1]
            kind, _, rid = rest.partition("/")
            if self.fail_with is not None and kind == "loyaltyObject":
                status, reason = self.fail_with
                return status, _error(status, reason)
            table = self.classes if kind == "loyaltyClass" else self.objects
            if method == "POST":
                if data["id"] in table:
                    return 409, _error(409, "alreadyExists")
                if kind == "loyaltyObject" and data["classId"] not in self.classes:
                    return 404, _error(404, "classNotFound")
                table[data["id"]] = dict(data)
                return 200, table[data["id"]]
            rid = httpx.URL("http://x/" + rid).path[1:]
            if rid not in table:
                return 404, _error(404, "resourceNotFound")
            if method == "PATCH":
                table[rid].update({k: v for k, v in data.items() if v is not None})
                for k in [k for k, v in data.items() if v is None]:
                    table[rid].pop(k, None)
            return 200, table[rid]

    def respx_side_effect(self, request: httpx.Request) -> httpx.Response:
        status, answer = self.handle(request.method, request.url.path, request.content)
        return httpx.Response(status, json=answer)

    async def asgi(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        body = b""
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return  # the worker was killed mid-request: nothing to answer
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        status, answer = self.handle(scope["method"], scope["path"], body)
        payload = json.dumps(answer).encode()
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [(b"content-type", b"application/json")],
            }
        )
        await send({"type": "http.response.body", "body": payload})


def _error(status: int, reason: str) -> dict[str, Any]:
    return {"error": {"code": status, "message": reason, "errors": [{"reason": reason}]}}


class StaticTokens:
    """A token provider for the REST client (no OAuth round trip)."""

    async def token(self) -> str:
        return "stub-token"

    def invalidate(self) -> None:
        pass


def serve_in_thread(stub: GoogleStub) -> tuple[str, Any]:
    """Serve the stub over HTTP on 127.0.0.1 (uvicorn in a thread); (base URL, server)."""
    import socket

    import uvicorn

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(
        uvicorn.Config(
            stub.asgi, log_level="warning", lifespan="off", access_log=False, interface="asgi3"
        )
    )
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.02)
    return f"http://127.0.0.1:{port}", server
