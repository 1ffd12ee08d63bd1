"""OpenAI Responses API wire models (``POST /v1/responses``): the request, the ``response``
object and its stream events. Field order follows the OpenAI reference; requests allow unknown
fields (listed in ``tts.ignored_params`` when a search cannot honour them).
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from proxy.wire.json_types import JSONValue
from proxy.wire.text import valid_text
from proxy.wire.tts import TtsOptions, TtsReport

__all__ = [
    "ContentPartEvent",
    "ErrorEvent",
    "IncompleteDetails",
    "InputTokensDetails",
    "LifecycleEvent",
    "OutputItemEvent",
    "OutputMessage",
    "OutputText",
    "OutputTokensDetails",
    "ReasoningItem",
    "ResponseError",
    "ResponseObject",
    "ResponseStatus",
    "ResponsesRequest",
    "ResponsesUsage",
    "TextDeltaEvent",
    "TextDoneEvent",
]

ResponseStatus = Literal["completed", "failed", "in_progress", "incomplete"]


class ResponsesRequest(BaseModel):
    model_config = ConfigDict(extra="allow")

    model: str
    input: str | list[dict[str, JSONValue]]
    background: bool | None = None
    conversation: JSONValue = None
    include: list[str] | None = None
    instructions: str | None = None
    max_output_tokens: int | None = Field(default=None, ge=1)
    metadata: dict[str, str] | None = None
    parallel_tool_calls: bool | None = None
    previous_response_id: str | None = None
    prompt: JSONValue = None
    reasoning: dict[str, JSONValue] | None = None
    store: bool | None = None
    stream: bool = False
    temperature: float | None = Field(default=None, ge=0.0, le=2.0)
    text: dict[str, JSONValue] | None = None
    tool_choice: JSONValue = None
    tools: list[JSONValue] | None = None
    top_p: float | None = Field(default=None, gt=0.0, le=1.0)
    truncation: Literal["auto", "disabled"] | None = None
    user: str | None = None
    tts: TtsOptions | None = None

    _text = field_validator("input", "instructions")(valid_text)


class OutputText(BaseModel):
    type: Literal["output_text"] = "output_text"
    text: str
    annotations: list[JSONValue] = Field(default_factory=list)
    logprobs: list[JSONValue] = Field(default_factory=list)


class OutputMessage(BaseModel):
    id: str
    type: Literal["message"] = "message"
    status: Literal["in_progress", "completed", "incomplete"]
    role: Literal["assistant"] = "assistant"
    content: list[OutputText]


class ReasoningText(BaseModel):
    type: Literal["reasoning_text"] = "reasoning_text"
    text: str


class ReasoningItem(BaseModel):
    """A reasoning model's thinking, an output item before the answer's message."""

    id: str
    type: Literal["reasoning"] = "reasoning"
    summary: list[JSONValue] = Field(default_factory=list)
    content: list[ReasoningText]
    status: Literal["in_progress", "completed", "incomplete"] = "completed"


class InputTokensDetails(BaseModel):
    cached_tokens: int
    cache_write_tokens: int = 0


class OutputTokensDetails(BaseModel):
    reasoning_tokens: int


class ResponsesUsage(BaseModel):
    input_tokens: int
    input_tokens_details: InputTokensDetails
    output_tokens: int
    output_tokens_details: OutputTokensDetails
    total_tokens: int


class IncompleteDetails(BaseModel):
    reason: Literal["max_output_tokens", "content_filter"]


class ResponseError(BaseModel):
    code: Literal["server_error", "rate_limit_exceeded", "invalid_prompt"]
    message: str


class ResponseObject(BaseModel):
    id: str
    object: Literal["response"] = "response"
    created_at: int
    status: ResponseStatus
    background: bool = False
    error: ResponseError | None = None
    incomplete_details: IncompleteDetails | None = None
    instructions: str | None = None
    max_output_tokens: int | None = None
    model: str
    output: list[ReasoningItem | OutputMessage]
    parallel_tool_calls: bool = True
    previous_response_id: None = None
    reasoning: dict[str, JSONValue] | None = None
    store: bool = False
    temperature: float | None = None
    text: dict[str, JSONValue] = Field(default_factory=lambda: {"format": {"type": "text"}})
    tool_choice: JSONValue = "auto"
    tools: list[JSONValue] = Field(default_factory=list)
    top_p: float | None = None
    truncation: Literal["auto", "disabled"] = "disabled"
    usage: ResponsesUsage | None = None
    user: str | None = None
    metadata: dict[str, str] = Field(default_factory=dict)
    tts: TtsReport | None = None


class LifecycleEvent(BaseModel):
    type: Literal[
        "response.created",
        "response.in_progress",
        "response.completed",
        "response.incomplete",
        "response.failed",
    ]
    sequence_number: int
    response: ResponseObject


class OutputItemEvent(BaseModel):
    type: Literal["response.output_item.added", "response.output_item.done"]
    sequence_number: int
    output_index: int
    item: ReasoningItem | OutputMessage


class ContentPartEvent(BaseModel):
    type: Literal["response.content_part.added", "response.content_part.done"]
    sequence_number: int
    item_id: str
    output_index: int
    content_index: int
    part: OutputText


class TextDeltaEvent(BaseModel):
    type: Literal["response.output_text.delta"] = "response.output_text.delta"
    sequence_number: int
    item_id: str
    output_index: int
    content_index: int
    delta: str
    logprobs: list[JSONValue] = Field(default_factory=list)


class TextDoneEvent(BaseModel):
    type: Literal["response.output_text.done"] = "response.output_text.done"
    sequence_number: int
    item_id: str
    output_index: int
    content_index: int
    text: str
    logprobs: list[JSONValue] = Field(default_factory=list)


class ErrorEvent(BaseModel):
    type: Literal["error"] = "error"
    sequence_number: int
    code: str | None
    message: str
    param: str | None = None
