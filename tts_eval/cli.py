"""What the commands of ``tts-eval`` share: the usage error, the problem selection, Ctrl-C and
driving one run with a progress bar."""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
from collections.abc import Sequence
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from tts_eval.datasets import Fold, Problem, in_fold
from tts_eval.providers import ProviderKind, make_provider
from tts_eval.runner import RunSpec, RunSummary, run

__all__ = ["UsageError", "drive", "on_ctrl_c", "progress_text", "select"]

_CLEANUP_S = 5.0


class UsageError(Exception):
    """A bad command line; printed without a traceback, exit status 2."""


def select(
    problems: list[Problem], levels: Sequence[int] | None, fold: Fold | None, limit: int | None
) -> list[Problem]:
    """The problems a run covers: ``levels`` and ``fold`` filter, then the first ``limit``."""
    if levels:
        problems = [p for p in problems if p.level in levels]
    if fold is not None:
        problems = [p for p in problems if in_fold(p, fold)]
    problems = problems[:limit] if limit else problems
    if not problems:
        raise UsageError("no problems left after --levels/--fold/--limit")
    return problems


def progress_text(summary: RunSummary) -> str:
    accuracy = summary.accuracy
    acc = f"{accuracy * 100:.1f}%" if accuracy is not None else "-"
    return f"acc {acc} · ${summary.cost_usd:.4f} · {summary.failed} failed"


def on_ctrl_c(console: Console) -> None:
    """Ctrl-C cancels the run (finished rows are on disk already). Cleanup gets a few seconds:
    an SDK that swallows the cancellation (litellm's retries) must not keep the run alive, and a
    second Ctrl-C exits at once."""
    loop = asyncio.get_running_loop()
    main = asyncio.current_task()
    pressed = 0

    def handler() -> None:
        nonlocal pressed
        pressed += 1
        if pressed == 1 and main is not None:
            console.print("interrupted: finished rows are saved; run the same command to resume")
            main.cancel()
            loop.call_later(_CLEANUP_S, os._exit, 130)
        else:
            os._exit(130)

    loop.add_signal_handler(signal.SIGINT, handler)


async def drive(
    args: argparse.Namespace,
    kind: ProviderKind,
    spec: RunSpec,
    problems: list[Problem],
    out: Path,
    console: Console,
) -> RunSummary:
    """Run ``spec`` over ``problems`` into ``out`` with a progress bar."""
    provider = make_provider(
        kind,
        args.endpoint,
        args.model,
        args.api_key,
        args.retries,
        args.timeout,
        dict(spec.headers),
        spec.temperature,
    )
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[status]}"),
        TimeRemainingColumn(),
    )
    try:
        with Progress(*columns, console=console, transient=False) as progress:
            task = progress.add_task(args.model, total=None, status="")

            def update(summary: RunSummary) -> None:
                progress.update(
                    task,
                    total=summary.total,
                    completed=summary.skipped + summary.done + summary.failed,
                    status=progress_text(summary),
                )

            return await run(provider, spec, problems, out, on_progress=update)
    finally:
        await provider.aclose()
