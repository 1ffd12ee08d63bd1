"""``tts-proxy serve``: settings loaded once (CLI > config file > environment), then uvicorn."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Any

from proxy.app import create_app
from proxy.observability.request_ids import RequestIdFilter
from proxy.server.serving import server_for
from proxy.settings import ProxySettings, load_config_file

__all__ = ["main", "run_server"]

_SEARCH_FLAGS = ("strategy", "budget")  # flags that set the search group's fields


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tts-proxy", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="run the OpenAI-compatible proxy")
    serve.add_argument("--host")
    serve.add_argument("--port", type=int)
    serve.add_argument(
        "--policy-url",
        action="append",
        dest="policy_urls",
        help="vLLM OpenAI base URL, e.g. http://127.0.0.1:8001/v1 (repeat for replicas)",
    )
    serve.add_argument("--policy-model", help="served model name (default: discovered)")
    serve.add_argument("--prm-url", help="PRM server base URL (optional)")
    serve.add_argument("--prm-model")
    serve.add_argument(
        "--strategy",
        "--default-strategy",
        dest="strategy",
        help="search.strategy: a request's method when it names none (default: auto)",
    )
    serve.add_argument(
        "--budget",
        "--default-budget",
        dest="budget",
        type=int,
        help="search.budget: N when a request names none (default: 8)",
    )
    serve.add_argument("--config", type=Path, help="a .toml or .json file of settings")
    serve.add_argument("--log-level")
    return parser


def run_server(settings: ProxySettings) -> None:
    """Configure logging and run uvicorn in the foreground."""
    logging.basicConfig(
        level=settings.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s [%(request_id)s]: %(message)s",
    )
    for handler in logging.getLogger().handlers:
        handler.addFilter(RequestIdFilter())
    if logging.getLogger().level > logging.DEBUG:
        # httpx logs every upstream call (health probes every few seconds) at INFO.
        logging.getLogger("httpx").setLevel(logging.WARNING)
    server_for(create_app(settings), settings).run()


def main(argv: list[str] | None = None) -> None:
    args = _parser().parse_args(argv)
    values: dict[str, Any] = load_config_file(args.config) if args.config else {}
    given = {
        k: v for k, v in vars(args).items() if v is not None and k not in ("command", "config")
    }
    search = {k: given.pop(k) for k in _SEARCH_FLAGS if k in given}
    if search:
        values["search"] = {**values.get("search", {}), **search}
    values.update(given)
    run_server(ProxySettings(**values))


if __name__ == "__main__":
    main()
