"""The ASGI server's exchange with an engine (the default server): on the event loop, no
thread held while the engine is waited on, through the client of ``upstream.py``.

The client's body streams up from ``req.stream`` as it arrives; the engine's streams back as
``resp.stream`` (an async iterator, :class:`AsyncUpstreamBody`). A client that leaves frees
its place at once (:class:`_ClientWatch`). Errors map to the proxy's (``errors.py``) and feed
the circuit breaker, as on the WSGI path (``sync_path.py``).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

from . import errors
from .fairness import Slot
from .headers import BODILESS, apply_response, response_headers
from .upstream import Timeouts, UpstreamClient, UpstreamError, UpstreamResponse, UpstreamTimeout

if TYPE_CHECKING:
    from .forward import Forwarder, Outgoing

log = logging.getLogger("gateway_plugins.proxy")


class AsyncPath:
    """Sends :class:`~.forward.Outgoing` requests on the serving loop."""

    def __init__(self, forwarder: Forwarder) -> None:
        self.fwd = forwarder
        self.settings = forwarder.settings
        self._client: UpstreamClient | None = None

    def _async_client(self) -> UpstreamClient:
        if self._client is None:  # built on the serving loop, on first use
            self._client = UpstreamClient(max_connections=self.settings.max_connections,
                                          address_policy=self.fwd.policy)
        return self._client

    async def aclose(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            await client.aclose()

    def close_on(self, loop: asyncio.AbstractEventLoop | None) -> None:
        """Close the client's connections, which belong to the serving loop: there, when it
        still runs (a stopped loop's transports go with it). Never raises."""
        if self._client is None or loop is None or not loop.is_running():
            return
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        try:
            if running is loop:  # called on the loop itself (lifespan): close in the background
                loop.create_task(self.aclose())
            else:
                asyncio.run_coroutine_threadsafe(self.aclose(), loop).result(5)
        except Exception:  # shutdown must not raise
            log.warning("closing the engine connections failed", exc_info=True)

    async def send(self, req: Any, resp: Any, out: Outgoing) -> None:
        """Send ``out``, streaming the client's body from ``req.stream`` as it arrives, and set
        ``resp`` to stream the engine's answer back (``resp.stream``, an async iterator)."""
        try:
            await self._send(req, resp, out)
        except BaseException:
            out.slot.release()
            raise

    async def _send(self, req: Any, resp: Any, out: Outgoing) -> None:
        receive = getattr(req, "_receive", None)  # Falcon keeps the ASGI receive here
        # Without a body to read, the next ASGI event can only be the client's disconnect:
        # watch for it from the start, so a client that gives up while the engine thinks
        # frees its place at once (the exchange is cancelled).
        watch = (_ClientWatch(receive, asyncio.current_task())
                 if receive is not None and not out.has_body else None)
        try:
            await self._exchange(req, resp, out, watch, receive)
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if watch is None or not watch.gone or task is None:
                raise
            task.uncancel()  # our own cancel: the client left, nobody reads an answer
            out.slot.release()
            resp.status = 499  # nginx's "client closed request", for the access log only
            resp.data = b""
            return
        finally:
            if watch is not None and not watch.handed:
                watch.stop()

    async def _exchange(self, req: Any, resp: Any, out: Outgoing,
                        watch: _ClientWatch | None, receive: Any) -> None:
        fwd = self.fwd
        settings = self.settings
        client = self._async_client()
        timeouts = Timeouts(connect_s=settings.connect_timeout_s,
                            read_s=settings.read_timeout_s,
                            # Silence before the headers is bounded by the read timeout
                            # too, as on the WSGI path (a socket read there).
                            headers_s=min(settings.timeout_s, settings.read_timeout_s),
                            max_duration_s=settings.max_duration_s)
        headers = [("host", out.origin.host_header.decode("latin-1")), *out.headers]
        upload = (_AsyncUpload(req.stream, settings.max_upload_bytes, out.length)
                  if out.has_body else None)
        attempt = 0
        started = time.perf_counter()
        while True:
            try:
                upstream = await client.request(out.method, out.url, headers, upload,
                                                timeouts=timeouts, guard=out.guard)
                break
            except Exception as exc:
                # The client's own body first: its faults are never the engine's.
                if upload is not None and upload.too_large:
                    raise errors.upload_too_large(settings.max_upload_bytes) from None
                if upload is not None and upload.failed:
                    raise errors.body_incomplete(
                        "The request body ended before it was complete") from None
                if not isinstance(exc, UpstreamError):
                    raise
                if isinstance(exc, UpstreamTimeout):
                    fwd.failed(out.key, exc, "timeout", started)
                    raise errors.engine_timeout() from None
                if attempt < out.retries:  # refused, reset, dropped: nothing was answered
                    attempt += 1
                    continue
                fwd.failed(out.key, exc, "unreachable", started)
                raise errors.engine_unreachable() from None
        fwd.succeeded(out.key, started)

        status = upstream.status
        kept, content_length = response_headers(upstream.headers)
        chunks = upstream.__aiter__()
        prefix: list[bytes] = []
        policy = fwd.cache_policy(out, status, upstream.headers, content_length)
        try:
            if policy is not None:
                prefix, complete = await self._read_prefix(upstream, chunks, out.key)
                if complete:
                    fwd.send_whole(resp, out, status, kept, b"".join(prefix), policy)
                    return
        except BaseException:
            await upstream.aclose()
            raise

        apply_response(resp, status, kept)
        if req.method == "HEAD" or status in BODILESS or status < 200:
            await upstream.aclose()
            out.slot.release()
            if content_length is not None and req.method == "HEAD":
                resp.set_header("Content-Length", content_length)
            resp.stream = _EMPTY_ASYNC  # truthy: Falcon would otherwise claim Content-Length 0
            return
        if content_length is not None:
            resp.set_header("Content-Length", content_length)
        if watch is None and receive is not None and upload is not None and upload.done:
            watch = _ClientWatch(receive, None)  # the body is all read: receive is free now
        if watch is not None:
            watch.stream(upstream)
        resp.stream = AsyncUpstreamBody(upstream, chunks, out.slot, prefix, watch)

    async def _read_prefix(self, upstream: UpstreamResponse, chunks: AsyncIterator[bytes],
                           key: tuple[str, str]) -> tuple[list[bytes], bool]:
        """As ``SyncPath._read_prefix``: up to the cache's entry limit of the body."""
        assert self.fwd.cache is not None
        limit = self.fwd.cache.max_entry_bytes
        read: list[bytes] = []
        size = 0
        try:
            async for chunk in chunks:
                read.append(chunk)
                size += len(chunk)
                if size > limit:
                    return read, False
        except UpstreamError as exc:
            await upstream.aclose()
            self.fwd.failed(key, exc)
            if isinstance(exc, UpstreamTimeout):
                raise errors.engine_timeout() from None
            raise errors.engine_unreachable() from None
        await upstream.aclose()
        return read, True


class _AsyncUpload:
    """The client's body from ``req.stream`` (Falcon ASGI) as it arrives, refused beyond
    ``limit`` bytes (a chunked body has no length to refuse up front); a body shorter than its
    declared ``length`` (the client went away) fails the upload rather than completing it."""

    __slots__ = ("done", "failed", "length", "limit", "stream", "too_large")

    def __init__(self, stream: Any, limit: int, length: int) -> None:
        self.stream = stream
        self.limit = limit
        self.length = length
        self.done = False
        self.failed = False
        self.too_large = False

    async def __aiter__(self) -> AsyncIterator[bytes]:
        sent = 0
        try:
            async for chunk in self.stream:
                sent += len(chunk)
                if sent > self.limit:
                    self.too_large = True
                    raise ValueError("request body over the limit")
                if chunk:
                    yield chunk
            if self.length and sent != self.length:
                raise ValueError("request body shorter than its Content-Length")
        except Exception:
            self.failed = True
            raise
        self.done = True


class _ClientWatch:
    """Waits for the client's ``http.disconnect`` (call only once the request body is all
    read: until then ``receive`` delivers the body). Uvicorn tells an app that its client
    left through ``receive()`` only, so without this an abandoned exchange would linger until
    the engine's next byte or a timeout. On disconnect: before the answer streams, the
    handling task is cancelled; while it streams, the engine's response is closed, which
    wakes a pending read."""

    __slots__ = ("_response", "_task", "_watcher", "gone", "handed")

    def __init__(self, receive: Any, task: asyncio.Task[Any] | None) -> None:
        self.gone = False
        self.handed = False
        self._task = task
        self._response: UpstreamResponse | None = None
        self._watcher = asyncio.ensure_future(self._run(receive))

    def stream(self, response: UpstreamResponse) -> None:
        """The answer streams now: on disconnect close ``response`` instead of cancelling."""
        self._task = None
        self._response = response
        self.handed = True

    async def _run(self, receive: Any) -> None:
        try:
            while True:
                event = await receive()
                if event.get("type") == "http.disconnect":
                    break
        except Exception:  # the server's receive failed: treat the client as gone
            log.debug("receive() failed while proxying", exc_info=True)
        self.gone = True
        if self._response is not None:
            await self._response.aclose()
        elif self._task is not None:
            self._task.cancel()

    def stop(self) -> None:
        watcher = self._watcher
        if not watcher.done() and watcher is not asyncio.current_task():
            watcher.cancel()


class AsyncUpstreamBody:
    """The ASGI response stream (Falcon awaits ``close()`` after the last chunk, after an
    error, and when it stops early): the engine's raw bytes as they arrive. A
    :class:`_ClientWatch` closes the engine's response when the client leaves."""

    __slots__ = ("_chunks", "_closed", "_prefix", "_response", "_slot", "_watch")

    def __init__(self, response: UpstreamResponse, chunks: AsyncIterator[bytes], slot: Slot,
                 prefix: list[bytes], watch: _ClientWatch | None) -> None:
        self._response = response
        self._chunks = chunks
        self._slot = slot
        self._prefix = prefix or None
        self._closed = False
        self._watch = watch

    def __aiter__(self) -> AsyncUpstreamBody:
        return self

    async def __anext__(self) -> bytes:
        if self._prefix:
            return self._prefix.pop(0)
        try:
            return await self._chunks.__anext__()
        except StopAsyncIteration:
            await self.close()
            raise
        except UpstreamError as exc:
            await self.close()
            if self._watch is not None and self._watch.gone:  # closed because the client left
                raise StopAsyncIteration from None
            log.warning("engine response broke off: %s: %s", type(exc).__name__, exc)
            raise errors.UpstreamAborted(
                f"engine response broke off: {type(exc).__name__}") from None

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._watch is not None:
            self._watch.stop()
        try:
            await self._response.aclose()
        finally:
            self._slot.release()


class _EmptyAsync:
    """An async iterator with nothing in it, truthy (Falcon tests ``resp.stream``)."""

    def __aiter__(self) -> _EmptyAsync:
        return self

    async def __anext__(self) -> bytes:
        raise StopAsyncIteration


_EMPTY_ASYNC = _EmptyAsync()
