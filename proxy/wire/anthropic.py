"""Anthropic Messages API wire models (``POST /v1/messages``), plus our ``tts`` extension object.

Requests allow unknown fields (listed in ``tts.ignored_params``); content blocks stay JSON and
are checked, block by block, where they are translated (``proxy.api.messages_mapping``), so an
unsupported block is a 400 naming its place (``messages.2.content.0``).
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from proxy.wire.json_types import JSONValue
from proxy.wire.text import valid_text
from proxy.wire.tts import TtsOptions, TtsReport

__all__ = [
    "AnthropicErrorResponse",
    "AnthropicMessage",
    "AnthropicUsage",
    "CountTokensRequest",
    "InputMessage",
    "MessagesRequest",
    "TokenCount",
]


class InputMessage(BaseModel):
    model_config = ConfigDict(extra="allow")

    role: Literal["user", "assistant"]
    content: str | list[dict[str, JSONValue]]

    _content = field_validator("content")(valid_text)


class _Conversation(BaseModel):
    """What a Messages request and a token count share."""

    model_config = ConfigDict(extra="allow")

    model: str
    messages: list[InputMessage] = Field(min_length=1)
    system: str | list[dict[str, JSONValue]] | None = None
    tools: list[dict[str, JSONValue]] | None = None
    tool_choice: dict[str, JSONValue] | None = None
    thinking: dict[str, JSONValue] | None = None

    _system = field_validator("system")(valid_text)


class MessagesRequest(_Conversation):
    max_tokens: int = Field(ge=1)
    metadata: dict[str, JSONValue] | None = None
    stop_sequences: list[str] | None = None
    stream: bool = False
    temperature: float | None = Field(default=None, ge=0.0, le=1.0)
    top_k: int | None = Field(default=None, ge=1)
    top_p: float | None = Field(default=None, gt=0.0, le=1.0)
    tts: TtsOptions | None = None

    _stop = field_validator("stop_sequences")(valid_text)


class CountTokensRequest(_Conversation):
    pass


class TokenCount(BaseModel):
    input_tokens: int


class AnthropicUsage(BaseModel):
    input_tokens: int
    output_tokens: int
    cache_creation_input_tokens: int | None = None
    cache_read_input_tokens: int | None = None


class AnthropicMessage(BaseModel):
    """A finished answer: ``content`` holds ``text`` and ``tool_use`` blocks."""

    id: str
    type: Literal["message"] = "message"
    role: Literal["assistant"] = "assistant"
    content: list[dict[str, JSONValue]]
    model: str
    stop_reason: Literal["end_turn", "max_tokens", "stop_sequence", "tool_use"] | None
    stop_sequence: str | None = None
    usage: AnthropicUsage
    tts: TtsReport | None = None


class _AnthropicError(BaseModel):
    type: str
    message: str


class AnthropicErrorResponse(BaseModel):
    type: Literal["error"] = "error"
    error: _AnthropicError
    request_id: str | None = None
