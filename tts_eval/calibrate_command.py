"""``tts-eval calibrate``'s command: draw each scorer's bank (and the step cells' live searches)
through a running proxy, fit, and write the rules file with its report."""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

from rich.console import Console
from rich.markdown import Markdown

from experiments import Price
from tts_eval.calibrate import (
    bank_dir,
    bank_rows,
    bank_throughput,
    estimate_bank,
    provenance_of,
    scored_banks,
    write_outputs,
)
from tts_eval.cli import UsageError, drive, on_ctrl_c, select
from tts_eval.datasets import Problem, load_problems
from tts_eval.fit import fit
from tts_eval.rows import Row
from tts_eval.runner import RunSpec
from tts_eval.steps import step_runs, steps_dir, with_searches

__all__ = ["calibrate"]


async def calibrate(args: argparse.Namespace, console: Console) -> int:
    """One bank per scorer asked for (``--scorer``, repeatable; else the proxy's own), each
    fitted on its own; one rules file with every scorer's cells."""
    on_ctrl_c(console)
    problems = select(load_problems(args.dataset), args.levels, args.fold, args.limit)
    scorers: list[str | None] = list(args.scorers) or [None]
    limit = args.max_spend_tokens / len(scorers) if args.max_spend_tokens is not None else None
    banks: dict[str | None, list[Row]] = {}
    for scorer in scorers:
        rows = await _draw_bank(args, problems, scorer, limit, console)
        drawn = {r.id for r in rows or []}
        banked = [p for p in problems if p.id in drawn] or problems
        await _draw_searches(args, banked[: args.step_problems], scorer, console)
        if rows is None:  # --dry-run
            continue
        banks[scorer] = rows
    return _fit_and_write(args, banks, console) if banks else 0


async def _draw_searches(
    args: argparse.Namespace, problems: list[Problem], scorer: str | None, console: Console
) -> None:
    """The live step searches the ``--steps`` cells need, on ``problems`` (resumed)."""
    runs = step_runs(args.steps, args.pilots, args.cap)
    if not runs:
        return
    console.print(
        f"step searches: {', '.join(r.key for r in runs)} on {len(problems)} problems, at most "
        f"{sum(r.generations for r in runs) * len(problems):,} generations in all"
    )
    if args.dry_run or args.fit_only:
        return
    for search in runs:
        spec = dataclasses.replace(
            _bank_spec(args, scorer),
            strategies=(search.method,),
            budgets=(search.per_depth,),
            headers=(*_scorer_headers(args, scorer), *search.headers()),
        )
        folder = steps_dir(_banks_in(args), scorer, search)
        await drive(args, "openai", spec, problems, folder, console)


def _scorer_headers(args: argparse.Namespace, scorer: str | None) -> list[tuple[str, str]]:
    headers = [("X-TTS-Trace", "true"), *args.headers]
    return [*headers, ("X-TTS-Scorer", scorer)] if scorer is not None else headers


def _bank_spec(args: argparse.Namespace, scorer: str | None) -> RunSpec:
    return RunSpec(
        model=args.model,
        strategies=("best_of_n",),
        budgets=(args.cap,),
        concurrency=max(1, args.concurrency),
        system_prompt=args.system_prompt or None,
        max_tokens=args.max_tokens,
        price=Price(args.usd_per_mtok, args.usd_per_gpu_hour, args.tokens_per_s),
        headers=tuple(_scorer_headers(args, scorer)),
    )


async def _draw_bank(
    args: argparse.Namespace,
    problems: list[Problem],
    scorer: str | None,
    spend_limit: float | None,
    console: Console,
) -> list[Row] | None:
    """Draw what the bank of ``scorer`` still lacks (within the spending limit); its rows, or
    None after a dry run."""
    folder = bank_dir(_banks_in(args), scorer)
    spec = _bank_spec(args, scorer)
    have = bank_rows(folder, args.model, args.cap)
    todo = [p for p in problems if p.id not in have]
    guess = estimate_bank(
        [have[p.id] for p in problems if p.id in have],
        len(todo),
        args.cap,
        args.max_tokens,
        bank_throughput(folder),
    )
    when = f", about {guess.seconds / 3600:.1f} h" if guess.seconds else ""
    name = f"bank ({scorer} scorer)" if scorer else "bank"
    console.print(
        f"{name}: {len(problems) - len(todo)} of {len(problems)} problems drawn; the "
        f"other {guess.problems} take about {guess.tokens:,.0f} generated tokens"
        f"{when} (from {guess.basis})"
    )
    if spend_limit is not None and guess.tokens > spend_limit and todo:
        keep = int(spend_limit // (guess.tokens / len(todo)))
        console.print(
            f"spending limit {spend_limit:,.0f} tokens: drawing {keep} of the {len(todo)} "
            "problems left"
        )
        allowed = {p.id for p in todo[:keep]}
        problems = [p for p in problems if p.id in have or p.id in allowed]
    if args.dry_run:
        return None
    if not args.fit_only:
        summary = await drive(args, "openai", spec, problems, folder, console)
        if summary.failed:
            console.print(
                f"{summary.failed} problems failed (see {folder / 'errors.jsonl'}); "
                "fitting on the rest — run the same command to retry them"
            )
        have = bank_rows(folder, args.model, args.cap)
    return [have[p.id] for p in problems if p.id in have]


def _fit_and_write(
    args: argparse.Namespace, banks_by_scorer: dict[str | None, list[Row]], console: Console
) -> int:
    fits = {}
    runs = step_runs(args.steps, args.pilots, args.cap)
    for asked, rows in banks_by_scorer.items():
        try:
            scorer, banks = scored_banks(rows, args.cap)
        except ValueError as exc:
            raise UsageError(f"{bank_dir(_banks_in(args), asked)}: {exc}") from None
        banks = with_searches(banks, rows, _banks_in(args), asked, runs, args.model)
        options = {"objective": args.objective, "token_weight": args.token_weight}
        grid = {"steps": args.steps} if args.steps else None
        fits[scorer] = (
            fit(
                banks,
                args.cap,
                pilots=args.pilots,
                orders=args.orders,
                seed=args.seed,
                grid=grid,
                **options,
            ),
            banks,
        )
    provenance = provenance_of(
        model=args.model,
        scorers=list(fits),
        dataset=args.dataset,
        fold=str(args.fold) if args.fold else None,
        levels=args.levels,
        problems=max(len(banks) for _, banks in fits.values()),
        cap=args.cap,
        objective=args.objective,
        token_weight=args.token_weight,
        orders=args.orders,
        seed=args.seed,
        pilots_tried=args.pilots,
    )
    text, files = write_outputs(args.out, fits, provenance, args.orders, args.seed)
    if console.is_terminal:
        console.print(Markdown(text))
    else:
        print(text)
    console.print("wrote " + ", ".join(str(f) for f in files))
    return 0


def _banks_in(args: argparse.Namespace) -> Path:
    """Where the banks and the step searches are: ``--bank-from``, else ``--out``."""
    return Path(args.bank_from or args.out)
