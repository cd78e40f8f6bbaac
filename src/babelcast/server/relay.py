"""The replica side of a relayed request (`serve --ray`): an HTTP request or a WebSocket session that an
ingress (server/ingress.py) received, run through this process's app as if a client had connected to it.
Everything crossing between the two is plain data (ASGI messages and scope fields), so it pickles."""
from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

# the parts of an ASGI scope that describe the request (the rest belongs to the server that received it)
SCOPE_KEYS = ("type", "http_version", "method", "scheme", "path", "raw_path", "query_string", "headers", "client",
              "server", "subprotocols")
INBOX_HIGH = 64  # client messages queued for the app before the sender waits (a client faster than real time)
END_WAIT_S = 5.0  # how long an app gets to finish a session whose client is gone


def forwarded_scope(scope: dict) -> dict:
    """The request part of `scope`, as plain data, for the app of another process."""
    plain = {key: scope[key] for key in SCOPE_KEYS if key in scope}
    plain["headers"] = [(bytes(k), bytes(v)) for k, v in scope.get("headers", [])]
    for key in ("client", "server"):
        if plain.get(key) is not None:
            plain[key] = tuple(plain[key])
    return {**plain, "asgi": {"version": "3.0", "spec_version": "2.3"}, "root_path": ""}


async def call_http(app, scope: dict, body: bytes) -> dict:
    """Run one HTTP request through `app`: its status, headers and body."""
    answer = {"status": 500, "headers": [], "body": b""}
    chunks: list[bytes] = []
    finished = asyncio.Event()
    delivered = False

    async def receive() -> dict:
        nonlocal delivered
        if not delivered:
            delivered = True
            return {"type": "http.request", "body": body, "more_body": False}
        await finished.wait()  # the body was read: the next message is the end of the connection
        return {"type": "http.disconnect"}

    async def send(message: dict) -> None:
        if message["type"] == "http.response.start":
            answer["status"], answer["headers"] = message["status"], list(message.get("headers", []))
        elif message["type"] == "http.response.body":
            chunks.append(bytes(message.get("body", b"")))
            if not message.get("more_body", False):
                finished.set()

    try:
        await app(scope, receive, send)
    finally:
        finished.set()
    answer["body"] = b"".join(chunks)
    return answer


class AppSocket:
    """One WebSocket session run through `app` in this process: the client's ASGI messages go in with
    `put`, the app's come out of `batches()` (each batch: whatever it sent since the last one)."""

    def __init__(self, app, scope: dict):
        self.inbox: asyncio.Queue[dict] = asyncio.Queue()
        self.outbox: asyncio.Queue[dict | None] = asyncio.Queue()  # None: the app returned
        self.room = asyncio.Event()  # the inbox is below INBOX_HIGH
        self.room.set()
        self.inbox.put_nowait({"type": "websocket.connect"})
        self.task = asyncio.create_task(self._run(app, scope))

    async def _run(self, app, scope: dict) -> None:
        try:
            await app(scope, self._receive, self.outbox.put)
        finally:
            self.outbox.put_nowait(None)

    async def _receive(self) -> dict:
        message = await self.inbox.get()
        if self.inbox.qsize() < INBOX_HIGH:
            self.room.set()
        return message

    async def put(self, messages: list[dict]) -> None:
        """Hand the client's messages to the app; returns once the app has room for more (or has ended)."""
        if self.task.done():
            return
        for message in messages:
            self.inbox.put_nowait(message)
        if self.inbox.qsize() >= INBOX_HIGH:
            self.room.clear()
            waiter = asyncio.ensure_future(self.room.wait())
            await asyncio.wait({waiter, self.task}, return_when=asyncio.FIRST_COMPLETED)
            waiter.cancel()

    async def batches(self) -> AsyncIterator[list[dict]]:
        """The app's messages, as they come, until it returns."""
        while True:
            batch = [await self.outbox.get()]
            while not self.outbox.empty():
                batch.append(self.outbox.get_nowait())
            if None in batch:
                if batch[:-1]:
                    yield batch[:-1]
                return
            yield batch

    async def end(self) -> None:
        """The client is gone: tell the app, give it END_WAIT_S to finish, then stop it."""
        if self.task.done():
            return
        self.inbox.put_nowait({"type": "websocket.disconnect", "code": 1006})
        with contextlib.suppress(asyncio.TimeoutError, asyncio.CancelledError, Exception):
            await asyncio.wait_for(asyncio.shield(self.task), END_WAIT_S)
        self.task.cancel()
