"""A scripted OpenAI-compatible policy upstream on real HTTP: a fake vLLM server (the fake PRM
server is ``harness.fake_prm``).

``FakeVllm`` renders chats with a ChatML template, tokenizes one character per token id (so
``/detokenize`` is exact), and answers ``/v1/completions`` from ``script(prefix, i)``: the rest of
sample ``i``'s answer after the partial answer ``prefix``. It cuts at ``stop`` strings and
``max_tokens`` (whitespace-separated words are tokens) and reports usage as vLLM does. A raw
prompt (legacy completions, ``add_special_tokens`` true) continues after its last ``Answer:``.
``/v1/responses`` answers a plain text response (streamed as vLLM does) and records the call.
"""

from __future__ import annotations

import asyncio
import json
import math
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse

from harness.fake_chat import (
    plain_answer,
    plain_events,
    tool_call_answer,
    tool_call_events,
    wants_tool_call,
)
from harness.fake_loglikelihood import echo_answer, is_echo, prompt_list

_ASSISTANT = "<|im_start|>assistant\n"
_TOKEN = re.compile(r"\S+\s*|\s+")
SCORE_TAG = re.compile(r"<(\d(?:\.\d+)?)>")  # a step's scripted score: "<0.7>"

Script = Callable[[str, int], str]


def tokens_of(text: str) -> list[str]:
    return _TOKEN.findall(text)


def _char(token: int) -> str:
    """A token id as the character it stands for; ids that are no Unicode scalar value (past
    U+10FFFF, or a lone surrogate, which JSON cannot carry as text) as "?"."""
    return chr(token) if token < 0xD800 or 0xE000 <= token < 0x110000 else "?"


def render_chat(messages: list[dict[str, Any]], add_generation_prompt: bool, cont: bool) -> str:
    parts = []
    for i, m in enumerate(messages):
        content = m.get("content") or ""
        last = i == len(messages) - 1
        end = "" if (cont and last) else "<|im_end|>\n"
        parts.append(f"<|im_start|>{m['role']}\n{content}{end}")
    if add_generation_prompt:
        parts.append(_ASSISTANT)
    return "".join(parts)


_VERIFY = "Is the new step correct?"
_NEW_STEP = re.compile(r"New step:\n(.*?)\n\nIs the new step correct\?", re.S)


def _verdict(prompt: str, index: int, top: int) -> dict[str, Any]:
    """One greedy token, "Yes" or "No", with P(yes) = the new step's ``<score>`` tag (0.5 if
    none) among the top log-probs, as vLLM reports them for ``logprobs: top``."""
    match = _NEW_STEP.search(prompt)
    tag = SCORE_TAG.search(match[1]) if match else None
    p = min(max(float(tag[1]) if tag else 0.5, 1e-4), 1 - 1e-4)
    token = "Yes" if p >= 0.5 else "No"
    tops = [{"Yes": math.log(p), " No": math.log(1 - p)}] if top >= 2 else None
    return {
        "index": index,
        "text": token,
        "finish_reason": "length",
        "stop_reason": None,
        "logprobs": {
            "tokens": [token],
            "token_logprobs": [math.log(max(p, 1 - p))],
            "text_offset": [0],
            "top_logprobs": tops,
        },
    }


_GENPRM = "Let's analyze the Paragraph "
_LAST_USER = re.compile(r".*<\|im_start\|>user\n(.*?)<\|im_end\|>", re.S)


def _genprm_turn(prompt: str, index: int, top: int) -> dict[str, Any]:
    """GenPRM's two calls: after ``Let's analyze the Paragraph k ...: `` an analysis naming the
    paragraph and its ``<score>`` tag (ended by ``</analyze>``, which a stop string cuts); after
    ``$\\boxed{`` the verdict token, P(yes) = the last user turn's (the paragraph's) tag."""
    user = _LAST_USER.match(prompt)
    tag = SCORE_TAG.search(user[1]) if user else None
    p = min(max(float(tag[1]) if tag else 0.5, 1e-4), 1 - 1e-4)
    if not prompt.endswith("\\boxed{"):
        number = prompt.rsplit(_GENPRM, 1)[1].split(" ", 1)[0]
        text = f"paragraph {number} looks {'right' if p >= 0.5 else 'wrong'} ({p:g})."
        tokens = tokens_of(text)
        return {
            "index": index,
            "text": text,
            "finish_reason": "stop",
            "stop_reason": "</analyze>",
            "logprobs": None,
            "n_tokens": len(tokens),
        }
    verdict = _verdict(f"New step:\n<{p}>\n\n{_VERIFY}", index, top)
    return verdict | {"n_tokens": 1}


def _top_logprobs(token: str, k: int) -> dict[str, float]:
    """k alternatives: peaked (confidence ~7) for a plain token, flat (~1.6) for one with ``~``."""
    if "~" in token:
        return {f"{token}#{j}": math.log(1 / k) for j in range(k)}
    return {token: -0.01} | {f"{token}#{j}": -8.0 for j in range(1, k)}


def default_script(prefix: str, i: int) -> str:
    """Two steps, then an answer that depends on the sample: answers 4, 4, 5, 4, 6, ..."""
    depth = prefix.count("\n\n")
    answer = [4, 4, 5, 4, 6, 4, 5, 7][i % 8]
    steps = [f"Step {k + 1}: think about it <0.{9 - i % 8}>.\n\n" for k in range(depth, 2)]
    return "".join(steps) + f"So the answer is \\boxed{{{answer}}} <0.{9 - i % 8}>"


class AsciiJSONResponse(JSONResponse):
    """JSON with every non-ASCII character escaped (``json.dumps``' default), so text no UTF-8
    can carry (a lone surrogate a test scripts) still goes out, as a server may send it."""

    def render(self, content: Any) -> bytes:
        return json.dumps(content, allow_nan=False, separators=(",", ":")).encode("ascii")


@dataclass
class FakeVllm:
    script: Script = default_script
    # Answers whole samples from the whole prompt (the problem's text) and the sample's index
    # instead of ``script``: a policy whose accuracy differs by problem.
    prompt_script: Script | None = None
    model: str = "fake-policy"
    delay_s: float = 0.0
    fail_statuses: list[int] = field(default_factory=list)  # answered before real ones
    fail_messages: list[str] = field(default_factory=list)  # their error messages, in order
    retry_after: str | None = None
    cached_tokens: int | None = None  # reported per /v1/completions call as vLLM's cache hits
    # > 0: /v1/completions sends its answer one byte per trickle_s, chat streams a chunk per
    # trickle_s (for a long while)
    trickle_s: float = 0.0
    stream_token_s: float = 0.002  # streamed completions: one token per this long
    break_stream_after: int | None = None  # chat streams: drop the connection after this many
    streams_opened: int = 0
    streams_closed_early: int = 0  # by the client, before the last token
    stream_tokens_sent: int = 0
    completion_calls: list[dict[str, Any]] = field(default_factory=list)
    chat_calls: list[dict[str, Any]] = field(default_factory=list)
    responses_calls: list[dict[str, Any]] = field(default_factory=list)
    reported_usage: list[dict[str, int]] = field(default_factory=list)
    auth_headers: list[str | None] = field(default_factory=list)
    traceparents: list[str | None] = field(default_factory=list)  # W3C trace context per call
    tokenizer_info: bool = True
    chat_reasoning: str | None = None  # chat answers' ``reasoning`` (vLLM's reasoning parser)
    tokenizer_calls: list[dict[str, Any]] = field(default_factory=list)
    in_flight: int = 0
    cancelled: int = 0
    started: threading.Event = field(default_factory=threading.Event)

    def app(self) -> FastAPI:
        app = FastAPI(default_response_class=AsciiJSONResponse)
        app.get("/v1/models")(self._models)
        app.get("/health")(self._health)
        app.post("/tokenize")(self._tokenize)
        app.post("/detokenize")(self._detokenize)
        if self.tokenizer_info:  # vLLM serves it only with --enable-tokenizer-info-endpoint
            app.get("/tokenizer_info")(self._tokenizer_info)
        app.post("/v1/completions")(self._completions)
        app.post("/v1/chat/completions")(self._chat)
        app.post("/v1/responses")(self._responses)
        return app

    async def _models(self) -> dict[str, Any]:
        return {"object": "list", "data": [{"id": self.model, "object": "model"}]}

    async def _health(self) -> Response:
        return Response(status_code=200)  # as vLLM: 200 with an empty body

    async def _tokenize(self, request: Request) -> Any:
        body = await request.json()
        self.tokenizer_calls.append(body)
        if body.get("model") not in (None, self.model):
            return JSONResponse({"error": {"message": "no such model", "code": 404}}, 404)
        if body.get("prompt") is not None:
            text = body["prompt"]
        else:
            text = render_chat(
                body["messages"],
                body.get("add_generation_prompt", True),
                body.get("continue_final_message", False),
            )
        return {"tokens": [ord(c) for c in text], "count": len(text), "max_model_len": 8192}

    async def _tokenizer_info(self) -> dict[str, Any]:
        return {
            "tokenizer_class": "CharacterTokenizer",
            "model_max_length": 8192,
            "eos_token": "<|im_end|>",
            "chat_template": "chatml",
        }

    async def _detokenize(self, request: Request) -> dict[str, Any]:
        body = await request.json()
        return {"prompt": "".join(_char(t) for t in body["tokens"])}

    async def _completions(self, request: Request) -> Any:
        body = await request.json()
        self.completion_calls.append(body)
        self.auth_headers.append(request.headers.get("authorization"))
        self.traceparents.append(request.headers.get("traceparent"))
        if self.fail_statuses:
            return self._injected_failure()
        if await self._wait(request):
            return JSONResponse({}, 499)
        if is_echo(body):  # log-likelihood evaluation
            return echo_answer(body, self.model)
        if body.get("stream"):
            return StreamingResponse(self._stream_completion(body), media_type="text/event-stream")
        if self.trickle_s > 0:
            return StreamingResponse(
                self._trickle(json.dumps(self._answer(body))), media_type="application/json"
            )
        return self._answer(body)

    def _injected_failure(self) -> JSONResponse:
        status = self.fail_statuses.pop(0)
        headers = {"Retry-After": self.retry_after} if self.retry_after else {}
        message = self.fail_messages.pop(0) if self.fail_messages else f"injected {status}"
        return JSONResponse({"error": {"message": message}}, status, headers)

    async def _trickle(self, text: str) -> Any:
        for char in text:
            yield char
            await asyncio.sleep(self.trickle_s)

    def _answer(self, body: dict[str, Any], first_sample: int = 0) -> dict[str, Any]:
        # Token-id prompts (lm-eval's, tokenized by /tokenize here): one character per id.
        prompts = [
            "".join(map(chr, p)) if isinstance(p, list) else p for p in prompt_list(body["prompt"])
        ]
        n = int(body.get("n", 1))
        choices = []
        completion_tokens = 0
        for p, prompt in enumerate(prompts):
            if _GENPRM in prompt:  # a GenPRM-style verifier's analysis or verdict
                choice = _genprm_turn(prompt, p, int(body.get("logprobs") or 0))
                completion_tokens += choice.pop("n_tokens")
                choices.append(choice)
                continue
            if _VERIFY in prompt:  # a verifier's question about one step
                choice = _verdict(prompt, p, int(body.get("logprobs") or 0))
                completion_tokens += 1
                choices.append(choice)
                continue
            if body.get("add_special_tokens", True):  # a client's raw prompt
                prefix = prompt.rsplit("Answer:", 1)[1] if "Answer:" in prompt else ""
            else:
                assert prompt.count(_ASSISTANT) >= 1, "prompt lost its chat template"
                prefix = prompt.rsplit(_ASSISTANT, 1)[1]
            for i in range(n):
                sample = first_sample + i
                script = self.prompt_script if self.prompt_script and not prefix else None
                text = script(prompt, sample) if script else self.script(prefix, sample)
                choice = self._choice(text, body, p * n + i, sample)
                completion_tokens += len(choice["logprobs"]["tokens"])
                choices.append(choice)
        usage: dict[str, Any] = {
            "prompt_tokens": sum(len(tokens_of(p)) for p in prompts),
            "completion_tokens": completion_tokens,
        }
        usage["total_tokens"] = usage["prompt_tokens"] + usage["completion_tokens"]
        self.reported_usage.append(usage)
        if self.cached_tokens is not None:
            usage = usage | {"prompt_tokens_details": {"cached_tokens": self.cached_tokens}}
        return {
            "id": "cmpl-x",
            "object": "text_completion",
            "created": 0,
            "model": self.model,
            "choices": choices,
            "usage": usage,
        }

    def _choice(self, text: str, body: dict[str, Any], index: int, sample: int) -> dict[str, Any]:
        finish, stop_reason = "stop", None
        for stop in body.get("stop") or []:
            pos = text.find(stop)
            if pos >= 0:
                keep = body.get("include_stop_str_in_output", False)
                text, stop_reason = text[: pos + (len(stop) if keep else 0)], stop
                break
        tokens = tokens_of(text)
        if len(tokens) > int(body.get("max_tokens", 10**6)):
            tokens = tokens[: int(body["max_tokens"])]
            text, finish, stop_reason = "".join(tokens), "length", None
        offsets = [sum(len(t) for t in tokens[:k]) for k in range(len(tokens))]
        logprob = -0.05 * (sample + 1)
        top = int(body.get("logprobs") or 0)
        return {
            "index": index,
            "text": text,
            "finish_reason": finish,
            "stop_reason": stop_reason,
            "logprobs": {
                "tokens": tokens,
                "token_logprobs": [logprob] * len(tokens),
                "text_offset": offsets,
                "top_logprobs": [_top_logprobs(t, top) for t in tokens] if top else None,
            },
        }

    async def _stream_completion(self, body: dict[str, Any]) -> Any:
        """One sample, a token per event with vLLM's continuous usage; counts what was sent
        and whether the client closed the stream before the end."""
        # Stream k is sample k of the prompt: streamed samples differ from each other.
        answer = self._answer(body | {"stream": False}, first_sample=self.streams_opened)
        self.reported_usage.pop()  # what it reports is what it sent (below)
        choice = answer["choices"][0]
        tokens, lp = choice["logprobs"]["tokens"], choice["logprobs"]
        prompt_tokens = answer["usage"]["prompt_tokens"]
        self.streams_opened += 1
        finished, sent = False, 0
        try:
            for k, token in enumerate(tokens):
                await asyncio.sleep(self.stream_token_s)
                last = k == len(tokens) - 1
                event = {
                    "id": "cmpl-s",
                    "object": "text_completion",
                    "created": 0,
                    "model": self.model,
                    "choices": [
                        {
                            "index": 0,
                            "text": token,
                            "finish_reason": choice["finish_reason"] if last else None,
                            "logprobs": {
                                "tokens": [token],
                                "token_logprobs": [lp["token_logprobs"][k]],
                                "text_offset": [lp["text_offset"][k]],
                                "top_logprobs": (lp["top_logprobs"] or [None])[k : k + 1]
                                if lp["top_logprobs"]
                                else None,
                            },
                        }
                    ],
                    "usage": {
                        "prompt_tokens": prompt_tokens,
                        "completion_tokens": k + 1,
                        "total_tokens": prompt_tokens + k + 1,
                    },
                }
                self.stream_tokens_sent += 1
                sent += 1
                yield f"data: {json.dumps(event)}\n\n"
            finished = True
            yield "data: [DONE]\n\n"
        finally:
            if not finished:
                self.streams_closed_early += 1
            self.reported_usage.append(
                {
                    "prompt_tokens": prompt_tokens,
                    "completion_tokens": sent,
                    "total_tokens": prompt_tokens + sent,
                }
            )

    async def _responses(self, request: Request) -> Any:
        return await _responses_endpoint(self, request)

    async def _wait(self, request: Request) -> bool:
        """Sleep ``delay_s`` unless the caller goes away first (then counted; True)."""
        self.in_flight += 1
        try:
            self.started.set()
            until = time.monotonic() + self.delay_s
            while time.monotonic() < until:
                if await request.is_disconnected():  # the proxy gave up on us
                    self.cancelled += 1
                    return True
                await asyncio.sleep(0.02)
        finally:
            self.in_flight -= 1
        return False

    async def _chat(self, request: Request) -> Any:
        body = await request.json()
        self.chat_calls.append(body)
        if self.fail_statuses:
            return self._injected_failure()
        if await self._wait(request):
            return JSONResponse({}, 499)
        if wants_tool_call(body):
            if body.get("stream"):
                calls = tool_call_events(body, self.model)
                return StreamingResponse(calls, media_type="text/event-stream")
            return tool_call_answer(body, self.model)
        if not body.get("stream"):
            return plain_answer(body, self.model, self.chat_reasoning)
        events = plain_events(
            self.model, self.chat_reasoning, self.trickle_s, self.break_stream_after
        )
        return StreamingResponse(events, media_type="text/event-stream")


def _response(model: str, text: str) -> dict[str, Any]:
    item = {
        "id": "msg_up",
        "type": "message",
        "status": "completed",
        "role": "assistant",
        "content": [{"type": "output_text", "text": text, "annotations": []}],
    }
    cache = {"cached_tokens": 0, "cache_write_tokens": 0}
    usage = {
        "input_tokens": 7,
        "input_tokens_details": cache,
        "output_tokens": 3,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": 10,
    }
    return {
        "id": "resp_up",
        "object": "response",
        "created_at": 0,
        "status": "completed",
        "model": model,
        "output": [item],
        "parallel_tool_calls": True,
        "tool_choice": "auto",
        "tools": [],
        "usage": usage,
    }


async def _responses_endpoint(fake: FakeVllm, request: Request) -> Any:
    body = await request.json()
    fake.responses_calls.append(body)
    if fake.fail_statuses:
        return fake._injected_failure()
    done = _response(fake.model, "plain response from the policy")
    if not body.get("stream"):
        return done

    async def events() -> Any:
        pending = done | {"status": "in_progress", "output": [], "usage": None}
        delta = {
            "type": "response.output_text.delta",
            "item_id": "msg_up",
            "output_index": 0,
            "content_index": 0,
            "delta": "plain response",
            "logprobs": [],
        }
        sequence: list[dict[str, Any]] = [
            {"type": "response.created", "response": pending},
            delta,
            {"type": "response.completed", "response": done},
        ]
        for number, event in enumerate(sequence):
            event["sequence_number"] = number
            yield f"event: {event['type']}\ndata: {json.dumps(event)}\n\n"

    return StreamingResponse(events(), media_type="text/event-stream")
