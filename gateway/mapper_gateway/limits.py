"""Request body size limit, as a plain ASGI middleware in front of the application.

A declared ``Content-Length`` over the limit is answered 413 before any byte of the body is
read; a body without a length (chunked) is read up to the limit and answered 413 as soon as it
goes over, so a client can never make the gateway buffer more than ``max_bytes``. A malformed
length is a 400. Requests that carry no body pass through untouched (the GET fast path).
"""

from __future__ import annotations

from collections.abc import Callable

import orjson
from starlette.types import ASGIApp, Message, Receive, Scope, Send

RefusalHook = Callable[[Scope, int], None]
"""Called with the request scope and the status when a request is refused (for the audit)."""


class BodyLimit:
    def __init__(self, app: ASGIApp, max_bytes: int, on_refused: RefusalHook | None = None):
        self.app = app
        self.max_bytes = max_bytes
        self.on_refused = on_refused

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length, chunked = _body_headers(scope)
        if length is None and not chunked:
            await self.app(scope, receive, send)
            return
        if length is not None and (length < 0 or length > self.max_bytes):
            await self._refuse(scope, send, 400 if length < 0 else 413)
            return
        body = await self._read(receive)
        if body is None:
            await self._refuse(scope, send, 413)
            return
        await self.app(scope, _replay(body, receive), send)

    async def _read(self, receive: Receive) -> bytes | None:
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return b"".join(chunks)  # the client went away; the app sees an empty body
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_bytes:
                return None
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks)

    async def _refuse(self, scope: Scope, send: Send, status: int) -> None:
        if self.on_refused is not None:
            self.on_refused(scope, status)
        if status == 413:
            reason, message = "too_large", f"request body is larger than {self.max_bytes} bytes"
        else:
            reason, message = "bad_length", "malformed Content-Length"
        payload = orjson.dumps({"status": "error", "reason": reason, "message": message})
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(payload)).encode()),
                    (b"connection", b"close"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": payload})


def _body_headers(scope: Scope) -> tuple[int | None, bool]:
    length: int | None = None
    chunked = False
    for name, value in scope["headers"]:
        if name == b"content-length":
            try:
                length = int(value)
            except ValueError:
                length = -1
        elif name == b"transfer-encoding" and b"chunked" in value.lower():
            chunked = True
    if length == 0:
        return None, chunked
    return length, chunked


def _replay(body: bytes, receive: Receive) -> Receive:
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()  # later calls wait for the disconnect, as the app expects

    return replay
