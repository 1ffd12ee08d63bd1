"""The PRM scorer on a GPU (or on this machine's CPU), in process: the beam-search-shaped workload
of ``bench.prm_throughput`` (16 clients, 10 depths, 4 candidates sharing their accepted steps)
sent straight to the server's ``Batcher`` and ``HfScorer``, without HTTP, so it runs where the
web stack is not installed (a lent GPU machine has torch and transformers only).

Random ``qwen_prm`` checkpoints made on the spot, two shapes: the CPU bench's small model
(hidden 256, 4 layers) and Qwen2.5-Math-PRM-1.5B's shape (hidden 1536, 28 layers, 12 heads,
2 KV heads; a 600-token vocabulary, which the PRM head never reads). Three configurations, as
in ``bench.prm_throughput``: one sequence per forward without caches; batched without caches;
batched with the step-score cache and the KV tree (the server's default).

Run: ``python -m bench.prm_gpu [--device cuda] [--dtype bfloat16] [--shapes small,1.5b]
[--out rows.jsonl]``; prints a table, appends one JSON row per (shape, configuration) to
``--out``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.prm_workload import CLIENTS, DEPTH, PROBLEM, WIDTH, step
from harness.prm_models import build_checkpoint
from prm_server.batcher import Batcher
from prm_server.metrics import Metrics
from prm_server.scorer import HfScorer, load_hf_scorer

SHAPES: dict[str, dict[str, int]] = {
    "small": {"hidden": 256, "layers": 4, "heads": 4, "kv_heads": 2},
    "1.5b": {"hidden": 1536, "layers": 28, "heads": 12, "kv_heads": 2, "intermediate": 8960},
}
# (max_wait_s, max_batch_tokens, cache_entries, kv_cache_tokens), as the server's flags
CONFIGS: dict[str, tuple[float, int, int, int]] = {
    "one at a time, no cache": (0.0, 1, 0, 0),
    "batched, no caches": (0.03, 16384, 0, 0),
    "batched + cached + KV": (0.03, 16384, 200_000, 65536),
}


async def _client(batcher: Batcher, scorer: HfScorer, client: int) -> int:
    accepted: list[str] = []
    for depth in range(DEPTH):
        candidates = [[*accepted, step(client, depth, b)] for b in range(WIDTH)]
        problem = PROBLEM.format(client=client)
        items = [scorer.encode(problem, steps) for steps in candidates]
        await batcher.score(items)
        accepted.append(candidates[0][-1])
    return DEPTH * WIDTH


async def _run(scorer: HfScorer, config: tuple[float, int, int, int], first: int) -> dict[str, Any]:
    wait_s, batch_tokens, cache_entries, _ = config
    metrics = Metrics()
    batcher = Batcher(
        scorer,
        metrics,
        max_wait_s=wait_s,
        max_batch_tokens=batch_tokens,
        max_queue_items=4096,
        cache_entries=cache_entries,
    )
    task = asyncio.create_task(batcher.run())
    try:
        await asyncio.gather(*(_client(batcher, scorer, first + c) for c in range(2)))  # warm-up
        model_before = _value(metrics, "prm_compute_seconds_total")
        started = time.perf_counter()
        steps = await asyncio.gather(*(_client(batcher, scorer, c) for c in range(CLIENTS)))
        elapsed = time.perf_counter() - started
    finally:
        task.cancel()
    model_s = _value(metrics, "prm_compute_seconds_total") - model_before
    return {
        "steps_per_s": sum(steps) / elapsed,
        "wall_s": elapsed,
        "model_s": model_s,
        "forward_calls": batcher.forward_calls,
    }


def _value(metrics: Metrics, name: str) -> float:
    for family in metrics.registry.collect():
        for sample in family.samples:
            if sample.name == name:
                return float(sample.value)
    return 0.0


def _cpu_name() -> str:
    for line in Path("/proc/cpuinfo").read_text(errors="replace").splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor()


def main() -> None:
    import torch

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", default=None, help="default: bfloat16 on cuda, else float32")
    parser.add_argument("--shapes", default="small,1.5b")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    dtype = args.dtype or ("bfloat16" if args.device.startswith("cuda") else "float32")
    where = torch.cuda.get_device_name() if args.device.startswith("cuda") else _cpu_name()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for shape in args.shapes.split(","):
            folder = build_checkpoint("qwen_prm", Path(tmp) / shape, context=4096, **SHAPES[shape])
            for label, config in CONFIGS.items():
                scorer = load_hf_scorer(
                    folder,
                    "qwen_prm",
                    name=shape,
                    device=args.device,
                    dtype=dtype,
                    kv_cache_tokens=config[3],
                )
                figures = asyncio.run(_run(scorer, config, first=1000))
                row = {
                    "shape": shape,
                    "config": label,
                    "device": args.device,
                    "gpu_or_cpu": where,
                    "dtype": dtype,
                    "torch": torch.__version__,
                    **figures,
                }
                rows.append(row)
                print(json.dumps(row), flush=True)
                if args.out is not None:
                    with args.out.open("a", encoding="utf-8") as out:
                        out.write(json.dumps(row) + "\n")
                del scorer
                if args.device.startswith("cuda"):
                    torch.cuda.empty_cache()
    print(
        f"\n{'shape':<7}{'configuration':<26}{'steps/s':>10}{'x':>7}{'model s':>9}{'forwards':>9}"
    )
    for shape in dict.fromkeys(r["shape"] for r in rows):
        mine = [r for r in rows if r["shape"] == shape]
        base = mine[0]["steps_per_s"]
        for r in mine:
            print(
                f"{shape:<7}{r['config']:<26}{r['steps_per_s']:>10.1f}"
                f"{r['steps_per_s'] / base:>6.1f}x{r['model_s']:>9.2f}{r['forward_calls']:>9}"
            )
    print(
        f"({CLIENTS} clients, depth {DEPTH}, {WIDTH} candidates per request; {args.device} "
        f"{where}, {dtype})"
    )


if __name__ == "__main__":
    main()
