"""What the latency benchmarks share: the proxy or an app in a process of its own (so the client
and the fake upstream do not share its GIL), and a fake vLLM that answers as fast as decoding
would let it (the latency model).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

from fastapi import Request
from fastapi.responses import StreamingResponse

from cpu_stack.process import server_process
from harness.fake_servers import FakeVllm, tokens_of
from harness.servers import free_port

__all__ = ["PacedVllm", "Served", "app_process", "cpu_seconds", "proxy_process"]

_SERVE = "import sys, uvicorn; from {0} import {1}; uvicorn.run({1}(*sys.argv[2:]), \
port=int(sys.argv[1]), log_level='warning')"


class Served(NamedTuple):
    """A server in a process of its own: where it answers, and its process (for its CPU)."""

    url: str
    pid: int


def cpu_seconds(pid: int) -> float:
    """The CPU time (user + system) process ``pid`` has used so far (Linux ``/proc``)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@contextlib.contextmanager
def app_process(factory: str, probe: str, *args: str) -> Iterator[Served]:
    """``module:factory(*args)`` (an ASGI app) served by uvicorn in its own process."""
    module, _, name = factory.partition(":")
    port = free_port()
    command = [sys.executable, "-c", _SERVE.format(module, name), str(port), *args]
    url = f"http://127.0.0.1:{port}"
    with server_process(command, url + probe) as process:
        yield Served(url, process.pid)


@contextlib.contextmanager
def proxy_process(upstream: str, *flags: str, checkout: Path | None = None) -> Iterator[Served]:
    """``tts-proxy serve`` in its own process in front of ``upstream`` (its ``/v1`` base);
    ``flags`` (default: the policy model ``bench``); ``checkout``: the proxy of another
    checkout of this repository (an earlier commit's, for a before/after row)."""
    port = free_port()
    command = [
        *(sys.executable, "-m", "proxy", "serve", "--port", str(port)),
        *("--policy-url", upstream + "/v1", "--log-level", "warning"),
        *(flags or ("--policy-model", "bench")),
    ]
    url = f"http://127.0.0.1:{port}"
    with server_process(command, url + "/metrics", cwd=checkout) as process:
        yield Served(url, process.pid)


@dataclass
class PacedVllm(FakeVllm):
    """A batched call answers after its longest sample's decode time (``per_token_s`` a token:
    the call's critical path, summed in ``critical_s``); streams are paced per token
    (``stream_token_s``)."""

    per_token_s: float = 0.004
    critical_s: float = 0.0

    async def _completions(self, request: Request) -> Any:
        body = await request.json()
        if body.get("stream"):
            self.completion_calls.append(body)
            return StreamingResponse(self._stream_completion(body), media_type="text/event-stream")
        answer = self._answer(body)
        delay = max(len(tokens_of(c["text"])) for c in answer["choices"]) * self.per_token_s
        self.critical_s += delay
        await asyncio.sleep(delay)
        return answer
