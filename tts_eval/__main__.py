"""``tts-eval run`` (benchmark an endpoint into a folder) and ``tts-eval report`` (tables and plots
from folders or from the experiment store)."""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import signal
import sys
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

from rich.console import Console
from rich.markdown import Markdown
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from experiments import Comparison, Price
from experiments.store import ExperimentStore, StoreError
from tts_eval.datasets import DatasetError, Fold, Problem, in_fold, load_problems, parse_fold
from tts_eval.providers import ProviderKind, make_provider
from tts_eval.report import write_report
from tts_eval.rows import read_rows
from tts_eval.runner import DEFAULT_SYSTEM_PROMPT, RunSpec, RunSummary, run
from tts_eval.shadow_report import labelled_rows, shadow_table, write_agreement_plot

__all__ = ["main"]

_CLEANUP_S = 5.0
STRATEGIES = (
    "none", "auto", "cot", "majority", "best_of_n", "beam_search", "dvts", "particle_filtering",
    "deepconf",
)  # fmt: skip


class UsageError(Exception):
    """A bad command line; printed without a traceback, exit status 2."""


def _budgets(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"budgets are integers like 1,4,16: {text!r}") from exc
    if not values or any(v < 1 for v in values):
        raise argparse.ArgumentTypeError("budgets must be positive integers")
    return values


_OWN_HEADERS = frozenset({"x-tts-strategy", "x-tts-budget"})  # set by --strategy and --budgets


def _header(text: str) -> tuple[str, str]:
    name, sep, value = text.partition(":")
    name, value = name.strip(), value.strip()
    if not sep or not name or not value or any(c.isspace() for c in name):
        raise argparse.ArgumentTypeError(f"a header is 'Name: value': {text!r}")
    if name.lower() in _OWN_HEADERS:
        raise argparse.ArgumentTypeError(f"{name} comes from --strategy/--budgets")
    return name, value


def _fold(text: str) -> Fold:
    try:
        return parse_fold(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc


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


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tts-eval", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    r = sub.add_parser("run", help="run a benchmark through an endpoint")
    r.add_argument("--dataset", required=True, help="math500, aime24 or a JSONL file")
    r.add_argument("--endpoint", help="base URL (…/v1); for litellm its api_base")
    r.add_argument("--model", required=True)
    r.add_argument("--provider", choices=("openai", "litellm"), default="openai")
    r.add_argument("--strategy", nargs="+", choices=STRATEGIES, dest="strategies")
    r.add_argument("--budgets", type=_budgets, default=(4, 16))
    r.add_argument("--samples", type=int, default=1, help="samples per problem (for pass@1 bins)")
    r.add_argument("--concurrency", type=int, default=4)
    r.add_argument("--limit", type=int, help="the first K problems")
    r.add_argument("--levels", type=_budgets, help="MATH levels to keep, e.g. 1,2")
    r.add_argument("--fold", type=_fold, help="K/M: only fold K of M, split by a hash of each "
                   "problem's id (0/2 and 1/2: two disjoint halves); before --limit")  # fmt: skip
    r.add_argument("--out", type=Path, required=True)
    r.add_argument("--api-key", help="default: the SDK's environment variable")
    r.add_argument("--system-prompt", default=DEFAULT_SYSTEM_PROMPT)
    r.add_argument("--max-tokens", type=int)
    r.add_argument("--header", action="append", default=[], dest="headers", type=_header,
                   metavar="'NAME: VALUE'", help="sent with every request, repeatable "
                   "(e.g. 'X-TTS-Keep-Percent: 10'); one --out per setting")  # fmt: skip
    r.add_argument("--retries", type=int, default=3, help="per request, on 429/5xx/timeouts")
    r.add_argument("--timeout", type=float, default=900.0, help="seconds per request")
    r.add_argument("--usd-per-mtok", type=float, help="this model's price per 1M tokens")
    r.add_argument("--usd-per-gpu-hour", type=float, help="this model's GPU price per hour")
    r.add_argument("--tokens-per-s", type=float, help="throughput for --usd-per-gpu-hour "
                   "(default: measured over the run)")  # fmt: skip
    p = sub.add_parser("report", help="tables and plots from run folders or the store")
    p.add_argument("folders", nargs="*", type=Path)
    p.add_argument("--store", help="the experiment store (sqlite:///file or postgresql://…)")
    p.add_argument("--since", help="ISO time or a window like 24h / 7d (store only)")
    p.add_argument("--until", help="ISO time (store only)")
    p.add_argument("--out", type=Path, help="default: the first folder")
    p.add_argument("--html", action="store_true", help="also write a self-contained report.html")
    return parser


def _strategies(args: argparse.Namespace) -> tuple[str, ...]:
    if args.provider == "litellm":
        if args.strategies and set(args.strategies) != {"none"}:
            raise UsageError("a large API answers with one plain call: --strategy none only")
        return ("none",)
    return tuple(args.strategies or ("auto",))


def _progress_text(summary: RunSummary) -> str:
    accuracy = summary.accuracy
    acc = f"{accuracy * 100:.1f}%" if accuracy is not None else "-"
    return f"acc {acc} · ${summary.cost_usd:.4f} · {summary.failed} failed"


def _on_ctrl_c(console: Console) -> None:
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


async def _run(args: argparse.Namespace, console: Console) -> RunSummary:
    _on_ctrl_c(console)
    problems = select(load_problems(args.dataset), args.levels, args.fold, args.limit)
    spec = RunSpec(
        model=args.model, strategies=_strategies(args), budgets=args.budgets,
        samples=max(1, args.samples), concurrency=max(1, args.concurrency),
        system_prompt=args.system_prompt or None, max_tokens=args.max_tokens,
        price=Price(args.usd_per_mtok, args.usd_per_gpu_hour, args.tokens_per_s),
        headers=tuple(args.headers),
    )  # fmt: skip
    kind: ProviderKind = args.provider
    provider = make_provider(kind, args.endpoint, args.model, args.api_key, args.retries,
                             args.timeout, dict(spec.headers))  # fmt: skip
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
               TextColumn("{task.fields[status]}"), TimeRemainingColumn())  # fmt: skip
    try:
        with Progress(*columns, console=console, transient=False) as progress:
            task = progress.add_task(args.model, total=None, status="")

            def update(summary: RunSummary) -> None:
                progress.update(task, total=summary.total,
                                completed=summary.skipped + summary.done + summary.failed,
                                status=_progress_text(summary))  # fmt: skip

            return await run(provider, spec, problems, args.out, on_progress=update)
    finally:
        await provider.aclose()


def _window(text: str | None) -> datetime | None:
    if text is None:
        return None
    match = re.fullmatch(r"(\d+)([hd])", text)
    if match:
        amount = int(match[1])
        delta = timedelta(hours=amount) if match[2] == "h" else timedelta(days=amount)
        return datetime.now(UTC) - delta
    try:
        moment = datetime.fromisoformat(text)
    except ValueError as exc:
        raise UsageError(f"not a time or a window like 24h/7d: {text!r}") from exc
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


async def _store_records(args: argparse.Namespace) -> list[Comparison]:
    store = await ExperimentStore.open(args.store)
    try:
        return list(await store.comparisons(_window(args.since), _window(args.until)))
    finally:
        await store.aclose()


def _report(args: argparse.Namespace, console: Console) -> None:
    if not args.folders and not args.store:
        raise UsageError("give run folders, --store URL, or both")
    out = args.out or (args.folders[0] if args.folders else Path("tts-report"))
    rows = read_rows(args.folders)
    extra, extra_plots = "", []
    if args.store:
        records = asyncio.run(_store_records(args))
        extra = "## Shadow comparisons\n\n" + shadow_table(records)
        rows += labelled_rows(records)
        out.mkdir(parents=True, exist_ok=True)
        if write_agreement_plot(records, out / "agreement_vs_budget.png"):
            extra_plots.append(out / "agreement_vs_budget.png")
    if not rows and not extra:
        raise UsageError("no rows found in " + ", ".join(map(str, args.folders)))
    _, table, files = write_report(rows, out, enable_html=args.html, extra_table=extra,
                                   extra_plots=extra_plots)  # fmt: skip
    text = extra + "\n\n" + table if extra else table
    if console.is_terminal:
        console.print(Markdown(text))
    else:  # piped or logged: the markdown itself, unwrapped
        print(text)
    console.print("wrote " + ", ".join(str(f) for f in files))


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    console = Console(stderr=args.command == "run")
    try:
        if args.command == "run":
            summary = asyncio.run(_run(args, console))
            done = f"{summary.done} rows written, {summary.skipped} already done"
            console.print(
                f"{done}, {summary.failed} failed ({_progress_text(summary)}) -> {args.out}"
            )
            return 1 if summary.failed else 0
        _report(args, console)
        return 0
    except (KeyboardInterrupt, asyncio.CancelledError):
        return 130
    except (UsageError, DatasetError, StoreError, ValueError) as exc:
        console.print(f"tts-eval: error: {exc}")
        return 2


if __name__ == "__main__":
    sys.exit(main())
