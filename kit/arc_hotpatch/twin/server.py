"""The twin's thin HTTP server: one catch-all aiohttp handler on its own event loop in a background thread.

Everything the handler touches lives on that loop; ``on_loop`` runs a function there
from any other thread (the Python inspection API), so the twin needs no locks.
"""

from __future__ import annotations

import asyncio
import ssl
import threading
from collections.abc import Awaitable, Callable
from typing import TypeVar

from aiohttp import web

T = TypeVar("T")

RequestHandler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class LoopServer:
    """Serves ``handler`` for every method and path; ``start``/``stop`` own the loop thread."""

    def __init__(self, handler: RequestHandler, *, thread_name: str = "fleet-twin") -> None:
        self._handler = handler
        self._thread_name = thread_name
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: web.AppRunner | None = None

    @property
    def running(self) -> bool:
        return self._thread is not None

    def start(self, host: str, port: int, ssl_context: ssl.SSLContext | None = None) -> int:
        """Serve on ``host:port`` (0: any free port; HTTPS with ``ssl_context``) from a background thread; returns
        the bound port."""
        if self._thread is not None:
            raise RuntimeError("the twin is already running")
        loop = asyncio.new_event_loop()
        thread = threading.Thread(target=loop.run_forever, name=self._thread_name, daemon=True)
        thread.start()
        self._loop, self._thread = loop, thread
        try:
            return asyncio.run_coroutine_threadsafe(self._serve(host, port, ssl_context), loop).result(timeout=30)
        except BaseException:
            self._shutdown_loop()
            raise

    async def _serve(self, host: str, port: int, ssl_context: ssl.SSLContext | None) -> int:
        app = web.Application(client_max_size=8 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self._handler)
        runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await runner.setup()
        site = web.TCPSite(runner, host, port, ssl_context=ssl_context)
        await site.start()
        self._runner = runner
        server = site._server
        assert server is not None and server.sockets
        return int(server.sockets[0].getsockname()[1])

    def stop(self) -> None:
        """Stop serving and join the server thread (idempotent)."""
        if self._loop is None:
            return
        if self._runner is not None:
            asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(timeout=30)
            self._runner = None
        self._shutdown_loop()

    def _shutdown_loop(self) -> None:
        loop, thread = self._loop, self._thread
        if loop is None:
            return
        loop.call_soon_threadsafe(loop.stop)
        if thread is not None:
            thread.join(timeout=30)
        loop.close()
        self._loop = self._thread = None

    def on_loop(self, function: Callable[[], T]) -> T:
        """Run ``function`` where the state lives: on the server loop when it is serving."""
        loop = self._loop
        if loop is None or threading.current_thread() is self._thread:
            return function()

        async def call() -> T:
            return function()

        return asyncio.run_coroutine_threadsafe(call(), loop).result(timeout=60)
