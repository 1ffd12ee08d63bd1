"""Both sides of a shadow comparison as an ``experiments.Comparison``: our completion and the
baseline's litellm response, with answers, tokens, dollars and latency. Pure functions."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from experiments import Comparison, Price, Side, SideStatus, answers_agree, api_cost
from proxy.errors import ProxyError, UpstreamTimeoutError
from proxy.settings import ProxySettings
from proxy.wire.chat import ChatCompletion
from proxy.wire.json_types import JSONObject
from strategies import extract_answer

__all__ = ["Primary", "Searched", "baseline_side", "comparison"]


@dataclass(frozen=True, slots=True)
class Searched:
    """What was asked of our side: the method, its budget, the known answer if given."""

    strategy: str
    budget: int
    reference: str | None = None


@dataclass(frozen=True, slots=True)
class Primary:
    """Our side of one request, as the handler saw it."""

    request_id: str
    searched: Searched
    completion: ChatCompletion
    latency_s: float
    prompt: str
    created_at: datetime


def _answer(text: str, markers: tuple[str, ...]) -> str | None:
    """The marked final answer (``\\boxed{}``); free text is only stored with ``store_text``."""
    return extract_answer(text, markers) if any(m in text for m in markers) else None


def baseline_side(
    route: str, response: Any, latency_s: float, error: ProxyError | None
) -> tuple[Side, str]:
    """The baseline's ``Side`` and its full answer text ("" when it failed)."""
    if error is not None or response is None:
        status: SideStatus = "timeout" if isinstance(error, UpstreamTimeoutError) else "error"
        return Side(model=route, status=status, latency_s=latency_s, error=str(error)), ""
    text = str(response.choices[0].message.content or "") if response.choices else ""
    usage = getattr(response, "usage", None)
    prompt = int(getattr(usage, "prompt_tokens", 0) or 0)
    completion = int(getattr(usage, "completion_tokens", 0) or 0)
    details = getattr(usage, "completion_tokens_details", None)
    hidden = int(getattr(details, "reasoning_tokens", 0) or 0)
    side = Side(
        model=route,
        prompt_tokens=prompt,
        completion_tokens=completion,
        hidden_tokens=hidden,
        cost_usd=api_cost(route, prompt, completion),
        latency_s=latency_s,
    )
    return side, text


def _price(settings: ProxySettings) -> Price:
    return Price(
        settings.policy_usd_per_mtok, settings.policy_usd_per_gpu_hour, settings.policy_tokens_per_s
    )


def comparison(primary: Primary, baseline: tuple[Side, str], settings: ProxySettings) -> Comparison:
    markers = tuple(settings.search.answer_markers)
    completion = primary.completion
    text = completion.choices[0].message.content or "" if completion.choices else ""
    usage = completion.usage
    tokens = usage.prompt_tokens + usage.completion_tokens
    ours = Side(
        model=completion.model,
        answer=_answer(text, markers),
        text=text if settings.store_text else None,
        prompt_tokens=usage.prompt_tokens,
        completion_tokens=usage.completion_tokens,
        hidden_tokens=usage.completion_tokens_details.reasoning_tokens,
        cost_usd=_price(settings).cost(tokens),
        latency_s=round(primary.latency_s, 4),
    )
    side, their_text = baseline
    agree, match = answers_agree(text, their_text, markers) if side.status == "ok" else (None, None)
    side = dataclasses.replace(
        side,
        answer=_answer(their_text, markers),
        text=their_text if settings.store_text and their_text else None,
        latency_s=round(side.latency_s or 0.0, 4),
    )
    tts = completion.tts.model_dump() if completion.tts else {}
    keys = ("strategy", "budget_spent", "scorer", "auto", "reason")
    kept: JSONObject = {k: tts[k] for k in keys if k in tts}
    return Comparison(
        request_id=primary.request_id,
        created_at=primary.created_at,
        strategy=str(tts.get("strategy", primary.searched.strategy)),
        budget=primary.searched.budget,
        primary=ours,
        baseline=side,
        agree=agree,
        match=match,
        reference=primary.searched.reference,
        prompt=primary.prompt if settings.store_text else None,
        tts=kept,
    )
