"""Answer extraction, equivalence, step splitting and the confidence scorer."""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from strategies import (
    ConfidenceScorer,
    Finish,
    Generation,
    ScoreRequest,
    SearchConfig,
    SearchError,
    Step,
    extract_answer,
    group_equivalent,
)
from strategies.answer_cost import is_costly
from strategies.confidence import step_confidence
from strategies.steps import split_generation


@pytest.mark.parametrize(
    ("text", "answer"),
    [
        ("so \\boxed{\\frac{1}{2}} then \\boxed{\\frac{3}{4}}.", "\\frac{3}{4}"),
        ("nested \\boxed{\\sqrt{x^{2}}} done", "\\sqrt{x^{2}}"),
        ("Therefore, the final answer is: $42$. I hope it is correct.", "42"),
        ("The answer is 17.", "17"),
        ("I bought 3 apples and 1,250 pears.", "1250"),
        ("no numbers here", ""),
        ("unclosed \\boxed{12", "12"),
    ],
)
def test_extract_answer(text: str, answer: str) -> None:
    assert extract_answer(text) == answer


def test_extract_answer_custom_marker() -> None:
    assert extract_answer("ANSWER{9} and \\boxed{3}", ("ANSWER{",)) == "9"


def test_group_equivalent_pools_forms_of_one_half() -> None:
    groups = group_equivalent(["1/2", "\\frac12", "0.5", "\\dfrac{1}{2}", "2", "", ""])
    assert groups[:4] == (0, 0, 0, 0)
    assert groups[4] == 4
    assert groups[5] != groups[6]  # empty answers never pool


def test_split_generation_keeps_delimiters_and_follows_offsets() -> None:
    text = "one two\n\nthree\n\n\nfour"
    tokens = ["one ", "two\n\n", "three\n\n\n", "four"]
    ends = tuple(sum(len(t) for t in tokens[: i + 1]) for i in range(len(tokens)))
    gen = Generation(text, Finish.EOS, 4, token_logprobs=(-1.0, -2.0, -3.0, -4.0), token_ends=ends)
    steps = split_generation(gen, "\n\n")
    assert [s.text for s in steps] == ["one two\n\n", "three\n\n\n", "four"]
    assert [s.token_logprobs for s in steps] == [(-1.0, -2.0), (-3.0,), (-4.0,)]
    assert sum(s.tokens for s in steps) == 4


def test_split_generation_without_offsets_keeps_token_total() -> None:
    steps = split_generation(Generation("a\n\nb", Finish.EOS, 7), "\n\n")
    assert [s.text for s in steps] == ["a\n\n", "b"]
    assert sum(s.tokens for s in steps) == 7


def test_step_confidence_is_lowest_window_geometric_mean() -> None:
    logprobs = [math.log(0.9)] * 4 + [math.log(0.1)] * 2 + [math.log(0.9)] * 4
    assert step_confidence(logprobs, 2) == pytest.approx(0.1)
    assert step_confidence(logprobs, 100) == pytest.approx(math.exp(sum(logprobs) / 10))
    with pytest.raises(SearchError, match="log-probabilities"):
        step_confidence([], 4)


async def test_confidence_scorer_scores_only_new_steps() -> None:
    scorer = ConfidenceScorer(window=4)
    steps = (Step("a", 1, (math.log(0.5),)), Step("b", 1, (math.log(0.25),)))
    batch = await scorer.score("q", [ScoreRequest(steps, first_new=1)])
    assert batch.scores[0][0] == pytest.approx(0.25) and len(batch.scores[0]) == 1
    assert scorer.needs_logprobs and scorer.name == "confidence"


@pytest.mark.parametrize(
    "kwargs",
    [{"budget": 0}, {"beam_width": 0}, {"max_steps": 0}, {"top_p": 0.0}, {"step_delimiter": ""}],
)
def test_search_config_rejects_bad_values(kwargs: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        SearchConfig(**kwargs)  # type: ignore[arg-type]


def test_plain_numbers_compare_exactly_without_sympy() -> None:
    assert group_equivalent(["4", "4.0", "1,000", "1000", "1/2", "0.5", "1/0", "0.33"]) == (
        0,
        0,
        2,
        2,
        4,
        4,
        6,
        7,
    )


@pytest.mark.parametrize(
    ("answer", "costly"),
    [
        ("2^{2^{235423523}}", True),  # a tower: its exponent alone is too big
        ("10^{10^{10}}", True),
        ("2^{235423523}", True),
        ("2**235423523", True),
        ("(10^{1000})^{1000}", True),  # a million digits
        ("100000!", True),
        ("\\binom{100000}{50000}", True),
        ("2^{2^{3}}", False),
        ("2^{2007}-1", False),
        ("\\left(2^{10}\\right)^{100}", False),
        ("5000!", False),
        ("\\binom{10}{3}", False),
        ("e^{i\\pi}", False),
        ("\\frac{1}{2}", False),
        ("123456789012345678901234567890", False),
    ],
)
def test_cost_gate_reads_the_size_of_an_answer(answer: str, costly: bool) -> None:
    assert is_costly(answer) is costly


def test_costly_answers_compare_as_text_and_cheap_ones_through_sympy() -> None:
    tower = "2^{2^{235423523}}"
    assert group_equivalent([tower, "1", tower, "2^{10}", "1024"]) == (0, 1, 0, 3, 3)


def test_a_tower_answer_does_not_exhaust_memory_off_the_main_thread() -> None:
    """Off the main thread math-verify has no timeout; without the gate this child grows past
    its 2 GiB limit or runs past 60 s (it did: 17 GB, killed by the OOM killer)."""
    answers = ["2^{2^{235423523}}", "1", "10^{10^{10}}", "2"]
    setup = "import resource\nresource.setrlimit(resource.RLIMIT_AS, (2 << 30, 2 << 30))\n"
    done = _group_off_the_main_thread(answers, setup)
    assert done.stdout.strip() == "(0, 1, 2, 3)"


def _group_off_the_main_thread(
    answers: list[str], setup: str = ""
) -> subprocess.CompletedProcess[str]:
    """``group_equivalent(answers)`` on a thread of a fresh child process (exit code checked)."""
    code = (
        f"{setup}import threading\n"
        "from strategies import group_equivalent\n"
        "out = []\n"
        f"t = threading.Thread(target=lambda: out.append(group_equivalent({answers!r})))\n"
        "t.start(); t.join()\n"
        "print(out[0])\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=Path(__file__).parent.parent,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return done


@given(st.text(alphabet="0123456789^{}()[]!\\binomx +-*", max_size=60))
def test_the_cost_gate_reads_any_text(text: str) -> None:
    assert is_costly(text) in (True, False)


def test_answers_too_deep_or_too_long_to_read_are_costly() -> None:
    assert is_costly("{" * 1500 + "1") is True  # past the recursion limit: not given to sympy
    assert is_costly("1+" * 1001) is True
    assert is_costly("1+" * 900 + "1") is False


def test_comparing_off_the_main_thread_logs_no_timeout_warning() -> None:
    """Off the main thread the caller bounds the work (math-verify's timeout is a signal), so
    math-verify's once-per-process "Timeout is disabled" warning is noise and is not logged."""
    setup = "import logging\nlogging.basicConfig(level=logging.DEBUG)\n"
    done = _group_off_the_main_thread(["x^2", "x*x"], setup)
    assert done.stdout.strip() == "(0, 0)"
    assert "Timeout is disabled" not in done.stderr, done.stderr[-2000:]
