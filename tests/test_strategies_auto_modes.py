"""``auto``'s concurrent mode: the votes streamed at once, the first pilots to finish choosing
the bin, and the streams still running stopped the moment the vote is settled (their tokens
counted); the sequential mode for comparison."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import pytest

from strategies import AutoCell, AutoConfig, SearchConfig, search
from strategies.types import Sampling, SamplingMode, Streamed
from tests.fakes import FakePolicy

MAJORITY = {"easy": "majority", "medium": "majority", "hard": "majority"}
LONG = "word " * 40


def auto(
    mode: SamplingMode = "concurrent", window: int | None = None, **cells: AutoCell
) -> SearchConfig:
    methods: Any = MAJORITY
    keyed: Any = cells  # keyed by difficulty, as the tests name them
    rules = AutoConfig(methods=methods, pilots=4, mode=mode, window=window, cells=keyed)
    return SearchConfig(budget=16, auto=rules)


async def test_settled_pilots_stop_every_stream_still_running() -> None:
    # four short answers finish first and agree; the twelve long ones are stopped mid-way
    script = {"": ["\\boxed{4}"] * 4 + [LONG + "\\boxed{4}"] * 12}
    policy = FakePolicy(script)
    result = await search("auto", "q", policy, None, auto())
    decision = result.decision
    assert result.answer == "4" and decision is not None
    assert decision.mode == "concurrent" and decision.method is None  # from the pilots
    assert decision.streams_stopped == 12 and decision.stopped_early
    assert result.usage.generations_per_depth == (16,)  # one round: all streamed at once
    stopped = [sent for sent, early in policy.streams if early]
    assert len(stopped) == 12 and all(sent < 41 for sent in stopped)
    # every token generated is counted: the four answers and what the stopped streams sent
    assert result.usage.completion_tokens == 4 + sum(stopped)


async def test_a_window_starts_no_stream_past_a_settled_vote() -> None:
    # Eight streams at a time: the four short pilots agree, so only the four long streams
    # already running are stopped, and the other eight are never started.
    script = {"": ["\\boxed{4}"] * 4 + [LONG + "\\boxed{4}"] * 12}
    policy = FakePolicy(script)
    result = await search("auto", "q", policy, None, auto(window=8))
    decision = result.decision
    assert result.answer == "4" and decision is not None and decision.stopped_early
    assert decision.streams_stopped == 4 and len(policy.streams) == 8
    assert result.usage.policy_calls == 8
    stopped = [sent for sent, early in policy.streams if early]
    assert result.usage.completion_tokens == 4 + sum(stopped)


async def test_a_window_keeps_that_many_streams_going_until_the_cap() -> None:
    # An unsettled vote: every sample is drawn, never more than the window at once.
    script = {"": [f"{'x ' * i}\\boxed{{{i % 3}}}" for i in range(16)]}
    live, most = 0, 0

    class Counted(FakePolicy):
        async def stream(
            self, prefix: str, sampling: Sampling, keep_going: Callable[[Sequence[float]], bool]
        ) -> Streamed:
            nonlocal live, most
            live += 1
            most = max(most, live)
            try:
                return await super().stream(prefix, sampling, keep_going)
            finally:
                live -= 1

    policy = Counted(script)
    result = await search("auto", "q", policy, None, auto(window=6))
    assert len(result.candidates) == 16 and most == 6
    assert result.decision is not None and result.decision.streams_stopped == 0


async def test_an_unsettled_vote_lets_every_stream_finish() -> None:
    script = {"": [f"{'x ' * i}\\boxed{{{i % 3}}}" for i in range(16)]}
    policy = FakePolicy(script)
    result = await search("auto", "q", policy, None, auto())
    decision = result.decision
    assert decision is not None and decision.streams_stopped == 0
    assert not decision.stopped_early and decision.method == "majority"
    assert len(result.candidates) == 16 and not any(early for _, early in policy.streams)


async def test_the_vote_stops_as_soon_as_later_samples_settle_it() -> None:
    # pilots split 2-1-1 (easy, not settled); later samples all say 4, in order of length
    answers = ["4", "4", "1", "2"] + ["4"] * 12
    script = {"": [f"{'x ' * i}\\boxed{{{a}}}" for i, a in enumerate(answers)]}
    policy = FakePolicy(script)
    result = await search("auto", "q", policy, None, auto())
    decision = result.decision
    assert result.answer == "4" and decision is not None and decision.difficulty == "easy"
    assert 0 < decision.streams_stopped < 12 and decision.stopped_early
    assert len(result.candidates) + decision.streams_stopped == 16


async def test_a_search_in_the_rules_draws_the_pilots_first() -> None:
    script = {"": ["\\boxed{4}"] * 16}
    policy = FakePolicy(script)
    config = auto(hard=AutoCell("beam_search"))
    result = await search("auto", "q", policy, None, config)
    assert policy.calls[0].n == 4 and not policy.streams  # one call of 4 pilots, no streams
    assert result.decision is not None and result.decision.mode == "sequential"


async def test_a_concurrent_cell_streams_its_remainder_after_sequential_pilots() -> None:
    answers = ["4", "4", "1", "2"] + ["4"] * 12
    script = {"": [f"{'x ' * i}\\boxed{{{a}}}" for i, a in enumerate(answers)]}
    policy = FakePolicy(script, persist_offsets=True)
    config = auto("sequential", easy=AutoCell("majority", mode="concurrent"))
    result = await search("auto", "q", policy, None, config)
    decision = result.decision
    assert policy.calls[0].n == 4  # the pilots, one call
    assert len(policy.streams) == 12  # then the remainder, streamed at once
    assert decision is not None and decision.mode == "concurrent" and decision.stopped_early
    assert result.usage.generations_per_depth == (4, 12)


@pytest.mark.parametrize("mode", ["sequential", "concurrent"])
async def test_both_modes_agree_on_the_answer_and_concurrent_takes_fewer_rounds(
    mode: SamplingMode,
) -> None:
    answers = ["4", "4", "1", "2"] + ["4", "5"] * 6
    script = {"": [f"{'x ' * i}\\boxed{{{a}}}" for i, a in enumerate(answers)]}
    result = await search("auto", "q", FakePolicy(script, persist_offsets=True), None, auto(mode))
    assert result.answer == "4"
    rounds = len(result.usage.generations_per_depth)
    assert rounds == 1 if mode == "concurrent" else rounds > 1


class _Failing(FakePolicy):
    """The third stream opened breaks; the others run long."""

    started = 0

    async def stream(
        self, prefix: str, sampling: Sampling, keep_going: Callable[[Sequence[float]], bool]
    ) -> Streamed:
        self.started += 1
        if self.started == 3:
            raise RuntimeError("upstream broke")
        return await super().stream(prefix, sampling, keep_going)


async def test_a_failing_stream_fails_the_search_and_cancels_the_rest() -> None:
    policy = _Failing({"": [LONG + "\\boxed{4}"] * 16})
    with pytest.raises(RuntimeError, match="upstream broke"):
        await search("auto", "q", policy, None, auto())
    assert policy.started == 16 and not policy.streams  # none ran on after the failure
