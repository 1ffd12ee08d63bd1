"""``tts-proxy serve``: settings loaded once (CLI > config file > environment), then uvicorn."""

from __future__ import annotations

import argparse
import logging
import socket
from pathlib import Path
from typing import Any

import uvicorn
from fastapi import FastAPI

from proxy.app import create_app
from proxy.service import AppState
from proxy.settings import ProxySettings, load_config_file

__all__ = ["main", "run_server"]


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
    return parser


def run_server(settings: ProxySettings) -> None:
    """Configure logging and run uvicorn in the foreground."""
    logging.basicConfig(
        level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    if logging.getLogger().level > logging.DEBUG:
        # httpx logs every upstream call (health probes every few seconds) at INFO.
        logging.getLogger("httpx").setLevel(logging.WARNING)
    app = create_app(settings)
    config = uvicorn.Config(
        app, host=settings.host, port=settings.port, log_level=settings.log_level.lower(),
        # uvicorn's own backstop; the app fails what is left at the grace's end (see below).
        timeout_graceful_shutdown=settings.shutdown_grace_s + _BACKSTOP_S,
    )  # fmt: skip
    _DrainingServer(config, app).run()


# After the grace the app answers what is left with 503s; this long more for them to be sent.
_BACKSTOP_S = 2


class _DrainingServer(uvicorn.Server):
    """SIGTERM: stop accepting, give in-flight requests ``shutdown_grace_s``, then fail the
    rest with a clean ``503 server_shutting_down`` (streams: their error events)."""

    def __init__(self, config: uvicorn.Config, app: FastAPI) -> None:
        super().__init__(config)
        self._app = app

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        state: AppState | None = getattr(self._app.state, "tts", None)
        if state is not None:
            state.drain.begin(state.settings.shutdown_grace_s)
        await super().shutdown(sockets)


def main(argv: list[str] | None = None) -> None:
    args = _parser().parse_args(argv)
    values: dict[str, Any] = load_config_file(args.config) if args.config else {}
    skip = ("command", "config")
    values.update({k: v for k, v in vars(args).items() if v is not None and k not in skip})
    run_server(ProxySettings(**values))


if __name__ == "__main__":
    main()
