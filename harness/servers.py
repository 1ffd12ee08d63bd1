"""ASGI apps on real uvicorn at 127.0.0.1 in a thread, for the tests and the benchmarks.
Server processes (vLLM, an installed ``tts-proxy``) go through ``cpu_stack.process``.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator
from typing import Any

import uvicorn

from cpu_stack.process import free_port

__all__ = ["free_port", "serve"]


@contextlib.contextmanager
def serve(app: Any, startup_timeout_s: float = 20.0) -> Iterator[str]:
    """Run ``app`` on real uvicorn at 127.0.0.1 in a thread; yields its base URL."""
    port = free_port()
    config = uvicorn.Config(
        app, host="127.0.0.1", port=port, log_level="warning", lifespan="on", loop="asyncio"
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + startup_timeout_s
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("test server did not start")
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
