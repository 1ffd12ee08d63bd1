"""The fake vLLM's legacy completions for log-likelihood evaluation (lm-eval's
``local-completions``): ``echo: true`` with token-id prompts (or text, one character per token),
each prompt token and the one generated token at log-probability -0.1 per token (vLLM answers
null for the first prompt token, which no client reads: a number here, for strict clients).
"""

from __future__ import annotations

from typing import Any

__all__ = ["TOKEN_LOGPROB", "echo_answer", "is_echo", "prompt_list"]

TOKEN_LOGPROB = -0.1


def is_echo(body: dict[str, Any]) -> bool:
    return bool(body.get("echo"))


def _ids(prompt: Any) -> list[int]:
    return list(prompt) if isinstance(prompt, list) else [ord(c) for c in str(prompt)]


def prompt_list(raw: Any) -> list[Any]:
    """A completions ``prompt`` as a list of prompts: text, or token ids (one list each)."""
    if isinstance(raw, list) and raw and isinstance(raw[0], int):
        return [raw]
    return list(raw) if isinstance(raw, list) else [raw]


def echo_answer(body: dict[str, Any], model: str) -> dict[str, Any]:
    prompts = prompt_list(body["prompt"])
    choices = []
    for index, prompt in enumerate(prompts):
        ids = [*_ids(prompt), ord(".")]  # the prompt echoed, then one generated token
        tokens = [chr(i) if 0 <= i < 0x110000 else "?" for i in ids]
        choices.append(
            {
                "index": index,
                "text": "".join(tokens),
                "finish_reason": "length",
                "logprobs": {
                    "tokens": tokens,
                    "token_logprobs": [TOKEN_LOGPROB] * len(ids),
                    "top_logprobs": [{t: TOKEN_LOGPROB} for t in tokens],
                    "text_offset": list(range(len(ids))),
                },
            }
        )
    prompt_tokens = sum(len(_ids(p)) for p in prompts)
    usage = {"prompt_tokens": prompt_tokens, "completion_tokens": len(prompts)}
    usage["total_tokens"] = prompt_tokens + len(prompts)
    return {
        "id": "cmpl-echo",
        "object": "text_completion",
        "created": 0,
        "model": model,
        "choices": choices,
        "usage": usage,
    }
