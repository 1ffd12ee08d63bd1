"""A scripted "large API": an OpenAI-compatible ``/v1/chat/completions`` on real HTTP, for
``tts-eval`` (litellm's ``openai/`` provider with ``api_base``) and the proxy's shadow mode.

``answer(messages)`` gives the reply text. ``delay_s`` delays each reply; ``gate`` (when set)
holds every reply until it is released; ``fail_statuses`` are answered first, one per call.
Usage counts whitespace-separated words.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

__all__ = ["FakeChatApi"]

Answer = Callable[[list[dict[str, Any]]], str]


def _boxed_four(_messages: list[dict[str, Any]]) -> str:
    return "Adding the two numbers gives \\boxed{4}."


@dataclass
class FakeChatApi:
    answer: Answer = _boxed_four
    model: str = "fake-big"
    gate: threading.Event | None = None
    gate_after: int = 0  # this many calls pass before the gate applies
    fail_statuses: list[int] = field(default_factory=list)
    quote_request_in_errors: bool = False  # as some providers do: the messages in the error text
    delay_s: float = 0.0  # before each reply, without blocking other requests
    calls: list[dict[str, Any]] = field(default_factory=list)
    headers: list[dict[str, str]] = field(default_factory=list)  # each call's, names lower-case
    finished: int = 0
    in_flight: int = 0
    peak_in_flight: int = 0

    def app(self) -> FastAPI:
        app = FastAPI()
        app.post("/v1/chat/completions")(self._chat)
        app.post("/chat/completions")(self._chat)
        return app

    async def _chat(self, request: Request) -> Any:
        body = await request.json()
        self.calls.append(body)
        self.headers.append(dict(request.headers))
        if self.fail_statuses:
            status = self.fail_statuses.pop(0)
            said = f"injected {status}"
            if self.quote_request_in_errors:
                said += f": could not process {body.get('messages')!r}"
            return JSONResponse({"error": {"message": said, "type": "x"}}, status)
        self.in_flight += 1
        self.peak_in_flight = max(self.peak_in_flight, self.in_flight)
        try:
            await asyncio.sleep(self.delay_s)
            if self.gate is not None and len(self.calls) > self.gate_after:  # set by the test
                await asyncio.to_thread(self.gate.wait)
        finally:
            self.in_flight -= 1
        text = self.answer(body["messages"])
        prompt_tokens = sum(len(str(m.get("content", "")).split()) for m in body["messages"])
        completion_tokens = len(text.split())
        self.finished += 1
        return {
            "id": f"chatcmpl-fake{len(self.calls)}",
            "object": "chat.completion",
            "created": 0,
            "model": body.get("model", self.model),
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": text},
                    "finish_reason": "stop",
                }
            ],
            "usage": {
                "prompt_tokens": prompt_tokens,
                "completion_tokens": completion_tokens,
                "total_tokens": prompt_tokens + completion_tokens,
            },
        }
