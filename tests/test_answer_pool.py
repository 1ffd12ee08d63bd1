"""Final answers that need sympy are compared off the event loop, under a deadline."""

from __future__ import annotations

from contextlib import ExitStack
from typing import Any

import httpx
import pytest

from harness.fake_servers import FakeVllm
from harness.servers import serve
from proxy.app import create_app
from proxy.settings import ProxySettings
from strategies import group_by_text
from strategies.answers import needs_sympy

HALF = ["\\frac{1}{2}", "0.5", "\\frac{2}{4}", "0.5"]


def halves(prefix: str, i: int) -> str:
    """Every sample answers one half, spelled four ways."""
    return f"Step 1: halve it.\n\nSo the answer is \\boxed{{{HALF[i % 4]}}}"


def groupings(url: str) -> dict[str, float]:
    lines = httpx.get(url + "/metrics").text.splitlines()
    return {
        line.split('"')[1]: float(line.rsplit(" ", 1)[1])
        for line in lines
        if line.startswith("tts_answer_groupings_total{")
    }


def polynomials(prefix: str, i: int) -> str:
    """Answers no earlier test parsed (parses are cached): sympy has real work to do."""
    return f"Step 1: expand.\n\nSo the answer is \\boxed{{(y+{i % 4 + 1})^{{37}}}}"


def majority(
    stack: ExitStack, script: Any = halves, **settings: Any
) -> tuple[dict[str, Any], dict[str, float]]:
    vllm = FakeVllm(script=script)
    upstream = stack.enter_context(serve(vllm.app())) + "/v1"
    url = stack.enter_context(serve(create_app(ProxySettings(policy_urls=[upstream], **settings))))
    body = {"model": "fake-policy", "messages": [{"role": "user", "content": "?"}]}
    headers = {"X-TTS-Strategy": "majority", "X-TTS-Budget": "4"}
    answer = httpx.post(url + "/v1/chat/completions", json=body, headers=headers, timeout=60)
    assert answer.status_code == 200, answer.text
    return answer.json()["tts"], groupings(url)


def test_symbolic_answers_are_compared_in_a_worker(stack: ExitStack) -> None:
    tts, counted = majority(stack)
    assert counted == {"worker": 1.0}
    assert len(tts["answers"]) == 1  # the four spellings are one answer


def test_past_the_deadline_answers_are_grouped_as_text(
    stack: ExitStack, caplog: pytest.LogCaptureFixture
) -> None:
    tts, counted = majority(stack, polynomials, answer_deadline_s=0.001)
    assert counted == {"timeout": 1.0}
    assert len(tts["answers"]) == 4  # four different answers, as text
    assert "grouped as text" in caplog.text and "y+" not in caplog.text


def test_answers_that_need_no_sympy_are_grouped_in_place(stack: ExitStack) -> None:
    assert not needs_sympy(["4", "4", "5", ""]) and not needs_sympy(["x^2", "x^2"])
    assert needs_sympy(["x^2", "4"]) and needs_sympy(["\\frac{1}{2}", "0.5"])
    assert group_by_text(["a", " a", "b", "", "a"]) == (0, 0, 2, 3, 0)
    _, counted = majority(stack, answer_workers=0)
    assert counted == {"inline": 1.0}
