"""``tts-eval run`` (benchmark an endpoint into a folder) and ``tts-eval report`` (tables and plots
from folders or from the experiment store)."""

from __future__ import annotations

import argparse
import asyncio
import re
import sys
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import get_args

from rich.console import Console
from rich.markdown import Markdown

from experiments import Comparison, Price
from experiments.store import ExperimentStore, StoreError
from strategies import StrategyName
from tts_eval.calibrate_command import calibrate
from tts_eval.cli import UsageError, drive, on_ctrl_c, progress_text, select
from tts_eval.datasets import DatasetError, Fold, load_problems, parse_fold
from tts_eval.fit import OBJECTIVES
from tts_eval.report import write_report
from tts_eval.rows import read_rows
from tts_eval.runner import DEFAULT_SYSTEM_PROMPT, RunSpec, RunSummary
from tts_eval.shadow_report import labelled_rows, shadow_table, write_agreement_plot
from tts_eval.steps import parse_steps
from tts_eval.verdict import verdicts_markdown

__all__ = ["main"]

_CLEANUP_S = 5.0
STRATEGIES = ("none", *get_args(StrategyName))


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


def _steps(text: str) -> tuple[tuple[str, int], ...]:
    try:
        return parse_steps(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc


def _fold(text: str) -> Fold:
    try:
        return parse_fold(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc


def _add_common(r: argparse.ArgumentParser) -> None:
    """The flags ``run`` and ``calibrate`` share."""
    r.add_argument("--dataset", required=True, help="math500, aime24 or a JSONL file")
    r.add_argument("--endpoint", help="base URL (…/v1); for litellm its api_base")
    r.add_argument("--model", required=True)
    r.add_argument("--concurrency", type=int, default=4)
    r.add_argument("--limit", type=int, help="the first K problems")
    r.add_argument("--levels", type=_budgets, help="MATH levels to keep, e.g. 1,2")
    r.add_argument(
        "--fold",
        type=_fold,
        help="K/M: only fold K of M, split by a hash of each "
        "problem's id (0/2 and 1/2: two disjoint halves); before --limit",
    )
    r.add_argument("--out", type=Path, required=True)
    r.add_argument("--api-key", help="default: the SDK's environment variable")
    r.add_argument("--system-prompt", default=DEFAULT_SYSTEM_PROMPT)
    r.add_argument("--max-tokens", type=int)
    r.add_argument(
        "--header",
        action="append",
        default=[],
        dest="headers",
        type=_header,
        metavar="'NAME: VALUE'",
        help="sent with every request, repeatable "
        "(e.g. 'X-TTS-Keep-Percent: 10'); one --out per setting",
    )
    r.add_argument("--retries", type=int, default=3, help="per request, on 429/5xx/timeouts")
    r.add_argument("--timeout", type=float, default=900.0, help="seconds per request")
    r.add_argument("--usd-per-mtok", type=float, help="this model's price per 1M tokens")
    r.add_argument("--usd-per-gpu-hour", type=float, help="this model's GPU price per hour")
    r.add_argument(
        "--tokens-per-s",
        type=float,
        help="throughput for --usd-per-gpu-hour (default: measured over the run)",
    )


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tts-eval", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    r = sub.add_parser("run", help="run a benchmark through an endpoint")
    _add_common(r)
    r.add_argument("--provider", choices=("openai", "litellm"), default="openai")
    r.add_argument("--strategy", nargs="+", choices=STRATEGIES, dest="strategies")
    r.add_argument("--budgets", type=_budgets, default=(4, 16))
    r.add_argument("--samples", type=int, default=1, help="samples per problem (for pass@1 bins)")
    r.add_argument(
        "--temperature",
        type=float,
        help="sent with every request (0: one greedy "
        "answer, e.g. a model's pass@1 as users call it); default: the server's",
    )
    c = sub.add_parser(
        "calibrate",
        help="fit auto's cells to this policy and scorer; writes "
        "--out/auto_rules.toml for PROXY_AUTO_RULES_FILE",
    )
    _add_common(c)
    c.add_argument(
        "--cap",
        type=int,
        default=16,
        help="the request budget the cells are for: samples drawn per problem for the bank",
    )
    c.add_argument(
        "--scorer",
        action="append",
        default=[],
        dest="scorers",
        choices=("prm", "verifier", "confidence"),
        help="a scorer to fit for (X-TTS-Scorer), repeatable: one bank each, under "
        "--out/bank-<scorer>; default: the proxy's own, under --out/bank",
    )
    c.add_argument("--pilots", type=_budgets, default=(4,), help="pilot counts to try, e.g. 3,4,6")
    c.add_argument(
        "--objective",
        choices=OBJECTIVES,
        default="tokens-within-interval",
        help="tokens-within-interval: the fewest generated tokens among the cells not "
        "significantly less accurate than the bin's best (paired, 95 %%); accuracy: the "
        "most accurate; utility: accuracy minus --token-weight per 1k tokens",
    )
    c.add_argument(
        "--token-weight",
        type=float,
        default=0.01,
        help="utility: accuracy (0-1) one thousand generated tokens are worth",
    )
    c.add_argument("--orders", type=int, default=100, help="random orders replayed per problem")
    c.add_argument("--seed", type=int, default=0)
    c.add_argument(
        "--max-spend-tokens",
        type=float,
        help="a spending limit: draw no more "
        "problems than the estimate fits into this many generated tokens",
    )
    c.add_argument(
        "--steps",
        type=_steps,
        default=(),
        help="step searches to try as cells, run live (they cannot be replayed from samples): "
        "METHOD@BUDGET,... e.g. beam_search@16,particle_filtering@16, the budget counting the "
        "pilots; one search per problem and pilot count, in the shape auto runs it",
    )
    c.add_argument(
        "--bank-from",
        type=Path,
        help="the folder holding the banks and step searches (default: --out); the rules "
        "file and reports still go to --out",
    )
    c.add_argument(
        "--step-problems",
        type=int,
        default=40,
        help="the step searches run on the first K problems of the bank",
    )
    c.add_argument("--dry-run", action="store_true", help="print the estimate and stop")
    c.add_argument(
        "--fit-only",
        action="store_true",
        help="draw nothing: fit on the problems the bank already holds (no --endpoint needed)",
    )
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


async def _run(args: argparse.Namespace, console: Console) -> RunSummary:
    on_ctrl_c(console)
    problems = select(load_problems(args.dataset), args.levels, args.fold, args.limit)
    spec = RunSpec(
        model=args.model,
        strategies=_strategies(args),
        budgets=args.budgets,
        samples=max(1, args.samples),
        concurrency=max(1, args.concurrency),
        system_prompt=args.system_prompt or None,
        max_tokens=args.max_tokens,
        price=Price(args.usd_per_mtok, args.usd_per_gpu_hour, args.tokens_per_s),
        headers=tuple(args.headers),
        temperature=args.temperature,
    )
    return await drive(args, args.provider, spec, problems, args.out, console)


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
    verdict = verdicts_markdown(rows)
    extra = "\n\n".join(part for part in (extra, verdict) if part)
    _, table, files = write_report(
        rows, out, enable_html=args.html, extra_table=extra, extra_plots=extra_plots
    )
    text = table + "\n\n" + extra if extra else table
    if console.is_terminal:
        console.print(Markdown(text))
    else:  # piped or logged: the markdown itself, unwrapped
        print(text)
    console.print("wrote " + ", ".join(str(f) for f in files))


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    console = Console(stderr=args.command in ("run", "calibrate"))
    try:
        if args.command == "calibrate":
            return asyncio.run(calibrate(args, console))
        if args.command == "run":
            summary = asyncio.run(_run(args, console))
            done = f"{summary.done} rows written, {summary.skipped} already done"
            console.print(
                f"{done}, {summary.failed} failed ({progress_text(summary)}) -> {args.out}"
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
