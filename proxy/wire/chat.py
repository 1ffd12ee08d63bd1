"""OpenAI chat-completions wire models, plus our ``tts`` extension object.

Requests allow unknown fields (forwarded to vLLM untouched); the ``tts`` object forbids them.
Field order follows the OpenAI reference. Must not import ``strategies``' I/O-free internals
beyond its public names.
"""

from __future__ import annotations

import functools
import operator
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from proxy.wire.json_types import JSONValue
from proxy.wire.text import valid_text
from proxy.wire.tts import TtsOptions, TtsReport

__all__ = [
    "ChatCompletion",
    "ChatCompletionChunk",
    "ChatCompletionRequest",
    "ChatMessage",
    "Choice",
    "ChunkChoice",
    "CompletionRequest",
    "CompletionTokensDetails",
    "Delta",
    "ErrorBody",
    "ErrorResponse",
    "FinishReason",
    "ModelCard",
    "ModelList",
    "PromptTokensDetails",
    "ResponseMessage",
    "TextChoice",
    "TextCompletion",
    "TtsOptions",
    "TtsReport",
    "Usage",
]


# Why a choice ended: its stop (or a stop string), or the token limit.
FinishReason = Literal["stop", "length"]
Role = Literal["system", "developer", "user", "assistant", "tool", "function"]


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="allow")

    role: Role
    content: str | list[JSONValue] | None = None
    name: str | None = None

    _content = field_validator("content")(valid_text)


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="allow")

    include_usage: bool = False


class ChatCompletionRequest(BaseModel):
    model_config = ConfigDict(extra="allow")

    messages: list[ChatMessage] = Field(min_length=1)
    model: str
    max_completion_tokens: int | None = Field(default=None, ge=1)
    max_tokens: int | None = Field(default=None, ge=1)
    n: int = Field(default=1, ge=1, le=128)
    response_format: dict[str, JSONValue] | None = None
    seed: int | None = None
    stop: str | list[str] | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    temperature: float | None = Field(default=None, ge=0.0, le=2.0)
    tool_choice: JSONValue = None
    tools: list[JSONValue] | None = None
    top_p: float | None = Field(default=None, gt=0.0, le=1.0)
    user: str | None = None
    tts: TtsOptions | None = None


_absent = functools.partial(operator.is_, None)  # a C call: no Python frame per field


class ResponseMessage(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str | None
    refusal: None = None
    # A reasoning model's thinking (never inside ``content``): ``reasoning`` as vLLM names it
    # now, ``reasoning_content`` as it did before (clients read either). Absent otherwise.
    reasoning: str | None = Field(default=None, exclude_if=_absent)
    reasoning_content: str | None = Field(default=None, exclude_if=_absent)


class Choice(BaseModel):
    index: int
    message: ResponseMessage
    logprobs: None = None
    finish_reason: FinishReason


class CompletionTokensDetails(BaseModel):
    reasoning_tokens: int


class PromptTokensDetails(BaseModel):
    cached_tokens: int


class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    prompt_tokens_details: PromptTokensDetails | None = None  # when the policy server reports it
    completion_tokens_details: CompletionTokensDetails


class ChatCompletion(BaseModel):
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    choices: list[Choice]
    usage: Usage
    system_fingerprint: str | None = None
    tts: TtsReport | None = None


class Delta(BaseModel):
    role: Literal["assistant"] | None = None
    content: str | None = None
    reasoning: str | None = Field(default=None, exclude_if=_absent)
    reasoning_content: str | None = Field(default=None, exclude_if=_absent)


class ChunkChoice(BaseModel):
    index: int
    delta: Delta
    logprobs: None = None
    finish_reason: FinishReason | None = None


class ChatCompletionChunk(BaseModel):
    id: str
    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"
    created: int
    model: str
    choices: list[ChunkChoice]
    usage: Usage | None = None
    system_fingerprint: str | None = None
    tts: TtsReport | None = None


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


class ErrorBody(BaseModel):
    message: str
    type: str
    param: str | None = None
    code: str | None = None


class ErrorResponse(BaseModel):
    error: ErrorBody


class CompletionRequest(BaseModel):
    """Legacy ``/v1/completions``. Passed through unchanged unless a strategy is asked for."""

    model_config = ConfigDict(extra="allow")

    model: str
    prompt: str | list[str] | list[int] | list[list[int]]
    best_of: int | None = Field(default=None, ge=1, le=128)
    echo: bool | None = None
    logprobs: int | None = None
    max_tokens: int | None = Field(default=None, ge=1)
    n: int = Field(default=1, ge=1, le=128)
    seed: int | None = None
    stop: str | list[str] | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    suffix: str | None = None
    temperature: float | None = Field(default=None, ge=0.0, le=2.0)
    top_p: float | None = Field(default=None, gt=0.0, le=1.0)
    user: str | None = None
    tts: TtsOptions | None = None

    _prompt = field_validator("prompt")(valid_text)


class TextChoice(BaseModel):
    index: int
    text: str
    logprobs: None = None
    finish_reason: FinishReason | None


class TextCompletion(BaseModel):
    id: str
    object: Literal["text_completion"] = "text_completion"
    created: int
    model: str
    choices: list[TextChoice]
    usage: Usage | None = None
    system_fingerprint: str | None = None
    tts: TtsReport | None = None
