"""``tts-prm serve``: load settings once (CLI over ``PRM_SERVER_*`` environment), then uvicorn."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Any

from prm_server.app import create_app
from prm_server.families import FAMILIES
from prm_server.serving import server_for
from prm_server.settings import PrmServerSettings

__all__ = ["main"]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="tts-prm", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="serve a PRM on POST /v1/score")
    serve.add_argument("--model", type=Path, help="local checkpoint folder")
    serve.add_argument("--family", choices=sorted(FAMILIES))
    serve.add_argument("--served-name")
    serve.add_argument("--backend", choices=["hf", "vllm_pooling"])
    serve.add_argument("--vllm-url")
    serve.add_argument("--host")
    serve.add_argument("--port", type=int)
    serve.add_argument("--device", help="cpu | cuda | cuda:1 ...")
    serve.add_argument("--dtype", choices=["float32", "bfloat16", "float16"])
    serve.add_argument("--max-tokens", type=int)
    serve.add_argument("--max-wait-ms", type=float)
    serve.add_argument("--max-batch-tokens", type=int)
    serve.add_argument("--cache-entries", type=int, help="step scores kept (0: no cache)")
    serve.add_argument("--kv-cache-tokens", type=int, help="tokens of KV cache kept (0: off)")
    serve.add_argument("--log-level")
    args = parser.parse_args(argv)
    values: dict[str, Any] = {k: v for k, v in vars(args).items() if v is not None}
    values.pop("command")
    settings = PrmServerSettings(**values)
    logging.basicConfig(level=settings.log_level.upper())
    server = server_for(
        create_app(settings),
        settings.host,
        settings.port,
        settings.log_level.lower(),
        settings.header_read_timeout_s,
    )
    server.run()


if __name__ == "__main__":
    main()
