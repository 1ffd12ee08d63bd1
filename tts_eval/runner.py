"""``tts-eval run``: every (problem, strategy, budget, sample) not yet in the folder's rows, through
one provider with bounded concurrency, graded as it lands, with a live progress line.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from experiments import Price, api_cost
from tts_eval.datasets import Problem
from tts_eval.grading import equivalent, grade
from tts_eval.providers import Answer, Provider, ProviderError
from tts_eval.rows import Row, RowKey, RowWriter, reprice

__all__ = [
    "DEFAULT_SYSTEM_PROMPT",
    "Job",
    "RunSpec",
    "RunSummary",
    "jobs_of",
    "majority_of",
    "run",
    "shares_samples",
]

DEFAULT_SYSTEM_PROMPT = "Please reason step by step, and put your final answer within \\boxed{}."
_SINGLE = ("none", "cot")  # one sample whatever the budget


@dataclass(frozen=True, slots=True)
class RunSpec:
    model: str
    strategies: tuple[str, ...]
    budgets: tuple[int, ...]
    samples: int = 1
    concurrency: int = 4
    system_prompt: str | None = DEFAULT_SYSTEM_PROMPT
    max_tokens: int | None = None
    price: Price = field(default_factory=Price)
    headers: tuple[tuple[str, str], ...] = ()  # extra request headers, logged with the run
    temperature: float | None = None  # sent with every request when set (0: greedy)


@dataclass(frozen=True, slots=True)
class Job:
    problem: Problem
    strategy: str
    budget: int
    sample: int

    def key(self, model: str) -> RowKey:
        return (self.problem.id, model, self.strategy, self.budget, self.sample)


@dataclass(slots=True)
class RunSummary:
    total: int = 0
    skipped: int = 0  # already in the folder
    done: int = 0
    correct: int = 0
    failed: int = 0
    cost_usd: float = 0.0
    tokens: int = 0
    started: float = field(default_factory=time.monotonic)
    finished: float | None = None

    @property
    def accuracy(self) -> float | None:
        return self.correct / self.done if self.done else None

    @property
    def tokens_per_s(self) -> float | None:
        elapsed = (self.finished or time.monotonic()) - self.started
        return self.tokens / elapsed if self.tokens and elapsed > 0 else None


def shares_samples(spec: RunSpec) -> bool:
    """majority and best_of_n at the same budget draw the same kind of samples: one best_of_n
    run serves both, majority voting over the votes the proxy reports."""
    return "majority" in spec.strategies and "best_of_n" in spec.strategies


def jobs_of(
    problems: list[Problem], spec: RunSpec, done: set[RowKey]
) -> tuple[list[Job], int, int]:
    """The jobs still to run, how many rows are already done and how many rows in all."""
    todo: list[Job] = []
    skipped = total = 0
    shared = shares_samples(spec)
    for problem in problems:
        for strategy in spec.strategies:
            if shared and strategy == "majority":
                continue  # derived from the best_of_n job
            budgets = (1,) if strategy in _SINGLE else spec.budgets
            for budget in budgets:
                for sample in range(spec.samples):
                    job = Job(problem, strategy, budget, sample)
                    keys = [job.key(spec.model)]
                    if shared and strategy == "best_of_n":
                        keys.append(Job(problem, "majority", budget, sample).key(spec.model))
                    missing = [k for k in keys if k not in done]
                    total += len(keys)
                    skipped += len(keys) - len(missing)
                    if missing:
                        todo.append(job)
    return todo, skipped, total


def majority_of(row: Row) -> Row:
    """The majority-vote row of a best_of_n row's samples (the proxy's ``tts.answers``: every
    distinct answer with its vote count; ties go to best_of_n's order)."""
    answers = [a for a in row.tts.get("answers") or [] if a.get("answer")]
    votes = sum(int(a.get("votes", 0)) for a in row.tts.get("answers") or [])
    best = max(answers, key=lambda a: int(a.get("votes", 0)), default=None)
    answer = str(best["answer"]) if best else ""
    tts = {
        **row.tts,
        "strategy": "majority",
        "derived_from": "best_of_n",
        "has_every_vote": votes == row.tts.get("budget_spent"),
    }
    return dataclasses.replace(
        row, strategy="majority", answer=answer, correct=equivalent(answer, row.reference), tts=tts
    )


def _messages(problem: Problem, system_prompt: str | None) -> list[dict[str, str]]:
    messages = [{"role": "system", "content": system_prompt}] if system_prompt else []
    return [*messages, {"role": "user", "content": problem.problem}]


def _measured(price: Price, tokens_per_s: float | None) -> Price | None:
    """A GPU-hour price without a given throughput takes the run's measured one."""
    if price.usd_per_gpu_hour is None or price.tokens_per_s is not None:
        return None
    return Price(usd_per_gpu_hour=price.usd_per_gpu_hour, tokens_per_s=tokens_per_s)


def _cost(spec: RunSpec, answer: Answer, measured_tokens_per_s: float | None) -> float | None:
    tokens = answer.prompt_tokens + answer.completion_tokens
    price = _measured(spec.price, measured_tokens_per_s) or spec.price
    if price.usd_per_mtok is not None or price.usd_per_gpu_hour is not None:
        return price.cost(tokens)
    return api_cost(spec.model, answer.prompt_tokens, answer.completion_tokens)


async def _one(provider: Provider, spec: RunSpec, job: Job) -> tuple[Answer, float]:
    started = time.perf_counter()
    answer = await provider.ask(
        _messages(job.problem, spec.system_prompt), job.strategy, job.budget, spec.max_tokens
    )
    return answer, time.perf_counter() - started


def _row(
    spec: RunSpec,
    provider: Provider,
    job: Job,
    answer: Answer,
    latency_s: float,
    summary: RunSummary,
) -> Row:
    extracted, correct = grade(answer.text, job.problem.answer)
    return Row(
        id=job.problem.id,
        model=spec.model,
        provider=provider.kind,
        strategy=job.strategy,
        budget=job.budget,
        sample=job.sample,
        answer=extracted,
        reference=job.problem.answer,
        correct=correct,
        prompt_tokens=answer.prompt_tokens,
        completion_tokens=answer.completion_tokens,
        hidden_tokens=answer.hidden_tokens,
        latency_s=round(latency_s, 4),
        cost_usd=_cost(spec, answer, summary.tokens_per_s),
        level=job.problem.level,
        tts=answer.tts,
    )


async def run(
    provider: Provider,
    spec: RunSpec,
    problems: list[Problem],
    folder: Path,
    on_progress: Callable[[RunSummary], None] = lambda _s: None,
) -> RunSummary:
    """Run what is missing from ``folder``; rows land as they finish. Cancel-safe: a cancelled
    run leaves only whole rows, and the next run picks up the rest."""
    writer = RowWriter(folder)
    todo, skipped, total = jobs_of(problems, spec, writer.done)
    summary = RunSummary(total=total, skipped=skipped)
    queue: asyncio.Queue[Job] = asyncio.Queue()
    shared = shares_samples(spec)
    for job in todo:
        queue.put_nowait(job)
    errors = (folder / "errors.jsonl").open("a", encoding="utf-8")
    written: set[RowKey] = set()

    async def worker() -> None:
        while not queue.empty():
            job = queue.get_nowait()
            try:
                answer, latency_s = await _one(provider, spec, job)
            except ProviderError as exc:
                summary.failed += 2 if shared and job.strategy == "best_of_n" else 1
                errors.write(json.dumps({"key": list(job.key(spec.model)), "error": str(exc)}))
                errors.write("\n")
                errors.flush()
            else:
                summary.tokens += answer.prompt_tokens + answer.completion_tokens
                row = _row(spec, provider, job, answer, latency_s, summary)
                rows = [row, majority_of(row)] if shared and job.strategy == "best_of_n" else [row]
                new = writer.write(rows)
                written.update(r.key for r in new)
                summary.done += len(new)
                summary.correct += sum(r.correct for r in new)
                summary.cost_usd += row.cost_usd or 0.0
            on_progress(summary)

    try:
        await asyncio.gather(*(worker() for _ in range(max(1, spec.concurrency))))
    finally:
        summary.finished = time.monotonic()
        writer.close()
        errors.close()
        _final_prices(folder, spec, summary, written)
        _log_run(folder, spec, provider, summary)
    return summary


def _final_prices(folder: Path, spec: RunSpec, summary: RunSummary, written: set[RowKey]) -> None:
    """Rows priced at a GPU-hour rate were priced at the throughput measured when each landed;
    at the end every row of this run gets the whole run's throughput (early rows saw a pipeline
    still filling)."""
    price = _measured(spec.price, summary.tokens_per_s)
    rate = price.usd_per_token if price else None
    if rate is None or not written:
        return
    reprice(folder, written, rate)
    summary.cost_usd = summary.tokens * rate


_SECRET_NAMES = frozenset({"authorization", "proxy-authorization", "cookie"})
_SECRET_ENDINGS = ("-key", "-secret", "-token", "api-key")


def _redacted(headers: tuple[tuple[str, str], ...]) -> dict[str, str]:
    """Header values for the log, credentials as ``***`` (``X-TTS-Max-Total-Tokens`` stays)."""
    return {
        k: "***" if k.lower() in _SECRET_NAMES or k.lower().endswith(_SECRET_ENDINGS) else v
        for k, v in headers
    }


def _log_run(folder: Path, spec: RunSpec, provider: Provider, summary: RunSummary) -> None:
    entry: dict[str, Any] = {
        "model": spec.model,
        "provider": provider.kind,
        "strategies": list(spec.strategies),
        "budgets": list(spec.budgets),
        "samples": spec.samples,
        "headers": _redacted(spec.headers),
        "temperature": spec.temperature,
        "done": summary.done,
        "failed": summary.failed,
        "tokens_per_s": summary.tokens_per_s,
        "finished_at": time.time(),
    }
    with (folder / "runs.jsonl").open("a", encoding="utf-8") as f:
        f.write(json.dumps(entry) + "\n")
