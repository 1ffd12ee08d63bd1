"""lm-eval's ``local-completions``, unmodified, through the proxy over the fake policy: a
generate task, a log-likelihood task and a rolling log-likelihood (perplexity) task, with its
default setup of tokenized requests and the server's own tokenizer
(``tokenizer_backend=remote``: ``/tokenizer_info``, ``/tokenize``, ``/detokenize``, relayed by
the proxy). The tasks read a local JSON file (no dataset hub)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from harness.fake_servers import FakeVllm
from harness.servers import serve
from proxy.app import create_app
from proxy.settings import ProxySettings

DOCS = [
    {"question": "What is 2 + 2?", "answer": "4", "choices": ["4", "five"], "label": 0},
    {"question": "What is 3 + 1?", "answer": "4", "choices": ["4", "seven"], "label": 0},
]

GENERATE = """task: tts_generate
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
test_split: test
output_type: generate_until
doc_to_text: "Question: {{{{question}}}}\\nAnswer:"
doc_to_target: "{{{{answer}}}}"
generation_kwargs:
  until: ["\\n\\n\\n"]
  max_gen_toks: 64
  temperature: 0
filter_list:
  - name: boxed
    filter:
      - function: regex
        regex_pattern: "boxed\\\\{{(\\\\d+)\\\\}}"
      - function: take_first
metric_list:
  - metric: exact_match
"""

LOGLIKELIHOOD = """task: tts_loglikelihood
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
test_split: test
output_type: multiple_choice
doc_to_text: "Question: {{{{question}}}}\\nAnswer:"
doc_to_choice: "{{{{choices}}}}"
doc_to_target: label
metric_list:
  - metric: acc
"""

ROLLING = """task: tts_rolling
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
test_split: test
output_type: loglikelihood_rolling
doc_to_text: ""
doc_to_target: "{{{{question}}}} {{{{answer}}}}"
metric_list:
  - metric: word_perplexity
"""


def run_lm_eval(url: str, model: str, folder: Path) -> dict[str, Any]:
    """``lm_eval`` on the two local tasks against ``url`` (the proxy); its results."""
    data = folder / "docs.jsonl"
    data.write_text("".join(json.dumps(doc) + "\n" for doc in DOCS))
    tasks = folder / "tasks"
    tasks.mkdir()
    (tasks / "generate.yaml").write_text(GENERATE.format(data=data))
    (tasks / "loglikelihood.yaml").write_text(LOGLIKELIHOOD.format(data=data))
    (tasks / "rolling.yaml").write_text(ROLLING.format(data=data))
    model_args = f"base_url={url}/v1/completions,model={model},tokenizer_backend=remote"
    command = [
        sys.executable,
        "-m",
        "lm_eval",
        "--model",
        "local-completions",
        "--model_args",
        model_args,
        "--tasks",
        "tts_generate,tts_loglikelihood,tts_rolling",
        "--include_path",
        str(tasks),
        "--output_path",
        str(folder / "out"),
    ]
    offline = {"HF_DATASETS_OFFLINE": "1", "HF_HUB_OFFLINE": "1", "HF_HOME": str(folder / "hf")}
    done = subprocess.run(
        command,
        env=os.environ | offline | {"OPENAI_API_KEY": "unused"},
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    (results_file,) = (folder / "out").rglob("results_*.json")
    results: dict[str, Any] = json.loads(results_file.read_text())["results"]
    return results


def test_generate_and_loglikelihood_tasks_through_the_proxy(
    stack: ExitStack, tmp_path: Path
) -> None:
    vllm = FakeVllm()
    upstream = stack.enter_context(serve(vllm.app()))
    url = stack.enter_context(serve(create_app(ProxySettings(policy_urls=[upstream + "/v1"]))))
    results = run_lm_eval(url, "fake-policy", tmp_path)
    # The fake answers "... \\boxed{4}" at temperature 0: every generated answer is right.
    assert results["tts_generate"]["exact_match,boxed"] == 1.0
    # Each choice's log-likelihood is TOKEN_LOGPROB per token: the shorter, right one wins.
    assert results["tts_loglikelihood"]["acc,none"] == 1.0
    # A perplexity task: every token at TOKEN_LOGPROB, so exp(0.1 × tokens / words) per word.
    assert results["tts_rolling"]["word_perplexity,none"] > 1.0
    # Every kind reached the policy unchanged, as token ids from its own tokenizer.
    echo = [c for c in vllm.completion_calls if c.get("echo")]
    assert echo and all(isinstance(c["prompt"][0], list) for c in echo)
    assert echo[0]["logprobs"] == 1 and echo[0]["max_tokens"] == 1
    generate = [c for c in vllm.completion_calls if not c.get("echo")]
    assert generate and all(isinstance(c["prompt"][0], list) for c in generate)
    assert any(call.get("prompt") for call in vllm.tokenizer_calls)
