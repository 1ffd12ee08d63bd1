"""Hand-worked search trees: exact answers, pruning decisions and call counts per method."""

from __future__ import annotations

import asyncio
import dataclasses
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from strategies import NoCandidatesError, SearchConfig, SearchError, StrategyName, search
from strategies.best_of_n import OVERLAP_PARTS
from tests.fakes import FakePolicy, FakeScorer

D = "\n\n"


def config(**kwargs: object) -> SearchConfig:
    return SearchConfig(**kwargs)  # type: ignore[arg-type]


# --- cot ------------------------------------------------------------------------------------
async def test_cot_one_greedy_sample() -> None:
    policy = FakePolicy({"": ["Step one." + D + "So \\boxed{7}."]})
    result = await search("cot", "q", policy, FakeScorer(), config(budget=8))
    assert result.answer == "7"
    assert [c.n for c in policy.calls] == [1]
    assert policy.calls[0].sampling.temperature == 0.0
    assert policy.calls[0].sampling.stop == ()
    assert result.scorer is None and result.candidates[0].score is None
    assert result.usage.policy_calls == 1 and result.usage.scorer_calls == 0


# --- majority -------------------------------------------------------------------------------
async def test_majority_votes_equivalent_answers() -> None:
    policy = FakePolicy(
        {"": ["\\boxed{0.5}", "\\boxed{3}", "\\boxed{\\frac12}", "\\boxed{3}", "\\boxed{1/2}"]}
    )
    result = await search("majority", "q", policy, None, config(budget=5))
    assert result.answer == "0.5"  # 0.5, \frac12 and 1/2 pool three votes against two
    assert result.choices[0].votes == 3 and result.choices[1].answer == "3"
    assert result.voting == "majority"
    assert [(c.prefixes, c.n) for c in policy.calls] == [(("",), 5)]


async def test_majority_empty_answers_never_win() -> None:
    policy = FakePolicy({"": ["no idea", "still no idea", "nothing", "\\boxed{4}"]})
    result = await search("majority", "q", policy, None, config(budget=4))
    assert result.answer == "4"
    assert all(choice.answer == "" for choice in result.choices[1:])


async def test_majority_tie_goes_to_earlier_candidate() -> None:
    policy = FakePolicy({"": ["\\boxed{2}", "\\boxed{1}", "\\boxed{1}", "\\boxed{2}"]})
    result = await search("majority", "q", policy, None, config(budget=4))
    assert result.answer == "2"


# --- best_of_n ------------------------------------------------------------------------------
BON_SCRIPT = {
    "": [
        "a <0.9>" + D + "so \\boxed{1} <0.2>",  # last 0.2, min 0.2, avg 0.55
        "b <0.6>" + D + "so \\boxed{2} <0.7>",  # last 0.7, min 0.6, avg 0.65
        "c <0.1>" + D + "so \\boxed{1} <0.65>",  # last 0.65, min 0.1, avg 0.375
    ]
}


@pytest.mark.parametrize(
    ("scoring", "voting", "answer"),
    [
        ("last", "prm_vote", "1"),  # 0.2 + 0.65 = 0.85 > 0.7
        ("last", "prm_max", "2"),  # 0.7 is the best single score
        ("min", "prm_vote", "2"),  # 0.3 < 0.6
        ("avg", "prm_max", "2"),  # 0.65 > 0.55
        ("last", "majority", "1"),  # two votes to one
        ("prod", "prm_max", "2"),  # 0.42 > 0.18 > 0.065
    ],
)
async def test_best_of_n_scoring_and_voting(scoring: str, voting: str, answer: str) -> None:
    policy, scorer = FakePolicy(BON_SCRIPT, persist_offsets=True), FakeScorer()
    result = await search(
        "best_of_n", "q", policy, scorer, config(budget=3, scoring=scoring, voting=voting)
    )
    assert result.answer == answer


async def test_best_of_n_with_a_local_scorer_is_one_call_and_one_scoring() -> None:
    policy, scorer = FakePolicy(BON_SCRIPT), FakeScorer(is_remote=False)
    result = await search("best_of_n", "q", policy, scorer, config(budget=3))
    assert len(policy.calls) == 1 and policy.calls[0].n == 3
    assert len(scorer.calls) == 1 and len(scorer.calls[0]) == 3
    assert [len(r.steps) for r in scorer.calls[0]] == [2, 2, 2]
    assert result.usage.policy_calls == 1 and result.usage.scorer_calls == 1
    assert result.voting == "prm_vote" and result.scoring == "last"
    assert result.candidates[0].candidate.step_scores == (0.9, 0.2)


class _HeldPolicy(FakePolicy):
    """Each call waits for its own event (the k-th call, ``release[k]``)."""

    def __init__(self, script: dict[str, list[str]], parts: int) -> None:
        super().__init__(script, persist_offsets=True)
        self.release = [asyncio.Event() for _ in range(parts)]

    async def generate(self, prefixes: Any, n: int, sampling: Any) -> Any:
        index = len(self.calls)
        batch = await super().generate(prefixes, n, sampling)
        await self.release[index].wait()
        return batch


async def test_best_of_n_scores_each_part_while_the_others_still_generate() -> None:
    script = {"": [f"step <0.{i}>" + D + f"\\boxed{{{i}}} <0.{i}>" for i in range(1, 9)]}
    policy, scored = _HeldPolicy(script, OVERLAP_PARTS), asyncio.Event()

    class Told(FakeScorer):
        async def score(self, problem: str, requests: Any) -> Any:
            scored.set()
            return await super().score(problem, requests)

    scorer = Told()
    task = asyncio.ensure_future(search("best_of_n", "q", policy, scorer, config(budget=8)))
    policy.release[0].set()
    await scored.wait()  # the first part is scored while the other three still generate
    assert len(scorer.calls) == 1 and len(scorer.calls[0]) == 8 // OVERLAP_PARTS
    assert not task.done()
    for event in policy.release[1:]:
        event.set()
    result = await task
    assert [call.n for call in policy.calls] == [2] * OVERLAP_PARTS
    assert len(scorer.calls) == OVERLAP_PARTS
    assert result.usage.policy_calls == OVERLAP_PARTS
    assert result.usage.generations_per_depth == (8,)  # one round of the search
    assert sorted(int(c.answer) for c in result.candidates) == list(range(1, 9))
    assert result.answer == "8"


async def test_best_of_n_parts_fail_together() -> None:
    class Broken(FakeScorer):
        async def score(self, problem: str, requests: Any) -> Any:
            raise SearchError("scorer down")

    policy = _HeldPolicy(BON_SCRIPT, 3)
    for event in policy.release:
        event.set()
    with pytest.raises(SearchError, match="scorer down"):
        await search("best_of_n", "q", policy, Broken(), config(budget=3))


async def test_best_of_n_empty_trailing_steps_are_not_scored() -> None:
    text = "x <0.4>" + D + "   " + D + "\\boxed{5} <0.8>" + D
    policy, scorer = FakePolicy({"": [text]}), FakeScorer()
    result = await search("best_of_n", "q", policy, scorer, config(budget=1))
    assert [s.text.strip() for s in scorer.calls[0][0].steps] == ["x <0.4>", "\\boxed{5} <0.8>"]
    assert result.candidates[0].candidate.step_scores == (0.4, 0.8)


async def test_best_of_n_truncated_candidate_is_flagged() -> None:
    policy = FakePolicy({"": ["a long one <len>", "\\boxed{3} <0.1>"]}, persist_offsets=True)
    result = await search("best_of_n", "q", policy, FakeScorer(), config(budget=2))
    flags = [(c.candidate.is_finished, c.candidate.is_truncated) for c in result.candidates]
    assert flags == [(True, True), (True, False)]


# --- beam_search ----------------------------------------------------------------------------
A, B, C = "a <0.9>" + D, "b <0.8>" + D, "c <0.3>" + D
DD = "d \\boxed{1} <0.95>"
E, F = "e \\boxed{2} <0.5>", "f <0.7>" + D
G, H = "g \\boxed{2} <0.6>", "h \\boxed{3} <0.4>"
BEAM_SCRIPT = {"": [A, B, C, DD], A: [E, F], A + F: [G, H]}


async def test_beam_search_hand_worked_tree() -> None:
    policy, scorer = FakePolicy(BEAM_SCRIPT), FakeScorer()
    result = await search(
        "beam_search", "q", policy, scorer, config(budget=4, beam_width=2, enable_trace=True)
    )
    # depth 0 keeps d (finished) and a; depth 1 keeps f of {e, f}; depth 2 keeps g: 2 finished.
    assert [(c.prefixes, c.n) for c in policy.calls] == [(("",), 4), ((A,), 2), ((A + F,), 2)]
    assert result.usage.generations_per_depth == (4, 2, 2)
    assert [c.candidate.text for c in result.candidates] == [DD, A + F + G]
    assert result.answer == "1"  # prm_vote on last: 0.95 vs 0.6
    assert len(scorer.calls) == 3 and result.usage.scorer_calls == 3
    assert result.trace is not None
    status = {node.text: node.status for node in result.trace}
    assert status == {
        A: "kept",
        B: "pruned",
        C: "pruned",
        DD: "finished",
        E: "pruned",
        F: "kept",
        G: "finished",
        H: "pruned",
    }


async def test_beam_search_never_rescores_a_step() -> None:
    policy, scorer = FakePolicy(BEAM_SCRIPT), FakeScorer()
    await search("beam_search", "q", policy, scorer, config(budget=4, beam_width=2))
    texts = scorer.scored_step_texts
    assert sorted(texts) == sorted([A, B, C, DD, E, F, G, H])
    # ...but each request still carries its whole prefix.
    assert [s.text for s in scorer.calls[2][0].steps] == [A, F, G]


async def test_beam_search_finished_never_exceed_kept_beams() -> None:
    script = {"": [f"\\boxed{{{i}}} <0.{i}>" for i in range(1, 9)]}
    result = await search(
        "beam_search", "q", FakePolicy(script), FakeScorer(), config(budget=8, beam_width=4)
    )
    assert [c.answer for c in result.candidates] == ["8", "7"]


async def test_beam_search_stops_at_depth_limit() -> None:
    script = {"": ["s <0.5>" + D], "s <0.5>" + D: ["t <0.5>" + D]}
    policy = FakePolicy(script)
    result = await search(
        "beam_search", "q", policy, FakeScorer(), config(budget=2, beam_width=2, max_steps=2)
    )
    assert len(policy.calls) == 2
    assert all(c.candidate.is_finished and len(c.candidate.steps) == 2 for c in result.candidates)


async def test_beam_search_drops_duplicate_siblings() -> None:
    script = {"": [A, A, B, C], A: [DD, DD], B: [E, E]}
    policy = FakePolicy(script)
    await search("beam_search", "q", policy, FakeScorer(), config(budget=4, beam_width=2))
    assert policy.calls[1].prefixes == (A, B)  # not (A, A)


async def test_beam_search_needs_scorer_and_divisible_budget() -> None:
    with pytest.raises(ValueError, match="scorer"):
        await search("beam_search", "q", FakePolicy(BEAM_SCRIPT), None, config(budget=4))
    with pytest.raises(ValueError, match="multiple"):
        cfg = config(budget=6, beam_width=4)
        await search("beam_search", "q", FakePolicy(BEAM_SCRIPT), FakeScorer(), cfg)


async def test_beam_search_deadline_returns_best_partial_flagged() -> None:
    script = {"": [A, B], A: [F, F], B: [F, F]}
    policy = FakePolicy(script, delay_s=0.05)
    deadline = asyncio.get_running_loop().time() + 0.08  # first call fits, the second does not
    result = await search(
        "beam_search", "q", policy, FakeScorer(), config(budget=2, beam_width=2), deadline=deadline
    )
    assert result.is_partial
    assert [c.candidate.text for c in result.candidates] == [A]
    assert not result.candidates[0].candidate.is_finished
    # The trace's timeline: the first round's calls completed, the second policy call cut off.
    calls = [(c.call_id, c.kind, c.round, c.is_completed) for c in result.calls]
    assert calls == [(0, "policy", 0, True), (1, "scorer", 0, True), (2, "policy", 1, False)]
    assert all(c.started_s <= c.ended_s for c in result.calls)
    assert result.calls[2].ended_s >= 0.075  # it ran until the deadline


async def test_deadline_before_anything_raises_no_candidates() -> None:
    policy = FakePolicy({"": ["\\boxed{1}"]}, delay_s=0.05)
    deadline = asyncio.get_running_loop().time() + 0.01
    with pytest.raises(NoCandidatesError):
        await search("majority", "q", policy, None, config(budget=1), deadline=deadline)


# --- dvts -----------------------------------------------------------------------------------
async def test_dvts_hand_worked_subtrees() -> None:
    # Two subtrees of width 2, each its own calls: subtree 0 draws [A, B] at the root, subtree 1
    # [C, DD] (the script's samples are served in call order).
    script = {"": [A, B, C, DD], A: [E, F], A + F: [G, H]}
    policy, scorer = FakePolicy(script, persist_offsets=True), FakeScorer()
    result = await search("dvts", "q", policy, scorer, config(budget=4, beam_width=2))
    # Subtree 1 keeps DD (0.95 > 0.3), finished. Subtree 0 keeps A, then F (0.7) over the finished
    # E (0.5), then G (0.6) over H (0.4): finished.
    calls = sorted((c.prefixes, c.n) for c in policy.calls)  # the subtrees' calls interleave
    assert calls == [(("",), 2), (("",), 2), ((A,), 2), ((A + F,), 2)]
    assert [c.candidate.text for c in result.candidates] == [A + F + G, DD]
    assert result.usage.generations_per_depth == (4, 2, 2)  # counted by depth, not by call
    assert len(scorer.calls) == 4  # one per subtree and depth
    assert result.answer == "1"  # prm_vote: 0.95 vs 0.6


async def test_dvts_votes_over_subtree_answers() -> None:
    script = {"": [DD, "x \\boxed{2} <0.3>", "y \\boxed{2} <0.35>", "z <0.1>" + D]}
    policy, scorer = FakePolicy(script, persist_offsets=True), FakeScorer()
    result = await search("dvts", "q", policy, scorer, config(budget=4, beam_width=2))
    assert [c.answer for c in result.candidates] == ["1", "2"]
    assert result.answer == "1"  # prm_vote: 0.95 vs 0.35
    assert len(policy.calls) == 2 and len(scorer.calls) == 2


async def test_dvts_subtrees_do_not_wait_for_each_other() -> None:
    """A subtree whose steps come fast finishes its depths while a slow one is still on its
    first: no barrier between them."""
    slow, fast = "slow <0.9>" + D, "fast <0.9>" + D
    script = {
        "": [slow, slow, fast, fast],
        slow: ["\\boxed{1} <0.9>"],
        fast: [fast],
        fast + fast: ["\\boxed{2} <0.8>"],
    }

    class Paced(FakePolicy):
        async def generate(self, prefixes: Any, n: int, sampling: Any) -> Any:
            batch = await super().generate(prefixes, n, sampling)
            if len(self.calls) == 4:
                fourth.set()
            if any(g.text == slow for g in batch.generations[0]):
                await release.wait()  # subtree 0's first step arrives only when released
            return batch

    release, fourth = asyncio.Event(), asyncio.Event()
    policy = Paced(script, persist_offsets=True)
    running = asyncio.ensure_future(
        search("dvts", "q", policy, FakeScorer(), config(budget=4, beam_width=2))
    )
    await asyncio.wait_for(fourth.wait(), 5)  # subtree 1's three calls while subtree 0 waits
    assert [c.prefixes for c in policy.calls[1:]] == [("",), (fast,), (fast + fast,)]
    release.set()
    result = await running
    assert sorted(c.answer or "" for c in result.candidates) == ["1", "2"]
    assert result.usage.generations_per_depth == (4, 4, 2)


async def test_dvts_never_returns_unfinished_candidates() -> None:
    script = {"": ["s <0.9>" + D, "\\boxed{4} <0.2>"], "s <0.9>" + D: ["\\boxed{5} <0.6>"]}
    result = await search(
        "dvts", "q", FakePolicy(script), FakeScorer(), config(budget=2, beam_width=2)
    )
    assert all(c.candidate.is_finished for c in result.candidates)
    assert result.answer == "5"


# --- contract checks ------------------------------------------------------------------------
async def test_scorer_breaking_contract_is_a_search_error() -> None:
    class Broken(FakeScorer):
        def _one(self, text: str) -> float:
            return 1.5

    with pytest.raises(SearchError, match=r"outside \[0, 1\]"):
        await search("best_of_n", "q", FakePolicy(BON_SCRIPT), Broken(), config(budget=3))


async def test_prm_voting_without_scorer_is_rejected() -> None:
    with pytest.raises(ValueError, match="needs scores"):
        await search("majority", "q", FakePolicy(BON_SCRIPT), None, config(voting="prm_max"))


@settings(max_examples=25, deadline=None)
@given(st.sampled_from([(4, 2), (8, 4), (12, 4), (6, 3)]), st.integers(1, 5))
async def test_dvts_returns_one_candidate_per_subtree(shape: tuple[int, int], depth: int) -> None:
    budget, width = shape
    steps = [f"s{k} <0.{k + 1}>" + D for k in range(depth - 1)]
    script = {"".join(steps[:k]): [steps[k]] for k in range(depth - 1)}
    script["".join(steps)] = ["\\boxed{3} <0.5>"]
    result = await search(
        "dvts", "q", FakePolicy(script), FakeScorer(), config(budget=budget, beam_width=width)
    )
    assert len(result.candidates) == budget // width
    assert all(c.candidate.is_finished for c in result.candidates)


@settings(max_examples=10, deadline=None)
@given(st.sampled_from(["majority", "best_of_n", "beam_search", "dvts"]))
async def test_same_script_same_result(method: str) -> None:
    async def once() -> Any:
        policy = FakePolicy(BEAM_SCRIPT)
        return await search(method, "q", policy, FakeScorer(), config(budget=4, beam_width=2))  # type: ignore[arg-type]

    first, second = await once(), await once()
    assert first.choices == second.choices and first.usage == second.usage


async def test_policy_breaking_contract_is_a_search_error() -> None:
    class Short(FakePolicy):
        async def generate(self, prefixes: Any, n: int, sampling: Any) -> Any:
            batch = await super().generate(prefixes, n, sampling)
            return type(batch)(batch.generations[:-1], batch.prompt_tokens, 0)

    with pytest.raises(SearchError, match="number of samples"):
        await search("dvts", "q", Short({"": [A]}), FakeScorer(), config(budget=4, beam_width=2))


@pytest.mark.parametrize("cut", ["rows", "steps"])
async def test_scorer_with_missing_scores_is_a_search_error(cut: str) -> None:
    class Missing(FakeScorer):
        async def score(self, problem: str, requests: Any) -> Any:
            batch = await super().score(problem, requests)
            rows = batch.scores[:-1] if cut == "rows" else tuple(r[:-1] for r in batch.scores)
            return type(batch)(rows, 0)

    with pytest.raises(SearchError, match="scorer returned"):
        await search("best_of_n", "q", FakePolicy(BON_SCRIPT), Missing(), config(budget=3))


async def test_dvts_deadline_returns_partial_subtrees_flagged() -> None:
    script = {"": [A, B], A: [F, F], B: [F, F]}
    policy = FakePolicy(script, delay_s=0.05)
    deadline = asyncio.get_running_loop().time() + 0.08
    result = await search(
        "dvts", "q", policy, FakeScorer(), config(budget=4, beam_width=2), deadline=deadline
    )
    assert result.is_partial and len(result.candidates) == 2
    assert not any(c.candidate.is_finished for c in result.candidates)


# --- particle_filtering ---------------------------------------------------------------------
# Scores with exact odds (2:1:1:0 and 2:0:1:1) make the systematic resampling's counts exact
# (N * weight is whole), whatever the seed's uniform draw.
PA, PB, PC = "a <0.6666666667>" + D, "b <0.5>" + D, "c <0.0>" + D
PD = "d \\boxed{7} <0.5>"
PE, PF, PG = "e \\boxed{2} <0.6666666667>", "f <0.0>" + D, "g \\boxed{3} <0.5>"
PF_SCRIPT = {"": [PA, PB, PC, PD], PA: [PE, PF], PB: [PG]}


async def test_particle_filtering_hand_worked_rounds() -> None:
    policy, scorer = FakePolicy(PF_SCRIPT), FakeScorer()
    result = await search(
        "particle_filtering", "q", policy, scorer, config(budget=4, seed=7, enable_trace=True)
    )
    # round 1: weights 1/2, 1/4, 0, 1/4 -> {a, a, b, d}; d is finished and is not extended.
    # round 2: a -> e, a -> f, b -> g; weights over {e, f, g, d}: 1/2, 0, 1/4, 1/4.
    assert [(c.prefixes, c.n) for c in policy.calls] == [(("",) * 4, 1), ((PA, PA, PB), 1)]
    assert result.usage.generations_per_depth == (4, 3) and len(scorer.calls) == 2
    texts = sorted(c.candidate.text for c in result.candidates)
    assert texts == sorted([PA + PE, PA + PE, PB + PG, PD])
    assert result.answer == "2" and result.choices[0].votes == 2  # the weighted set votes
    assert result.trace is not None
    status = {node.text: node.status for node in result.trace}
    assert status[PC] == "pruned" and status[PF] == "pruned" and status[PE] == "finished"


async def test_particle_filtering_replays_with_the_same_seed() -> None:
    script = {"": [A, B, C, DD], A: [E, F], B: [G, H], C: [G], A + F: [G, H], B + G: [H]}

    async def final_set(seed: int) -> list[str]:
        result = await search(
            "particle_filtering", "q", FakePolicy(script), FakeScorer(), config(budget=4, seed=seed)
        )
        return [c.candidate.text for c in result.candidates]

    runs = {seed: await final_set(seed) for seed in range(12)}
    for seed in (0, 5, 11):
        assert await final_set(seed) == runs[seed]
    assert len({tuple(texts) for texts in runs.values()}) > 1  # the seed does steer it


async def test_particle_filtering_needs_a_scorer_and_stops_at_max_steps() -> None:
    with pytest.raises(ValueError, match="scorer"):
        await search("particle_filtering", "q", FakePolicy(PF_SCRIPT), None, config(budget=4))
    script = {"": ["s <0.5>" + D], "s <0.5>" + D: ["t <0.5>" + D]}
    policy = FakePolicy(script)
    result = await search(
        "particle_filtering", "q", policy, FakeScorer(), config(budget=2, max_steps=2)
    )
    assert len(policy.calls) == 2 and not result.is_partial
    assert all(len(c.candidate.steps) == 2 for c in result.candidates)


# Particle Gibbs: a low first step that ends high (GA -> GE) becomes the reference of sweep 2;
# there it is weighed by its first step's score (0.01), not its final one (0.99), so the fresh
# particle (GB, 0.5) survives round one instead of a copy of the reference.
GA, GC, GB = "a <0.01>" + D, "c <0.0>" + D, "b <0.5>" + D
GE, GF, GG = "e \\boxed{2} <0.99>", "f <0.0>" + D, "g \\boxed{3} <0.5>"
PG_SCRIPT = {"": [GA, GC, GB], GA: [GE, GF], GB: [GG]}


async def test_particle_gibbs_replays_its_reference_and_weighs_it_per_round() -> None:
    policy, scorer = FakePolicy(PG_SCRIPT, persist_offsets=True), FakeScorer()
    result = await search(
        "particle_filtering", "q", policy, scorer, config(budget=4, seed=7, particle_iterations=2)
    )
    # sweep 1, 2 particles: {a, c} -> {a, a} -> {e, f} -> {e, e}; the reference is a -> e.
    # sweep 2: slot 0 replays a, e with no call; only the free particle is sampled and scored.
    assert [c.prefixes for c in policy.calls] == [("", ""), (GA, GA), ("",), (GB,)]
    assert [len(call) for call in scorer.calls] == [2, 2, 1, 1]
    assert [s.text for s in scorer.calls[3][0].steps] == [GB, GG]
    # after the last round e (0.99) outweighs g (0.5) and fills the free slot too
    assert [c.candidate.text for c in result.candidates] == [GA + GE, GA + GE]
    assert result.answer == "2"


async def test_particle_gibbs_replays_with_the_same_seed_and_needs_two_per_sweep() -> None:
    script = {"": [A, B, C, DD], A: [E, F], B: [G, H], C: [G], A + F: [G, H], B + G: [H]}

    async def run(seed: int) -> list[tuple[str, ...]]:
        policy = FakePolicy(script, persist_offsets=True)
        await search(
            "particle_filtering",
            "q",
            policy,
            FakeScorer(),
            config(budget=8, seed=seed, particle_iterations=2),
        )
        return [c.prefixes for c in policy.calls]

    assert await run(3) == await run(3)
    with pytest.raises(ValueError, match="2 particles per sweep"):
        await search(
            "particle_filtering",
            "q",
            FakePolicy(script),
            FakeScorer(),
            config(budget=3, particle_iterations=2),
        )


# --- max_total_tokens -----------------------------------------------------------------------
CAP_SCRIPT = {
    "": ["one two three <0.6>" + D, "four \\boxed{5} <0.7>", "six seven <0.2>" + D],
    "one two three <0.6>" + D: ["eight nine ten eleven \\boxed{5} <0.9>"],
    "six seven <0.2>" + D: ["twelve \\boxed{6} <0.4>"],
}


@settings(max_examples=60, deadline=None)
@given(
    st.sampled_from(["majority", "best_of_n", "beam_search", "dvts", "particle_filtering"]),
    st.integers(1, 60),
    st.sampled_from([2, 4, 8]),
)
async def test_the_token_cap_is_never_passed(method: StrategyName, cap: int, budget: int) -> None:
    policy = FakePolicy(CAP_SCRIPT)
    capped = config(budget=budget, beam_width=2, max_total_tokens=cap)
    try:
        result = await search(method, "q", policy, FakeScorer(), capped)
    except NoCandidatesError:  # a cap below one token per sample: nothing could be generated
        assert cap < budget and policy.calls == []
        return
    assert result.usage.completion_tokens <= cap
    if result.is_token_capped:  # stopped by the cap: what was generated still answers
        assert result.candidates


async def test_a_binding_token_cap_shares_what_is_left_per_sample() -> None:
    policy = FakePolicy(CAP_SCRIPT)
    result = await search("majority", "q", policy, None, config(budget=3, max_total_tokens=6))
    assert policy.calls[0].sampling.max_tokens == 2  # 6 tokens over 3 samples
    assert result.usage.completion_tokens <= 6
    assert all(c.candidate.is_truncated for c in result.candidates if c.answer == "")


@pytest.mark.parametrize("cap", ["max_generations", "max_total_tokens"])
async def test_dvts_subtrees_in_flight_together_never_pass_a_cap(cap: str) -> None:
    """The subtrees' calls run at once (the fake answers after a delay, so all are in flight
    together): what each may generate is held against the caps before it is made."""
    script = {
        "": ["one two three four five six <0.5>" + D],
        "one two three four five six <0.5>" + D: ["\\boxed{1} <0.5>"],
    }
    limits = {"max_generations": 10} if cap == "max_generations" else {"max_total_tokens": 30}
    cfg = dataclasses.replace(config(budget=16, beam_width=4), **limits)  # type: ignore[arg-type]
    policy = FakePolicy(script, delay_s=0.01)
    result = await search("dvts", "q", policy, FakeScorer(), cfg)
    if cap == "max_generations":
        assert result.usage.generations <= 10 and sum(c.n for c in policy.calls) <= 10
    else:
        assert result.usage.completion_tokens <= 30
