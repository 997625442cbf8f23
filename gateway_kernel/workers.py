"""The kernel's bounded worker pool: where synchronous plugin code runs under ASGI.

A smaller hand-off than ``loop.run_in_executor`` (no ``concurrent.futures.Future`` chained to
an asyncio one): measured in-process, the hop is most of what a warm route costs beyond
the route itself. Each worker thread routes peewee queries to its gateway's database for its
whole life, and gives a pooled connection back after every call.
"""

from __future__ import annotations

import asyncio
import queue
import threading
from collections.abc import Callable
from typing import Any

import peewee

from .db import DATABASE_DOWN_ERRORS, activate, release_connection
from .observe import REQUEST_ID

_STOP = None


def _resolve(future: asyncio.Future, result: Any) -> None:
    if not future.done():
        future.set_result(result)


def _reject(future: asyncio.Future, error: BaseException) -> None:
    if not future.done():
        future.set_exception(error)


class WorkerPool:
    """``size`` threads named ``<name>-N``, started on first use."""

    def __init__(self, size: int, name: str, db: peewee.Database) -> None:
        self.size = size
        self.name = name
        self.db = db
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()
        self._closed = False

    def _start(self) -> None:
        with self._lock:
            if self._threads or self._closed:
                return
            for number in range(self.size):
                thread = threading.Thread(target=self._work, name=f"{self.name}-{number}",
                                          daemon=True)
                thread.start()
                self._threads.append(thread)

    async def run(self, fn: Callable[..., Any], args: tuple, kwargs: dict) -> Any:
        if not self._threads:
            if self._closed:
                raise RuntimeError("the worker pool is shut down")
            self._start()
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        self._queue.put((loop, future, fn, args, kwargs, REQUEST_ID.get()))
        return await future

    def _work(self) -> None:
        activate(self.db)  # this thread's context: queries go to this gateway's database
        db = self.db
        get = self._queue.get
        set_request_id = REQUEST_ID.set
        while True:
            item = get()
            if item is _STOP:
                return
            loop, future, fn, args, kwargs, request_id = item
            set_request_id(request_id)  # log lines from plugin code name their request
            broken = False
            try:
                result = fn(*args, **kwargs)
            except BaseException as exc:
                broken = isinstance(exc, DATABASE_DOWN_ERRORS)
                release_connection(db, broken=broken)
                try:
                    loop.call_soon_threadsafe(_reject, future, exc)
                except RuntimeError:  # the loop is closed: nobody is waiting any more
                    pass
                continue
            release_connection(db)
            try:
                loop.call_soon_threadsafe(_resolve, future, result)
            except RuntimeError:
                pass

    def queue_depth(self) -> int:
        """Calls waiting for a free worker thread."""
        return self._queue.qsize()

    def shutdown(self) -> None:
        """Let the threads finish their current call and exit (does not wait)."""
        with self._lock:
            self._closed = True
            for _ in self._threads:
                self._queue.put(_STOP)
