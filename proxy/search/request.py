"""One request as the search layer sees it, whatever wire it came in on.

Each endpoint's adapter (``proxy.api``) turns its own wire body into a ``SearchRequest`` once;
planning, the search, the trace and a shadow comparison read only this. No I/O, no wire models.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = ["SearchRequest"]

# Chat-only or per-token fields that a search cannot honour; reported back in ``tts``.
NOT_FORWARDED = frozenset({
    "logprobs", "top_logprobs", "parallel_tool_calls", "functions", "function_call", "store",
    "metadata", "modalities", "audio", "prediction", "service_tier", "reasoning_effort",
    "web_search_options", "stream_options", "user", "logit_bias",
})  # fmt: skip


@dataclass(frozen=True, slots=True)
class SearchRequest:
    """What a search reads from one request.

    ``messages`` are plain chat messages (the shape a chat template and a large API take);
    ``raw_prompt`` is a legacy prompt continued as written, without a template. ``tts`` holds
    the body's search controls (headers win over them). ``extra`` holds body fields outside the
    wire schema: forwarded to the policy server, or listed in ``tts.ignored_params``.
    ``passthrough_reason`` says why this request cannot be searched (tools, non-text input);
    ``default_strategy`` overrides the server's default when none is asked (a plain legacy
    prompt passes through). ``ignored`` names wire fields a search does not use.
    """

    model: str
    messages: tuple[Mapping[str, Any], ...]
    tts: Mapping[str, Any] = field(default_factory=dict)
    n: int = 1
    stop: str | tuple[str, ...] | None = None
    seed: int | None = None
    max_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)
    raw_prompt: str | None = None
    passthrough_reason: str | None = None
    default_strategy: tuple[str, str] | None = None  # (strategy, reason)
    ignored: tuple[str, ...] = ()

    @property
    def question(self) -> str:
        """The question the scorer sees: the last user message's text."""
        for message in reversed(self.messages):
            if message.get("role") == "user":
                return _text(message.get("content"))
        return _text(self.messages[-1].get("content")) if self.messages else ""

    @property
    def forwarded(self) -> dict[str, Any]:
        """Unknown body fields the policy server receives as they are."""
        return {k: v for k, v in self.extra.items() if k not in NOT_FORWARDED}

    @property
    def not_forwarded(self) -> tuple[str, ...]:
        return tuple(sorted(k for k in self.extra if k in NOT_FORWARDED))

    def chat_params(self) -> dict[str, Any]:
        """The request as one chat call's parameters, without ``model`` (a large API's, a
        comparison's baseline): the body's other fields included, as the client sent them."""
        params: dict[str, Any] = dict(self.extra) | {"messages": [dict(m) for m in self.messages]}
        if self.n != 1:
            params["n"] = self.n
        for name in ("stop", "seed", "temperature", "top_p"):
            value = getattr(self, name)
            if value is not None:
                params[name] = list(value) if isinstance(value, tuple) else value
        if self.max_tokens is not None:
            params["max_tokens"] = self.max_tokens
        return params


def _text(content: Any) -> str:
    if isinstance(content, list):
        return "".join(str(part.get("text", "")) for part in content if isinstance(part, dict))
    return content if isinstance(content, str) else ""
