"""``auto``'s stopping rule replayed over real samples: samples spent against accuracy (a table).

Collects 16 samples per problem from the real CPU stack (Qwen2.5-Coder-0.5B-Instruct through the
proxy's ``majority`` strategy with the trace on; saved with ``--save``, reused with ``--load``),
then replays auto's sampling loop — 4 pilots, then chunks of 4 (or the fewest samples that could
settle it, if more) until the leader is settled or the cap of 16 is reached, majority vote of
what was drawn — over many random orders of each problem's samples. Offline replay isolates the
rule from sampling luck; it is how adaptive-consistency rules are compared (Aggarwal et al.
2023). Rows: fixed majority@4/8/16 over the same samples; Beta tests of the leader against all
other samples or against the runner-up only; auto's predictive rule at several confidence levels
and chunk sizes. Columns: accuracy, samples, tokens and policy calls (sequential round trips).
Target for auto: majority@16's accuracy with <= 1/3 of its samples.

Run: ``.venv/bin/python -m bench.stopping [--problems 24] [--seed K] [--save F | --load F ...]``
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import random
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from bench.problems import easy_problems, multi_step_problems
from bench.stack import ask, proxy_on_cpu_stack
from strategies import extract_answer, group_equivalent
from strategies.auto import draws_to_settle, keeps_lead

CAP, PILOTS, CHUNK, ORDERS = 16, 4, 4, 400
Rival = Callable[[Counter[str], int], int]


def collect(
    problems: int, max_tokens: int, cache: Path | None, seed: int = 0
) -> list[dict[str, Any]]:
    half = problems // 2
    easy = easy_problems(problems - half, seed=11 + seed)
    hard = multi_step_problems(half, seed=7 + seed)
    mixed = [p for pair in zip(easy, hard, strict=True) for p in pair]
    headers = {"X-TTS-Strategy": "majority", "X-TTS-Budget": str(CAP), "X-TTS-Trace": "true"}
    out: list[dict[str, Any]] = []
    with proxy_on_cpu_stack("qwen2.5-coder-0.5b", cache) as url:
        for index, problem in enumerate(mixed):
            data = ask(url, problem.question, headers, max_tokens)
            texts = [node["text"] for node in data["tts"]["trace"]]
            answers = [extract_answer(t) for t in texts]
            tokens = data["usage"]["completion_tokens"]
            out.append(
                {
                    "question": problem.question,
                    "answer": problem.answer,
                    "answers": answers,
                    "completion_tokens": tokens,
                }
            )
            print(f"... {index + 1}/{len(mixed)} problems", flush=True)
    return out


def _labels(answers: Sequence[str], gold: int) -> tuple[list[str], str]:
    """Canonical labels (equivalent answers share one; no answer is "") and the gold label."""
    groups = group_equivalent([*answers, str(gold)])
    labels = [f"g{g}" if a else "" for g, a in zip(groups, answers, strict=False)]
    return labels, f"g{groups[-1]}"


def _vote(drawn: Sequence[str]) -> str:
    counts = Counter(label for label in drawn if label)
    if not counts:
        return ""
    best = max(counts.values())
    return next(
        label for label in drawn if label and counts[label] == best
    )  # ties: the one seen first


def _against_others(counts: Counter[str], drawn: int) -> int:
    return drawn - max(counts.values(), default=0)


def _against_runner_up(counts: Counter[str], drawn: int) -> int:
    ordered = sorted(counts.values(), reverse=True)
    return ordered[1] if len(ordered) > 1 else 0


def leader_confidence(leader: int, rival: int) -> float:
    """P(p > 1/2) for p ~ Beta(leader + 1, rival + 1), the adaptive-consistency test; for integer
    parameters P(Beta(a, b) > 1/2) = P(Binomial(a + b - 1, 1/2) < a)."""
    a, b = leader + 1, rival + 1
    n = a + b - 1
    return sum(math.comb(n, k) for k in range(a)) / (1 << n)


def _beta(counts: Counter[str], drawn: int, rival: Rival) -> float:
    leader = max(counts.values(), default=0)
    return leader_confidence(leader, rival(counts, drawn)) if leader else 0.0


def _tally(counts: Counter[str], drawn: int) -> tuple[int, int, int]:
    """(leader, runner-up, everything else) votes, as auto counts them."""
    ordered = [*sorted(counts.values(), reverse=True), 0, 0]
    return ordered[0], ordered[1], drawn - ordered[0] - ordered[1]


def _predictive(counts: Counter[str], drawn: int) -> float:
    leader, runner_up, rest = _tally(counts, drawn)
    return keeps_lead(leader, runner_up, rest, CAP - drawn) if leader else 0.0


def _replay(
    labels: Sequence[str],
    settled: Callable[[Counter[str], int], float],
    confidence: float,
    chunk: int = CHUNK,
    lookahead: bool = False,
) -> tuple[str, int, int]:
    """auto's loop over one order of samples: (answer, samples drawn, policy calls)."""
    drawn, calls = PILOTS, 1
    while True:
        counts = Counter(label for label in labels[:drawn] if label)
        if settled(counts, drawn) >= confidence or drawn >= CAP:
            return _vote(labels[:drawn]), drawn, calls
        step = chunk
        if lookahead:
            step = draws_to_settle(*_tally(counts, drawn), CAP - drawn, confidence, chunk)
        drawn, calls = min(CAP, drawn + step), calls + 1


def _fixed(order: list[str], n: int) -> tuple[str, int, int]:
    return _vote(order[:n]), n, 1


def evaluate(samples: list[dict[str, Any]]) -> None:
    rng = random.Random(0)
    rules: list[tuple[str, Callable[[list[str]], tuple[str, int]]]] = [
        (f"majority@{n}", functools.partial(_fixed, n=n)) for n in (4, 8, 16)
    ]
    tests: list[tuple[str, Callable[[Counter[str], int], float]]] = [
        ("vs others", functools.partial(_beta, rival=_against_others)),
        ("vs runner-up", functools.partial(_beta, rival=_against_runner_up)),
    ]
    for name, settled in tests:
        for level in (0.95, 0.9, 0.8):
            rule = functools.partial(_replay, settled=settled, confidence=level)
            rules.append((f"auto {name} >= {level}", rule))
    predictive = functools.partial(_replay, settled=_predictive, lookahead=True)  # auto's rule
    for level in (0.95, 0.9, 0.8):
        rule = functools.partial(predictive, confidence=level)
        rules.append((f"auto predictive >= {level}", rule))
    for chunk in (2, 1):
        rule = functools.partial(predictive, confidence=0.95, chunk=chunk)
        rules.append((f"auto predictive >= 0.95, chunk {chunk}", rule))
    totals = {label: [0.0, 0.0, 0.0] for label, _ in rules}  # correct, samples, calls
    for sample in samples:
        labels, gold = _labels([str(a) for a in sample["answers"]], int(sample["answer"]))
        for _ in range(ORDERS):
            order = rng.sample(labels, len(labels))
            for label, rule_ in rules:
                answer, used, calls = rule_(order)
                totals[label][0] += answer == gold
                totals[label][1] += used
                totals[label][2] += calls
    runs = len(samples) * ORDERS
    per_sample = sum(int(s["completion_tokens"]) for s in samples) / len(samples) / CAP
    print(f"{'rule':<36}{'accuracy':>9}{'samples':>9}{'of 16':>7}{'tokens*':>9}{'calls':>7}")
    print("-" * 77)
    for label, (correct, spent, calls) in totals.items():
        mean = spent / runs
        print(
            f"{label:<36}{correct / runs:>9.3f}{mean:>9.2f}{mean / CAP:>7.0%}"
            f"{mean * per_sample:>9.0f}{calls / runs:>7.2f}"
        )
    print(
        f"({len(samples)} problems x {ORDERS} orders; *completion tokens per problem at "
        f"{per_sample:.0f} per sample)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--problems", type=int, default=24)
    parser.add_argument("--max-tokens", type=int, default=320)
    parser.add_argument("--cache-dir", type=Path, default=None)
    parser.add_argument("--seed", type=int, default=0, help="another set of generated problems")
    parser.add_argument("--save", type=Path, help="write the collected samples here")
    parser.add_argument("--load", type=Path, nargs="+", help="replay samples collected before")
    args = parser.parse_args()
    if args.load:
        samples = [s for path in args.load for s in json.loads(path.read_text())]
    else:
        samples = collect(args.problems, args.max_tokens, args.cache_dir, args.seed)
        if args.save:
            args.save.write_text(json.dumps(samples, indent=1))
    evaluate(samples)


if __name__ == "__main__":
    main()
