"""Step searches as calibration cells: what ``tts-eval calibrate --steps`` runs live, and how
the live rows join the sample bank (``Bank.searches``).

A step cell ``beam_search@16`` with 4 pilots leaves the search 12 generations; ``auto`` runs it
in ``strategies.search_shape``'s shape (N per depth, a cap on generations over all depths), so
the live run asks the proxy for exactly that: ``X-TTS-Strategy`` the method, ``X-TTS-Budget``
N, ``X-TTS-Max-Generations`` the 12, ``X-TTS-Beam-Width`` 4. One run per problem and search,
under ``--out/steps[-<scorer>]/<method>+<generations>/`` as ordinary ``tts-eval run`` rows, so
it resumes like any run.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from strategies import group_equivalent, search_shape
from tts_eval.calibration import (
    BEAM_WIDTH,
    STEP_METHODS,
    Bank,
    Searched,
    StepMethod,
    search_generations,
    search_key,
)
from tts_eval.rows import Row, read_rows

__all__ = ["StepRun", "parse_steps", "searched_of", "step_runs", "steps_dir", "with_searches"]


@dataclass(frozen=True, slots=True)
class StepRun:
    """One live search a step cell needs: ``method`` given ``generations`` after the pilots."""

    method: StepMethod
    generations: int
    per_depth: int  # N, as auto runs it
    particle_iterations: int

    @property
    def key(self) -> str:
        return search_key(self.method, self.generations)

    def headers(self) -> list[tuple[str, str]]:
        headers = [
            ("X-TTS-Max-Generations", str(self.generations)),
            ("X-TTS-Beam-Width", str(BEAM_WIDTH)),
        ]
        if self.method == "particle_filtering":
            headers.append(("X-TTS-Particle-Iterations", str(self.particle_iterations)))
        return headers


def parse_steps(text: str) -> tuple[tuple[StepMethod, int], ...]:
    """``beam_search@16,particle_filtering@12`` -> the step cells to try (method, total
    budget, pilots included); a ValueError says what is wrong."""
    cells: list[tuple[StepMethod, int]] = []
    for part in (p.strip() for p in text.split(",")):
        method, sep, budget = part.partition("@")
        if not sep or method not in STEP_METHODS or not budget.isdigit() or int(budget) < 1:
            raise ValueError(
                f"a step cell is METHOD@BUDGET with METHOD one of {', '.join(STEP_METHODS)} "
                f"and BUDGET a positive integer: {part!r}"
            )
        cells.append((method, int(budget)))
    return tuple(cells)


def step_runs(
    steps: Sequence[tuple[StepMethod, int]], pilots: Sequence[int], cap: int
) -> list[StepRun]:
    """The live searches the step cells need for each pilot count tried (one per distinct
    method and generations); a cell that leaves less than one beam votes instead: none."""
    runs: dict[str, StepRun] = {}
    for method, budget in steps:
        for count in pilots:
            generations = search_generations(method, budget, count, cap)
            if generations is None:
                continue
            shape = search_shape(method, generations, BEAM_WIDTH)
            run = StepRun(method, generations, shape.per_depth, shape.particle_iterations)
            runs.setdefault(run.key, run)
    return list(runs.values())


def steps_dir(out: Path, scorer: str | None, run: StepRun) -> Path:
    return out / ("steps" if scorer is None else f"steps-{scorer}") / run.key


def searched_of(
    rows: Iterable[Row], run: StepRun, model: str, banked: Mapping[str, Row], cap: int
) -> dict[str, Searched]:
    """The live rows of one search, by problem id; their answers labelled as the bank's samples
    of the same problem (``banked``: the bank's rows) are, for the pooled final vote."""
    found = {}
    for row in rows:
        if (row.model, row.strategy, row.budget) != (model, run.method, run.per_depth):
            continue
        bank_row = banked.get(row.id)
        found[row.id] = Searched(
            correct=row.correct,
            tokens=row.completion_tokens,
            calls=int(row.tts.get("policy_calls") or 1),
            latency_s=row.latency_s,
            votes=_votes(row, bank_row, cap) if bank_row is not None else None,
        )
    return found


def _votes(row: Row, bank_row: Row, cap: int) -> tuple[tuple[int, float], ...] | None:
    """The search's answers (``tts.answers``) as (label, weight) in the bank's labels: a sample's
    group where equivalent to one, -2 (the bank's label of a right answer no sample gave) where
    equivalent to the reference only, a new label otherwise."""
    answers = row.tts.get("answers")
    if not isinstance(answers, list):
        return None
    samples = [str(s.get("answer") or "") for s in bank_row.tts.get("samples", [])[:cap]]
    found = [(str(a.get("answer") or ""), float(a.get("weight") or 0.0)) for a in answers]
    found = [(text, weight) for text, weight in found if text.strip()]
    groups = group_equivalent([*samples, *(text for text, _ in found), bank_row.reference])
    gold = groups[-1]
    correct_label = gold if gold < len(samples) else -2
    return tuple(
        (correct_label if group == gold else group, weight)
        for group, (_, weight) in zip(groups[len(samples) : -1], found, strict=True)
    )


def with_searches(
    banks: Sequence[Bank],
    rows: Sequence[Row],
    out: Path,
    scorer: str | None,
    runs: Sequence[StepRun],
    model: str,
) -> list[Bank]:
    """The banks (drawn as ``rows``) with the live searches found under ``out`` attached."""
    cap = min((b.size for b in banks), default=0)
    banked = {row.id: row for row in rows}
    found: dict[str, dict[str, Searched]] = {}
    for run in runs:
        live = read_rows([steps_dir(out, scorer, run)])
        for problem, searched in searched_of(live, run, model, banked, cap).items():
            found.setdefault(problem, {})[run.key] = searched
    return [_attach(bank, found.get(bank.id, {})) for bank in banks]


def _attach(bank: Bank, searches: Mapping[str, Searched]) -> Bank:
    return dataclasses.replace(bank, searches={**bank.searches, **searches})
