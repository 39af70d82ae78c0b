"""A bound on the request head (request line and headers) for ``serve``.

uvicorn's httptools protocol has no limit of its own: a client could send a 100 MB header, which
was read (and concatenated, quadratically) for 11 s. :class:`BoundedHttpToolsProtocol` counts the
bytes of each request's head as they arrive and answers ``431 Request Header Fields Too Large``
(and closes) once they pass :data:`MAX_REQUEST_HEAD`; the body does not count. For uvicorn's h11
protocol the same bound is ``h11_max_incomplete_event_size`` (see :func:`uvicorn_limits`).
"""

from __future__ import annotations

from typing import Any

#: Wallet's requests have heads of a few hundred bytes; browsers send a few KiB of cookies.
MAX_REQUEST_HEAD = 16 * 1024

_HEAD_END = b"\r\n\r\n"


def uvicorn_limits() -> dict[str, Any]:
    """Keyword arguments for ``uvicorn.Config`` that bound the request head."""
    return {"http": http_protocol(), "h11_max_incomplete_event_size": MAX_REQUEST_HEAD}


def http_protocol() -> Any:
    """:class:`BoundedHttpToolsProtocol`, or uvicorn's h11 (bounded by its own option) where
    httptools is not installed."""
    try:
        return _bounded_httptools()
    except ImportError:
        return "h11"


_PROTOCOL: Any = None


def _bounded_httptools() -> Any:
    global _PROTOCOL
    if _PROTOCOL is not None:
        return _PROTOCOL
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

    class BoundedHttpToolsProtocol(HttpToolsProtocol):
        """uvicorn's httptools protocol with the request head bounded by ``max_head``."""

        max_head = MAX_REQUEST_HEAD

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self._in_head = False
            self._began_now = False
            self._head_bytes = 0
            self._tail = b""

        def on_message_begin(self) -> None:
            super().on_message_begin()
            self._in_head, self._began_now, self._head_bytes, self._tail = True, True, 0, b""

        def on_headers_complete(self) -> None:
            self._in_head = False
            super().on_headers_complete()

        def data_received(self, data: bytes) -> None:
            if self._in_head:
                # Only the bytes up to the blank line that ends the head count.
                window = self._tail + data
                end = window.find(_HEAD_END)
                counted = len(data) if end < 0 else max(end + 4 - len(self._tail), 0)
                self._head_bytes += counted
                self._tail = window[-3:]
                if self._head_bytes > self.max_head:
                    self._refuse()
                    return
            self._began_now = False
            super().data_received(data)
            if self._in_head and self._began_now:
                # A head that began in this chunk and did not end in it: count the chunk (an
                # over-estimate only when one read also carried the end of a pipelined request).
                self._head_bytes = len(data)
                self._tail = data[-3:]
                if self._head_bytes > self.max_head:
                    self._refuse()

        def _refuse(self) -> None:
            self.logger.warning("Request head over %d bytes refused (431).", self.max_head)
            message = f"request head over {self.max_head} bytes\n".encode()
            head = [b"HTTP/1.1 431 Request Header Fields Too Large\r\n"]
            for name, value in self.server_state.default_headers:
                head += [name, b": ", value, b"\r\n"]
            head += [
                b"content-type: text/plain; charset=utf-8\r\n",
                b"content-length: " + str(len(message)).encode() + b"\r\n",
                b"connection: close\r\n\r\n",
            ]
            self._in_head = False
            self.transport.write(b"".join(head) + message)
            self.transport.close()

    _PROTOCOL = BoundedHttpToolsProtocol
    return _PROTOCOL
