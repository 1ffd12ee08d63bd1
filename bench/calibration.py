"""Calibrated ``auto`` on the real CPU stack, and the 0.5B-vs-1.5B A/B (issue 26's evidence).

Parts, each resumable (run the same command again) and Ctrl-C safe; rows land under
``--out/<model>/``:

- ``bank``: the sample bank ``tts-eval calibrate`` replays voting methods and stopping rules from:
  ``best_of_n`` at N = 16 with the trace on (every sample's answer, confidence score and
  generated tokens) over the first ``--problems`` problems of MATH-500, all levels, both halves;
- ``calibrate``: ``tts-eval calibrate`` on half 0/2 (the bank above, plus live step searches on
  at most ``--live-problems`` problems), writing ``auto_rules.toml``;
- ``evaluate``: replays on half 1/2 (never the problems calibrated on) and the live runs of the
  fitted ``auto``, the static table and the single-sample baselines;
- ``pass1``: the 1.5B model at one greedy sample through ``--provider litellm`` (a large API as
  users call one), on the held-out half.

Each part logs its machine and dtype to ``machines.jsonl``.

Run: ``.venv/bin/python -m bench.calibration --part bank [--model qwen2.5-coder-0.5b]
[--problems 240] [--concurrency 4]``; hours on 2 cores (about 5k generated tokens per problem).
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

from bench.eval_cpu import USD_PER_HOUR
from cpu_stack.stack import MODELS, CpuStack, default_cache_dir
from harness.servers import free_port, serve
from proxy.app import create_app
from proxy.settings import ProxySettings
from tts_eval.__main__ import main as tts_eval

OUT = Path("bench/results/calibration")
BANK_BUDGET = 16


def _settings(policy_url: str, max_tokens: int) -> ProxySettings:
    return ProxySettings(
        policy_urls=[policy_url], request_timeout_s=3600, policy_timeout_s=3600,
        top_candidates_in_response=64, max_answer_tokens=max_tokens, default_max_steps=12,
        default_scorer="confidence",
    )  # fmt: skip


def _log_machine(out: Path, model: str, dtype: str, part: str) -> None:
    cpu = next((line.split(":", 1)[1].strip() for line in
                Path("/proc/cpuinfo").read_text(errors="replace").splitlines()
                if line.startswith("model name")), "unknown")  # fmt: skip
    out.mkdir(parents=True, exist_ok=True)
    entry = {"started_at": time.time(), "part": part, "model": model, "dtype": dtype, "cpu": cpu,
             "cores": os.cpu_count()}  # fmt: skip
    with (out / "machines.jsonl").open("a", encoding="utf-8") as log:
        log.write(json.dumps(entry) + "\n")


def bank(args: argparse.Namespace, proxy_url: str, out: Path) -> int:
    return tts_eval([
        "run", "--endpoint", proxy_url + "/v1", "--model", args.model, "--dataset", "math500",
        "--strategy", "best_of_n", "--budgets", str(BANK_BUDGET), "--header", "X-TTS-Trace: true",
        "--max-tokens", str(args.max_tokens), "--concurrency", str(args.concurrency),
        "--usd-per-gpu-hour", str(USD_PER_HOUR), "--timeout", "3600",
        "--limit", str(args.problems), "--out", str(out / "bank"),
    ])  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--part", choices=("bank",), required=True)
    parser.add_argument("--model", default="qwen2.5-coder-0.5b", choices=sorted(MODELS))
    parser.add_argument("--problems", type=int, default=240)
    parser.add_argument("--max-tokens", type=int, default=512)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument("--cache-dir", type=Path, default=None)
    args = parser.parse_args()
    stack = CpuStack(args.cache_dir or default_cache_dir(), MODELS[args.model])
    stack.prepare()
    out = args.out / args.model
    _log_machine(out, args.model, stack.dtype.dtype, args.part)
    with (
        stack.serve(free_port()) as policy_url,
        serve(create_app(_settings(policy_url, args.max_tokens))) as proxy_url,
    ):
        status = bank(args, proxy_url, out)
    raise SystemExit(status)


if __name__ == "__main__":
    main()
