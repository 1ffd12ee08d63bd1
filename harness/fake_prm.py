"""A scripted PRM server on real HTTP, speaking the proxy's ``POST /v1/score``."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from harness.fake_servers import SCORE_TAG, tokens_of

__all__ = ["FakePrm"]


@dataclass
class FakePrm:
    """Scores a step from a ``<0.7>`` tag in it (``default`` otherwise)."""

    default: float = 0.5
    model: str = "fake-prm"
    calls: list[dict[str, Any]] = field(default_factory=list)

    def app(self) -> FastAPI:
        app = FastAPI()
        app.get("/health")(self._health)
        app.post("/v1/score")(self._score)
        return app

    async def _health(self) -> dict[str, str]:
        return {"status": "ok"}

    async def _score(self, request: Request) -> Any:
        body = await request.json()
        self.calls.append(body)
        if any(not step for candidate in body["candidates"] for step in candidate):
            return JSONResponse({"error": {"message": "empty step"}}, 400)
        scores = [[self._one(step) for step in candidate] for candidate in body["candidates"]]
        tokens = sum(len(tokens_of(s)) for c in body["candidates"] for s in c)
        return {"model": self.model, "scores": scores, "usage": {"prompt_tokens": tokens}}

    def _one(self, step: str) -> float:
        found = SCORE_TAG.findall(step)
        return float(found[-1]) if found else self.default
