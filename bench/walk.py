"""One request's walk through ``proxy/``: which modules and functions a non-streamed beam search
runs code in, against the fake policy server (startup and a warm-up request excluded).

Counts each function's first entry only (a coroutine resumed after an ``await`` is not a new
step), so the figures follow calls, not the event loop's scheduling:

- modules with code run, and distinct functions;
- module stops: the sequence of modules entered, consecutive repeats merged;
- re-entries: a call into a module already on the call stack below its caller (a callback, or
  ping-pong between modules).

Run: ``.venv/bin/python -m bench.walk [--stops]`` (about 5 s; ``--stops`` prints the module
sequence and the functions, in order). To compare with an older layout, run it
from a worktree of that commit with ``PYTHONPATH`` pointing there.
"""

from __future__ import annotations

import sys
import threading
from contextlib import ExitStack
from pathlib import Path
from types import FrameType
from typing import Any

import httpx

import proxy
from harness.fake_servers import FakeVllm
from harness.servers import serve
from proxy.app import create_app
from proxy.settings import ProxySettings

ROOT = Path(proxy.__file__).resolve().parent


class Walk:
    def __init__(self) -> None:
        self.active = False
        self.started: dict[int, FrameType] = {}  # kept alive, so ids stay unique
        self.stops: list[str] = []
        self.functions: list[str] = []
        self.reentries: list[str] = []

    def __call__(self, frame: FrameType, event: str, arg: Any) -> None:
        if not self.active or event != "call" or id(frame) in self.started:
            return
        self.started[id(frame)] = frame
        module = _module(frame)
        if module is None:
            return
        if not self.stops or self.stops[-1] != module:
            self.stops.append(module)
        name = f"{module}:{frame.f_code.co_name}"
        if name not in self.functions:
            self.functions.append(name)
        below = []
        back = frame.f_back
        while back is not None:
            if (outer := _module(back)) is not None and (not below or below[-1] != outer):
                below.append(outer)
            back = back.f_back
        if below and below[0] != module and module in below[1:]:
            self.reentries.append(f"{' → '.join(reversed(below))} → {name}")


def _module(frame: FrameType) -> str | None:
    path = Path(frame.f_code.co_filename)
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else None


def main() -> None:
    walk = Walk()
    threading.setprofile(walk)  # the servers run in threads started below
    with ExitStack() as stack:
        vllm = stack.enter_context(serve(FakeVllm().app()))
        url = stack.enter_context(serve(create_app(ProxySettings(policy_urls=[vllm + "/v1"]))))
        body = {"model": "fake-policy", "messages": [{"role": "user", "content": "q"}]}
        headers = {"X-TTS-Strategy": "beam_search", "X-TTS-Budget": "4"}
        for measured in (False, True):  # the first warms caches (model name, prompt)
            walk.active = measured
            reply = httpx.post(url + "/v1/chat/completions", json=body, headers=headers, timeout=30)
            assert reply.status_code == 200, reply.text
        walk.active = False
    files = len(list(ROOT.rglob("*.py")))
    print(
        "| proxy/ files | modules with code run | distinct functions | module stops | re-entries |"
    )
    print("|---|---|---|---|---|")
    print(
        f"| {files} | {len(set(walk.stops))} | {len(walk.functions)} | {len(walk.stops)} | "
        f"{len(walk.reentries)} |"
    )
    if "--stops" in sys.argv:
        print("\n" + " → ".join(walk.stops))
        print("\nfunctions, in order:\n" + "\n".join(walk.functions))
        print("\nre-entries:\n" + "\n".join(walk.reentries))


if __name__ == "__main__":
    main()
