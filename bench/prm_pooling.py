"""The PRM server against vLLM's own pooling runner, on the same model and workload (prints a
table; not a test).

A random ``Qwen2ForProcessRewardModel`` (``bench.prm_throughput``'s shape: hidden 256, 4 layers)
is served three ways, and 16 clients run the beam-search-shaped workload of ``bench.prm_workload``
against each (every depth: 4 candidates sharing the accepted steps):

- ``tts-prm`` with its own model (transformers; dynamic batching, the step-score cache and the KV
  tree of shared prefixes);
- ``tts-prm --backend vllm_pooling``: our server's batching and step cache, the forward passes
  on vLLM's pooling runner;
- vLLM's pooling runner called directly (``POST /pooling``, ``task: token_classify``, the token
  ids built as our server builds them): what a GPU user would run instead of our server.

vLLM runs from the CPU stack's policy venv (``make demo`` builds it) with
``--runner pooling``; the step tag's id is the checkpoint's own ``<extra_0>`` (the real
Qwen2.5-Math-PRM's is vLLM's default). Three rounds; steps/s of new steps scored.

Run: ``.venv/bin/python -m bench.prm_pooling [--rounds 3]``
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import json
import statistics
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx

from bench.prm_throughput import model_seconds, prm_server_process, run_clients
from bench.prm_workload import CLIENTS, DEPTH, PROBLEM, WIDTH, step
from cpu_stack.process import server_process
from cpu_stack.stack import MODELS, CpuStack, default_cache_dir
from harness.prm_models import build_checkpoint
from harness.servers import free_port
from prm_server.families import FAMILIES, QWEN_TAG, encode

__all__ = ["main"]


@contextlib.contextmanager
def _vllm_pooling(path: Path, step_tag: int, max_len: int = 4096) -> Iterator[str]:
    stack = CpuStack(default_cache_dir(), MODELS["smollm2"])  # its venv and environment
    python = stack.venv / "bin" / "python"
    if not python.exists():
        raise SystemExit(f"{python} is missing: run `make demo` once to build the CPU stack")
    port = free_port()
    command = [
        *(str(python), "-m", "vllm.entrypoints.openai.api_server", "--model", str(path)),
        *("--runner", "pooling", "--max-model-len", str(max_len), "--dtype", "float32"),
        "--enforce-eager",
        *("--pooler-config", json.dumps({"step_tag_id": step_tag})),
        *("--port", str(port)),
    ]
    url = f"http://127.0.0.1:{port}"
    env = stack.environment() | {"VLLM_CPU_KVCACHE_SPACE": "1"}
    log = Path(tempfile.gettempdir()) / "prm-pooling-vllm.log"
    with server_process(command, url + "/health", env=env, log_path=log, timeout_s=900):
        yield url


async def _pooling_client(http: httpx.AsyncClient, index: int, tokenizer: Any, served: str) -> int:
    """One beam search sent to vLLM's ``/pooling`` as token ids, one request per depth."""
    accepted: list[str] = []
    for depth in range(DEPTH):
        candidates = [[*accepted, step(index, depth, b)] for b in range(WIDTH)]
        problem = PROBLEM.format(client=index)
        ids = [list(encode(FAMILIES["qwen_prm"], tokenizer, problem, c).ids) for c in candidates]
        body = {"model": served, "input": ids, "task": "token_classify"}
        response = await http.post("/pooling", json=body)
        response.raise_for_status()
        accepted.append(candidates[0][-1])
    return DEPTH * WIDTH


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    from transformers import AutoTokenizer

    with tempfile.TemporaryDirectory() as tmp:
        path = build_checkpoint(
            "qwen_prm", Path(tmp) / "qwen_prm", hidden=256, layers=4, context=4096
        )
        tokenizer = AutoTokenizer.from_pretrained(path)
        direct = functools.partial(_pooling_client, tokenizer=tokenizer, served=str(path))
        tag = int(tokenizer.convert_tokens_to_ids(QWEN_TAG))
        rows: dict[str, list[tuple[float, float | None]]] = {}
        with _vllm_pooling(path, tag) as vllm_url:
            configs = {
                "tts-prm (transformers)": ["--max-wait-ms", "30"],
                "tts-prm --backend vllm_pooling": [
                    *("--backend", "vllm_pooling", "--vllm-url", vllm_url),
                    *("--max-wait-ms", "30"),
                ],
            }
            for label, flags in configs.items():
                with prm_server_process(path, flags) as url:
                    asyncio.run(run_clients(url, clients=2, first=1000))  # warm-up, other problems
                    for r in range(args.rounds):
                        before = model_seconds(url)
                        rate = asyncio.run(run_clients(url, first=100 * (r + 1)))
                        rows.setdefault(label, []).append((rate, model_seconds(url) - before))
            label = "vLLM pooling, direct"
            asyncio.run(run_clients(vllm_url, clients=2, first=1000, client=direct))
            for r in range(args.rounds):
                rate = asyncio.run(run_clients(vllm_url, first=100 * (r + 1), client=direct))
                rows.setdefault(label, []).append((rate, None))
    print(f"{'configuration':<34}{'new steps/s (median, min-max)':>32}{'model s':>10}")
    print("-" * 76)
    for label, runs in rows.items():
        rates = [rate for rate, _ in runs]
        model = [m for _, m in runs if m is not None]
        spread = f"{statistics.median(rates):.1f} ({min(rates):.1f}-{max(rates):.1f})"
        model_s = f"{statistics.median(model):.2f}" if model else "-"
        print(f"{label:<34}{spread:>32}{model_s:>10}")
    print(
        f"({CLIENTS} clients, depth {DEPTH}, {WIDTH} candidates per request, {args.rounds} rounds; "
        "each round new problems, so no cache carries over between rounds)"
    )


if __name__ == "__main__":
    main()
