"""The users' question, from the committed rows: a small model with search against a larger one
at one greedy sample, paired on the same held-out problems, with the $ each answer costs at one
VM price per hour and each model's measured throughput, and a verdict.

Read by ``bench.calibration --part evaluate``: the small model's replayed policies (its bank) and
the larger model's ``pass1/`` rows, both under ``bench/results/calibration/<model>/``.
"""

from __future__ import annotations

import json
import statistics
from collections.abc import Mapping, Sequence
from pathlib import Path

from tts_eval.calibration import Bank, Expected
from tts_eval.rows import read_rows
from tts_eval.stats import sign_test, wilson

__all__ = ["versus_larger"]

SAMPLED = "n=16, 4 in flight"  # the machine full of concurrent calls: how both would be served


def tokens_per_s(folder: Path, workload: str = SAMPLED) -> float | None:
    """The model's mean measured throughput for ``workload`` (``throughput.jsonl``)."""
    path = folder / "throughput.jsonl"
    if not path.exists():
        return None
    rates = [
        r["tokens_per_s"]
        for r in map(json.loads, path.read_text("utf-8").splitlines())
        if r.get("workload") == workload
    ]
    return statistics.fmean(rates) if rates else None


def versus_larger(
    small: Path,
    larger: Path,
    banks: Sequence[Bank],
    figures: Mapping[str, Sequence[Expected]],
    usd_per_hour: float,
) -> str:
    """Markdown: each of ``figures``' policies against the larger model's greedy answer on the
    problems both have, paired; empty when the larger model has no ``pass1/`` rows."""
    pass1 = {r.id: r for r in read_rows([larger / "pass1"])} if (larger / "pass1").exists() else {}
    shared = [i for i, bank in enumerate(banks) if bank.id in pass1]
    small_rate, large_rate = tokens_per_s(small), tokens_per_s(larger)
    if not shared or small_rate is None or large_rate is None:
        return ""
    rows = [pass1[banks[i].id] for i in shared]
    large_right = [1.0 if r.correct else 0.0 for r in rows]
    large_tokens = statistics.fmean(r.completion_tokens for r in rows)
    large_usd = large_tokens / large_rate * usd_per_hour / 3600
    large_latency = statistics.fmean(r.latency_s for r in rows)
    n = len(shared)
    label = larger.name if larger != small else "one greedy sample"
    side = "the small model" if larger != small else "the search"
    low, high = wilson(round(sum(large_right)), n)
    lines = [
        f"### Against {larger.name} at one greedy sample ({n} held-out problems both have)"
        + (" — the same model: search against none" if larger == small else ""),
        "",
        f"$ per problem at ${usd_per_hour:g}/hour for the machine, each model's tokens at its own "
        f"measured rate with the machine full of concurrent calls ({small.name} "
        f"{small_rate:.1f} tokens/s, {larger.name} {large_rate:.1f}). The larger model's latency "
        "is its own measured one (4 requests in flight); the small model's is estimated from the "
        "bank.",
        "",
        f"{larger.name}, greedy: {statistics.fmean(large_right) * 100:.1f} % "
        f"({low * 100:.1f}-{high * 100:.1f}), {large_tokens:,.0f} tokens, "
        f"${large_usd:.6f} per problem, "
        f"{large_latency:.0f} s.",
        "",
        "| small model's policy | accuracy % | tokens | $ per problem | of the larger's $ | "
        "latency s | larger minus small, pts (paired 95 % CI) | larger won-lost (sign test p) "
        "| verdict at equal $ |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, per_problem in figures.items():
        ours = [per_problem[i] for i in shared]
        accuracy = statistics.fmean(e.accuracy for e in ours)
        tokens = statistics.fmean(e.tokens for e in ours)
        usd = tokens / small_rate * usd_per_hour / 3600
        latency = statistics.fmean(e.latency_s for e in ours)
        gaps = [b - a.accuracy for a, b in zip(ours, large_right, strict=True)]
        won = sum(g > 1e-9 for g in gaps)
        lost = sum(g < -1e-9 for g in gaps)
        mean, half = _interval(gaps)
        p = sign_test(won, lost)
        lines.append(
            f"| {name} | {accuracy * 100:.1f} | {tokens:,.0f} | {usd:.6f} | "
            f"{usd / large_usd:.0%} | {latency:.0f} | {mean * 100:+.1f} ({(mean - half) * 100:+.1f}"
            f" to {(mean + half) * 100:+.1f}) | {won}-{lost} (p {p:.2g}) | "
            f"{_verdict(mean, half, usd / large_usd, label, side)} |"
        )
    return "\n".join(lines) + "\n"


def _interval(values: Sequence[float]) -> tuple[float, float]:
    mean = statistics.fmean(values)
    half = 1.96 * statistics.stdev(values) / len(values) ** 0.5 if len(values) > 1 else 0.0
    return mean, half


def _verdict(gap: float, half: float, cost_ratio: float, larger: str, ours: str) -> str:
    """Who wins at equal $: the side that is more accurate for no more $, when the paired gap's
    interval excludes 0; otherwise what the $ ratio says."""
    significant = abs(gap) > half
    if gap > 0 and significant and cost_ratio >= 1:
        return f"{larger} wins: more accurate and cheaper"
    if gap > 0 and significant:
        return (
            f"{larger} is more accurate; {ours} costs {cost_ratio:.0%} of it "
            "but does not buy the accuracy back"
        )
    if gap < 0 and significant and cost_ratio <= 1:
        return f"{ours} wins: more accurate and cheaper"
    if gap < 0 and significant:
        return f"{ours} is more accurate at {cost_ratio:.1f}× the $"
    cheaper = ours if cost_ratio < 1 else larger
    return f"no significant gap; {cheaper} is cheaper"
