"""The console entry points start real servers (``python -m proxy serve``, ``python -m prm_server
serve``) and stop cleanly."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import ValidationError

from cpu_stack.process import server_process
from harness.fake_servers import FakeVllm
from harness.prm_models import build_checkpoint
from harness.servers import free_port, serve
from proxy.settings import ProxySettings
from strategies import SearchConfig
from tests.eventually import eventually


def test_proxy_serve_command(tmp_path: Path) -> None:
    with serve(FakeVllm().app()) as vllm_url:
        config = tmp_path / "proxy.toml"
        config.write_text("[search]\nbudget = 2\nmax_budget = 4\n")
        port = free_port()
        command = [
            sys.executable,
            "-m",
            "proxy",
            "serve",
            "--port",
            str(port),
            "--policy-url",
            vllm_url + "/v1",
            "--config",
            str(config),
            "--log-level",
            "warning",
        ]
        with server_process(command, f"http://127.0.0.1:{port}/metrics"):
            body = {"model": "fake-policy", "messages": [{"role": "user", "content": "2+2?"}]}
            url = f"http://127.0.0.1:{port}/v1/chat/completions"
            data = httpx.post(url, json=body, headers={"X-TTS-Strategy": "majority"}).json()
            assert data["tts"]["budget"] == 2  # from the config file
            too_big = httpx.post(url, json=body, headers={"X-TTS-Budget": "5"})
            assert too_big.status_code == 400  # the file's cap applies


def test_prm_serve_command(tmp_path: Path) -> None:
    checkpoint = build_checkpoint("skywork", tmp_path / "skywork")
    port = free_port()
    command = [
        sys.executable,
        "-m",
        "prm_server",
        "serve",
        "--model",
        str(checkpoint),
        "--family",
        "skywork",
        "--port",
        str(port),
        "--log-level",
        "warning",
    ]
    with server_process(command, f"http://127.0.0.1:{port}/health"):
        body = {"problem": "2+2?", "candidates": [["add them", "so 4"]]}
        data = httpx.post(f"http://127.0.0.1:{port}/v1/score", json=body, timeout=30).json()
        assert data["model"] == "skywork" and len(data["scores"][0]) == 2


def test_sigterm_with_a_hung_upstream_ends_within_the_grace_period() -> None:
    hung = FakeVllm(delay_s=120.0)
    with serve(hung.app()) as vllm_url, _proxy_process(vllm_url) as (process, base):
        client = threading.Thread(target=_post_quietly, args=(base,), daemon=True)
        client.start()
        assert hung.started.wait(10)
        started = time.monotonic()
        process.send_signal(signal.SIGTERM)
        # The listener stays open while a request is in flight: readiness turns 503 (out of
        # the load balancer), and a new request is answered with a 503, not refused.
        eventually(lambda: _shutting_down(base), "readiness saying shutting_down", 5)
        body = {"model": "fake-policy", "messages": [{"role": "user", "content": "2+2?"}]}
        refused = httpx.post(base + "/v1/chat/completions", json=body, timeout=5)
        assert refused.status_code == 503, refused.text
        assert refused.headers["retry-after"] == "1"
        assert refused.headers["connection"] == "close"
        assert refused.json()["error"]["code"] == "server_shutting_down"
        process.wait(timeout=15)
        assert time.monotonic() - started < _GRACE_S + 3  # the grace, then the 503s are sent
    assert hung.in_flight == 0 or hung.cancelled >= 1


def _shutting_down(base: str) -> bool:
    ready = httpx.get(base + "/health/ready", timeout=5)
    return ready.status_code == 503 and ready.json()["status"] == "shutting_down"


# What each client asks while a SIGTERM arrives: searches and pass-through, streamed or not.
_CLIENTS: dict[str, tuple[str, dict[str, object], str]] = {
    "search": (
        "/v1/chat/completions",
        {"messages": [{"role": "user", "content": "2+2?"}]},
        "majority",
    ),
    "search_stream": (
        "/v1/chat/completions",
        {"messages": [{"role": "user", "content": "2+2?"}], "stream": True},
        "majority",
    ),
    "passthrough": ("/v1/completions", {"prompt": "2+2?"}, "none"),
    "passthrough_stream": (
        "/v1/chat/completions",
        {"stream": True, "messages": [{"role": "user", "content": "2+2?"}]},
        "none",
    ),
    "responses_stream": ("/v1/responses", {"input": "2+2?", "stream": True}, "majority"),
}


def test_sigterm_fails_what_is_left_after_the_grace_with_clean_errors() -> None:
    slow = FakeVllm(trickle_s=0.05)  # every answer takes far longer than the grace period
    answers: dict[str, tuple[int, str]] = {}
    with serve(slow.app()) as vllm_url, _proxy_process(vllm_url) as (process, base):
        threads = [
            threading.Thread(target=_ask, args=(base, name, answers), daemon=True)
            for name in _CLIENTS
        ]
        for thread in threads:
            thread.start()
        eventually(lambda: _all_in_flight(slow), "all five requests reached the policy server")
        assert not answers
        started = time.monotonic()
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=15)
        assert time.monotonic() - started < _GRACE_S + 3
        for thread in threads:
            thread.join(5)
    for name in ("search", "passthrough"):
        status, text = answers[name]
        assert status == 503 and json.loads(text)["error"]["code"] == "server_shutting_down"
    for name in ("search_stream", "passthrough_stream"):
        status, text = answers[name]
        events = [line[6:] for line in text.splitlines() if line.startswith("data: ")]
        assert status == 200 and events[-1] == "[DONE]", text[-300:]
        assert json.loads(events[-2])["error"]["code"] == "server_shutting_down"
    status, text = answers["responses_stream"]
    kinds = [line[7:] for line in text.splitlines() if line.startswith("event: ")]
    assert kinds[0] == "response.created" and kinds[-2:] == ["error", "response.failed"]
    assert "server_shutting_down" in text


_GRACE_S = 2


def _all_in_flight(fake: FakeVllm) -> bool:
    """Each of ``_CLIENTS`` has reached the fake: the chat pass-through stream, the legacy
    pass-through (its raw prompt), and the three searches' samples (2 each, the budget)."""
    raw = [c for c in fake.completion_calls if c.get("prompt") == "2+2?"]
    samples = sum(int(c.get("n") or 1) for c in fake.completion_calls if c not in raw)
    return bool(fake.chat_calls) and bool(raw) and samples >= 3 * 2


@contextlib.contextmanager
def _proxy_process(
    vllm_url: str, env_extra: dict[str, str] | None = None
) -> Iterator[tuple[subprocess.Popen[bytes], str]]:
    port = free_port()
    command = [
        sys.executable,
        "-m",
        "proxy",
        "serve",
        "--port",
        str(port),
        "--policy-url",
        vllm_url + "/v1",
        "--policy-model",
        "fake-policy",
        "--log-level",
        "warning",
    ]
    env = dict(os.environ, PROXY_SHUTDOWN_GRACE_S=str(_GRACE_S), PROXY_SEARCH__BUDGET="2")
    env.update(env_extra or {})
    base = f"http://127.0.0.1:{port}"
    with server_process(command, base + "/health/live", env=env) as process:
        yield process, base


def _ask(base: str, name: str, answers: dict[str, tuple[int, str]]) -> None:
    path, body, strategy = _CLIENTS[name]
    try:
        with httpx.stream(
            "POST",
            base + path,
            json={"model": "fake-policy"} | body,
            timeout=60,
            headers={"X-TTS-Strategy": strategy},
        ) as response:
            text = "".join(response.iter_text())
        answers[name] = (response.status_code, text)
    except httpx.HTTPError as exc:
        answers[name] = (0, repr(exc))


def _post_quietly(base: str) -> None:
    body = {"model": "fake-policy", "messages": [{"role": "user", "content": "2+2?"}]}
    with contextlib.suppress(httpx.HTTPError):
        httpx.post(
            base + "/v1/chat/completions", json=body, headers={"X-TTS-Strategy": "cot"}, timeout=60
        )


def test_connections_that_never_finish_their_headers_are_closed() -> None:
    with serve(FakeVllm().app()) as vllm_url:
        env = {"PROXY_HEADER_READ_TIMEOUT_S": "1"}
        with _proxy_process(vllm_url, env) as (_, base):
            port = int(base.rsplit(":", 1)[1])
            idle = [socket.create_connection(("127.0.0.1", port)) for _ in range(100)]
            loris = socket.create_connection(("127.0.0.1", port))
            loris.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nX-Slow: ")
            with httpx.Client(base_url=base) as client:  # a keep-alive client is unaffected
                assert client.get("/v1/models").status_code == 200
                time.sleep(0.5)
                started = time.monotonic()
                for _ in range(6):  # the loris keeps trickling, a byte every 0.25 s
                    with contextlib.suppress(OSError):
                        loris.sendall(b"a")
                    time.sleep(0.25)
                assert client.get("/v1/models").status_code == 200
            loris.settimeout(5)
            answer = _read_all(loris)
            assert answer.startswith(b"HTTP/1.1 408") and b'"request_timeout"' in answer
            assert time.monotonic() - started < 2.5
            for sock in idle:  # closed without a byte: they were never requests
                sock.settimeout(5)
                assert _read_all(sock) == b""
            for sock in (*idle, loris):
                sock.close()


def _read_all(sock: socket.socket) -> bytes:
    chunks = []
    while chunk := sock.recv(65536):
        chunks.append(chunk)
    return b"".join(chunks)


def test_request_heads_too_large_or_unparsable_get_openai_shaped_errors() -> None:
    with serve(FakeVllm().app()) as vllm_url:
        env = {"PROXY_MAX_HEADER_BYTES": "16384", "PROXY_MAX_HEADER_COUNT": "20"}
        with _proxy_process(vllm_url, env) as (_, base):
            port = int(base.rsplit(":", 1)[1])
            huge = b"X-Big: " + b"a" * 4 * 2**20 + b"\r\n"  # 4 MB in one header
            many = b"".join(b"X-F%d: 1\r\n" % i for i in range(30))
            one_read = b"X-Mid: " + b"a" * 40_000 + b"\r\n"  # whole headers in a single read
            cases = [(huge, b"PROXY_MAX_HEADER_BYTES"), (one_read, b"PROXY_MAX_HEADER_BYTES")]
            for extra, what in [*cases, (many, b"PROXY_MAX_HEADER_COUNT")]:
                with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
                    with contextlib.suppress(OSError):  # it may close before all is sent
                        sock.sendall(b"GET /v1/models HTTP/1.1\r\nHost: x\r\n" + extra + b"\r\n")
                    answer = _read_all(sock)
                assert answer.startswith(b"HTTP/1.1 431"), answer[:200]
                head, body = answer.split(b"\r\n\r\n", 1)
                assert b"connection: close" in head
                error = json.loads(body)["error"]
                assert error["code"] == "request_header_fields_too_large"
                assert what.decode() in error["message"]
            # What cannot be parsed as HTTP is answered in OpenAI's shape too, not plain text.
            for garbage in (b"GARBAGE\r\n\r\n", b"GET / HTTP/1.1\r\nX-Nul: a\x00b\r\n\r\n"):
                with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
                    sock.sendall(garbage)
                    answer = _read_all(sock)
                assert answer.startswith(b"HTTP/1.1 400"), answer[:200]
                error = json.loads(answer.split(b"\r\n\r\n", 1)[1])["error"]
                assert error["type"] == "invalid_request_error" and error["code"] == "invalid_http"
            # A body far over the header bound is not headers; a keep-alive connection starts
            # each request's count afresh.
            text = "x " * 40_000
            chat = {"model": "fake-policy", "messages": [{"role": "user", "content": text}]}
            with httpx.Client(base_url=base, timeout=60) as client:
                for _ in range(3):
                    none = {"X-TTS-Strategy": "none"}
                    reply = client.post("/v1/chat/completions", json=chat, headers=none)
                    assert reply.status_code == 200, reply.text


def test_prm_server_closes_connections_that_never_finish_their_headers(tmp_path: Path) -> None:
    checkpoint = build_checkpoint("skywork", tmp_path / "skywork")
    port = free_port()
    command = [
        sys.executable,
        "-m",
        "prm_server",
        "serve",
        "--model",
        str(checkpoint),
        "--family",
        "skywork",
        "--port",
        str(port),
        "--log-level",
        "warning",
    ]
    env = dict(os.environ, PRM_SERVER_HEADER_READ_TIMEOUT_S="1")
    with server_process(command, f"http://127.0.0.1:{port}/health", env=env):
        idle = [socket.create_connection(("127.0.0.1", port)) for _ in range(20)]
        loris = socket.create_connection(("127.0.0.1", port))
        loris.sendall(b"POST /v1/score HTTP/1.1\r\nHost: x\r\nX-Slow: ")
        for sock in (*idle, loris):
            sock.settimeout(5)
        answer = _read_all(loris)  # returns once the server closes it
        assert answer.startswith(b"HTTP/1.1 408") and b'"request_timeout"' in answer
        assert all(_read_all(sock) == b"" for sock in idle)  # closed without a byte
        assert httpx.get(f"http://127.0.0.1:{port}/health").status_code == 200
        for sock in (*idle, loris):
            sock.close()


def test_the_old_flat_upstream_settings_still_work_with_a_warning(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """``PROXY_POLICY_TIMEOUT_S`` (and ``policy_max_retries = ...`` in a file) are read as
    ``policy.timeout_s`` for one more release, each named at start-up with its new name; a
    value under the new name wins."""
    monkeypatch.setenv("PROXY_POLICY_TIMEOUT_S", "12")
    monkeypatch.setenv("PROXY_PRM__TIMEOUT_S", "34")
    monkeypatch.setenv("PROXY_PRM_TIMEOUT_S", "99")
    monkeypatch.setenv("PROXY_TRACE_STORE_MAX", "7")
    with caplog.at_level("WARNING", logger="proxy.settings"):
        old: dict[str, Any] = {"policy_max_retries": 5}  # the old name, on purpose
        settings = ProxySettings(**old)
    assert settings.policy.timeout_s == 12.0 and settings.policy.max_retries == 5
    assert settings.policy.max_connections == 256  # the policy's own default is kept
    assert settings.prm.timeout_s == 34.0  # the new name wins over the old one
    assert settings.traces.store_max == 7
    said = caplog.text
    assert "PROXY_POLICY__TIMEOUT_S" in said and "PROXY_POLICY__MAX_RETRIES" in said
    assert "PROXY_PRM__TIMEOUT_S" in said and "PROXY_TRACES__STORE_MAX" in said


def test_the_old_flat_search_settings_move_into_the_search_group(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """``PROXY_DEFAULT_BUDGET`` is ``search.budget`` now (a JSON list is decoded as the env
    source does it); the library's own defaults fill the rest; a default above its cap is a
    start-up error naming both."""
    monkeypatch.setenv("PROXY_DEFAULT_BUDGET", "3")
    monkeypatch.setenv("PROXY_ANSWER_MARKERS", '["ANSWER:"]')
    monkeypatch.setenv("PROXY_SEARCH__MAX_STEPS", "6")
    with caplog.at_level("WARNING", logger="proxy.settings"):
        old: dict[str, Any] = {"default_strategy": "majority"}
        settings = ProxySettings(**old)
    assert settings.search.budget == 3 and settings.search.strategy == "majority"
    assert settings.search.answer_markers == ["ANSWER:"] and settings.search.max_steps == 6
    assert settings.search.temperature == SearchConfig().temperature  # written once, there
    assert "PROXY_SEARCH__BUDGET" in caplog.text and "PROXY_SEARCH__STRATEGY" in caplog.text
    assert "PROXY_SEARCH__ANSWER_MARKERS" in caplog.text
    too_big: dict[str, Any] = {"search": {"budget": 9, "max_budget": 4}}
    with pytest.raises(ValidationError, match=r"search.budget must be within 1..search.max_budget"):
        ProxySettings(**too_big)


def test_the_cli_flags_set_the_search_group(tmp_path: Path) -> None:
    """``--budget`` lands in ``search.budget`` next to a config file's ``[search]`` table, and a
    deprecated flat name in the environment still starts the server, warned about."""
    with serve(FakeVllm().app()) as vllm_url:
        config = tmp_path / "proxy.toml"
        config.write_text("[search]\nstrategy = 'majority'\n")
        port = free_port()
        command = [
            *(sys.executable, "-m", "proxy", "serve", "--port", str(port)),
            *("--policy-url", vllm_url + "/v1", "--config", str(config), "--budget", "3"),
        ]
        log = tmp_path / "proxy.log"
        env = dict(os.environ, PROXY_MAX_BUDGET="3")  # the old name of search.max_budget
        with server_process(command, f"http://127.0.0.1:{port}/health/live", env=env, log_path=log):
            body = {"model": "fake-policy", "messages": [{"role": "user", "content": "2+2?"}]}
            url = f"http://127.0.0.1:{port}/v1/chat/completions"
            data = httpx.post(url, json=body).json()
            assert (data["tts"]["strategy"], data["tts"]["budget"]) == ("majority", 3)
            too_big = httpx.post(url, json=body, headers={"X-TTS-Budget": "4"})
            assert too_big.status_code == 400  # the old name's cap applies
        assert "PROXY_SEARCH__MAX_BUDGET" in log.read_text()  # named at start-up
