"""DeepConf: token confidence, offline filtering and weighting, online early stopping."""

from __future__ import annotations

import pytest

from strategies import SearchConfig, search
from strategies.deepconf import (
    group_confidences,
    lowest_group_confidence,
    tail_confidence,
    token_confidence,
    window_for,
)
from tests.fakes import FakePolicy

SURE = "we add them and get " + "so " * 4 + "\\boxed{3}"  # 10 words, confidence 5 each
UNSURE = "hmm~ " * 16 + "maybe~ \\boxed{7}"  # 18 words, confidence 1 each


def test_token_and_group_confidence_by_hand() -> None:
    assert token_confidence([-0.1, -2.0, -3.0]) == pytest.approx(1.7)
    assert group_confidences([5, 5, 1, 1], 2) == [5, 3, 1]
    assert lowest_group_confidence([5, 5, 1, 1, 5], 2) == 1
    assert lowest_group_confidence([4, 2], 8) == 3  # shorter than the window: one group
    assert tail_confidence([1, 1, 5, 5], 2) == 5
    assert window_for([40, 200, 400]) == 50 and window_for([10]) == 8
    assert window_for([100_000]) == 2048


async def test_offline_the_confident_minority_outvotes_unsure_traces() -> None:
    policy = FakePolicy({"": [UNSURE, UNSURE, UNSURE, SURE]})
    majority = await search("majority", "q", policy, None, SearchConfig(budget=4))
    assert majority.answer == "7"
    for keep in (90.0, 25.0):
        config = SearchConfig(budget=4, deepconf_mode="offline", keep_percent=keep)
        result = await search("deepconf", "q", FakePolicy(policy.script), None, config)
        assert result.answer == "3"
        assert result.deepconf is not None
        assert result.deepconf.kept == (4 if keep == 90.0 else 1)
    call = FakePolicy(policy.script)
    await search("deepconf", "q", call, None, SearchConfig(budget=4, deepconf_mode="offline"))
    assert [(c.n, c.sampling.top_logprobs) for c in call.calls] == [(4, 5)]


async def test_online_closes_low_confidence_streams_early_and_counts_their_tokens() -> None:
    policy = FakePolicy({"": [SURE, SURE, UNSURE, SURE, UNSURE, SURE, UNSURE, SURE]})
    config = SearchConfig(budget=8, deepconf_chunk=2)
    result = await search("deepconf", "q", policy, None, config)
    report = result.deepconf
    assert report is not None and report.mode == "online" and report.warmup == 2
    assert report.window == 8 and report.threshold == pytest.approx(5.0)
    assert result.answer == "3"
    stopped = [sent for sent, early in policy.streams if early]
    assert stopped and all(sent == report.window < 18 for sent in stopped)  # cut, not finished
    assert report.stopped == len(stopped) and report.kept == report.traces - report.stopped
    # honest usage: the warm-up's tokens plus what each stream sent before it was closed
    assert result.usage.completion_tokens == 2 * 10 + sum(sent for sent, _ in policy.streams)
    assert result.usage.policy_calls == 1 + len(policy.streams)


async def test_online_stops_sampling_once_the_vote_is_settled() -> None:
    policy = FakePolicy({"": [SURE]})
    result = await search("deepconf", "q", policy, None, SearchConfig(budget=64, warmup=8))
    assert result.deepconf is not None and result.deepconf.settled
    assert result.deepconf.traces < 64 and result.usage.generations < 64


async def test_online_warmup_and_window_can_be_set() -> None:
    policy = FakePolicy({"": [SURE, UNSURE]})
    config = SearchConfig(budget=6, warmup=4, confidence_window=3, keep_percent=50.0)
    result = await search("deepconf", "q", policy, None, config)
    assert result.deepconf is not None
    assert result.deepconf.warmup == 4 and result.deepconf.window == 3
    assert policy.calls[0].n == 4
