"""``POST /v1/completions`` (legacy): passed through to the policy server unchanged by default,
so log-likelihood evaluation, ``echo`` and ``logprobs`` reach vLLM untouched whatever the
server's default strategy. A plain prompt string is searched when a strategy is asked for
(``X-TTS-Strategy``, ``tts.strategy``, a model alias) or ``best_of`` > 1 (served as Best-of-N
with the configured scorer; vLLM's V1 engine dropped ``best_of``).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import ClassVar

from fastapi import APIRouter
from fastapi.responses import Response, StreamingResponse

from proxy.api.endpoint import Call, add_route, large_api_answer, relay
from proxy.api.sse import DONE, sse
from proxy.errors import InvalidRequestError
from proxy.search.plan import Plan, SearchRequest, split_alias
from proxy.wire.chat import (
    ChatCompletion,
    CompletionRequest,
    TextChoice,
    TextCompletion,
)
from proxy.wire.json_types import JSONObject

__all__ = ["CompletionsEndpoint", "router"]

router = APIRouter()
_PASS_REASON = (
    "legacy completions pass through unless a strategy is asked for "
    "(X-TTS-Strategy, tts.strategy, a model alias, or best_of > 1)"
)
_UNUSED_BY_SEARCH = ("echo", "logprobs", "suffix")


@dataclass(frozen=True, slots=True)
class CompletionsEndpoint:
    """``POST /v1/completions`` on the request skeleton."""

    body: CompletionRequest
    id_prefix: ClassVar[str] = "cmpl-"
    upstream_path: ClassVar[str] = "/completions"

    @property
    def is_stream(self) -> bool:
        return self.body.stream

    def search_request(self, headers: Mapping[str, str]) -> SearchRequest:
        """The prompt as one user message (what planning, the scorer and comparisons read) and
        as the raw text the search continues. A plain prompt passes through unless a strategy
        is asked for or ``best_of`` > 1 asks for Best-of-N."""
        body = self.body
        if body.best_of is not None and body.best_of < body.n:
            raise InvalidRequestError(
                f"best_of ({body.best_of}) must be at least n ({body.n})", param="best_of"
            )
        asked = headers.get("x-tts-strategy") or (body.tts and body.tts.strategy)
        asked = asked or split_alias(body.model)[1]
        is_best_of = body.best_of is not None and body.best_of > 1
        tts = body.tts.model_dump(exclude_none=True) if body.tts else {}
        if is_best_of and not asked:
            tts = {"strategy": "best_of_n", "budget": body.best_of} | tts
        ignored = [name for name in _UNUSED_BY_SEARCH if getattr(body, name) not in (None, False)]
        if body.best_of is not None and (asked or "best_of_n") != "best_of_n":
            ignored.append("best_of")
        is_searched = bool(asked or is_best_of) and asked != "none"
        prompt = _one_prompt(body) if is_searched else None
        return SearchRequest(
            model=body.model,
            messages=({"role": "user", "content": prompt or ""},),
            tts=tts,
            n=body.n,
            stop=tuple(body.stop) if isinstance(body.stop, list) else body.stop,
            seed=body.seed,
            max_tokens=body.max_tokens,
            temperature=body.temperature,
            top_p=body.top_p,
            extra=body.model_extra or {},
            raw_prompt=prompt,
            default_strategy=None if asked or is_best_of else ("none", _PASS_REASON),
            ignored=tuple(ignored),
        )

    def passthrough_payload(self) -> JSONObject:
        return self.body.model_dump(exclude={"tts"}, exclude_unset=True)

    async def passthrough(self, call: Call, plan: Plan, payload: JSONObject) -> Response:
        return await relay(call, self.upstream_path, payload, plan, is_stream=self.is_stream)

    async def large_api(self, call: Call, plan: Plan, request: SearchRequest) -> Response:
        """Large APIs speak chat: the prompt goes as one user message, the answer comes back
        as a text completion."""
        body = self.body
        prompt = _one_prompt(body)
        chat = request.chat_params() | {"messages": [{"role": "user", "content": prompt}]}
        if body.stream:
            chat["stream"] = True
            if body.stream_options is not None:
                chat["stream_options"] = body.stream_options.model_dump()
        return await large_api_answer(call, plan, chat, shape=_as_text, shape_chunk=_as_text)

    def render(self, call: Call, completion: ChatCompletion) -> JSONObject:
        return _text_completion(completion).model_dump(exclude_none=False)

    def stream(
        self, call: Call, work: Callable[[], Awaitable[ChatCompletion]]
    ) -> StreamingResponse:
        options = self.body.stream_options
        include_usage = bool(options and options.include_usage)
        return call.events(work, finish=lambda done: _chunks(_text_completion(done), include_usage))


add_route(
    router,
    "/v1/completions",
    CompletionsEndpoint,
    CompletionRequest,
    name="completions",
    response_model=TextCompletion,
)


def _as_text(data: JSONObject) -> JSONObject:
    """A chat completion (or chunk) from a large API as a legacy text completion (or chunk)."""
    choices = [
        {
            "index": c.get("index", 0),
            "text": ((c.get("message") or c.get("delta") or {}).get("content") or ""),
            "logprobs": None,
            "finish_reason": c.get("finish_reason"),
        }
        for c in data.get("choices") or []
    ]
    shaped = {k: data.get(k) for k in ("id", "created", "model", "system_fingerprint")}
    shaped |= {"object": "text_completion", "choices": choices}
    if data.get("usage") is not None:
        shaped["usage"] = data["usage"]
    return shaped


def _one_prompt(body: CompletionRequest) -> str:
    prompt = body.prompt
    if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], str):
        prompt = prompt[0]
    if not isinstance(prompt, str) or not prompt:
        raise InvalidRequestError(
            "a search needs one non-empty prompt string; token ids and prompt lists are passed "
            "through only (drop the strategy to pass this request through)",
            param="prompt",
        )
    return prompt


def _text_completion(completion: ChatCompletion) -> TextCompletion:
    return TextCompletion(
        id=completion.id,
        created=completion.created,
        model=completion.model,
        usage=completion.usage,
        tts=completion.tts,
        choices=[
            TextChoice(index=c.index, text=c.message.content or "", finish_reason=c.finish_reason)
            for c in completion.choices
        ],
    )


def _chunks(done: TextCompletion, include_usage: bool) -> Iterator[bytes]:
    """OpenAI's legacy stream: one chunk per choice, ``tts`` on the last, usage if asked."""
    for i, choice in enumerate(done.choices):
        last = i == len(done.choices) - 1
        chunk: JSONObject = done.model_dump(exclude={"usage", "tts"})
        chunk["choices"] = [choice.model_dump()]
        if last and done.tts is not None:
            chunk["tts"] = done.tts.model_dump()
        if include_usage:
            chunk["usage"] = None
        yield sse(chunk)
    if include_usage:
        final = done.model_dump(exclude={"tts"}) | {"choices": []}
        yield sse(final)
    yield DONE
