"""The trace pages in a real headless browser (Debian's ``chromium``; ``.ci/run`` installs it):
the tree of a 72-node beam search made against the fakes is drawn node for node, the chosen answer's
path is highlighted, and a screenshot is kept in ``test-artifacts/``."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import httpx

from tests.conftest import ProxyFactory
from tests.test_traces import search

ARTIFACTS = Path(os.environ.get("TTS_TEST_ARTIFACTS", "test-artifacts"))


def chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None:
        raise AssertionError("chromium is not installed (apt-get install chromium; .ci/run does)")
    return found


def browse(url: str, *args: str) -> str:
    """The page's DOM after its script ran (virtual time lets the fetch finish first)."""
    command = [
        chromium(),
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--hide-scrollbars",
        "--virtual-time-budget=15000",
        *args,
        url,
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120, check=True)
    return done.stdout


def test_the_trace_page_draws_the_tree_and_the_chosen_path(start_proxy: ProxyFactory) -> None:
    url = start_proxy(store_text=True)
    headers = {"X-TTS-Strategy": "beam_search", "X-TTS-Budget": "24", "X-TTS-Beam-Width": "4"}
    request_id, tts = search(url, headers)
    trace = httpx.get(f"{url}/v1/tts/traces/{request_id}").json()
    nodes = {n["node_id"]: n for n in trace["nodes"]}
    assert len(nodes) >= 64

    def with_ancestors(node_id: int | None) -> list[int]:
        chain = []
        while node_id is not None:
            chain.append(node_id)
            node_id = nodes[node_id]["parent_id"]
        return chain

    path = {a for n in nodes.values() if n["choice"] == 0 for a in with_ancestors(n["node_id"])}

    dom = browse(f"{url}/ui/traces/{request_id}", "--dump-dom")
    assert 'data-ready="true"' in dom, dom[-2000:]
    circles = re.findall(r'<circle class="([^"]*)"[^>]*data-node-id="(\d+)"', dom)
    assert sorted(int(i) for _, i in circles) == sorted(nodes)
    highlighted = {int(i) for classes, i in circles if "win" in classes.split()}
    assert highlighted == path
    faded = {int(i) for classes, i in circles if "faded" in classes.split()}
    assert faded == {i for i, n in nodes.items() if n["status"] in ("pruned", "duplicate")}
    chosen = re.search(r'<tr class="answer chosen" id="chosen-answer">(.*?)</tr>', dom)
    assert chosen is not None and f"<td>{tts['answers'][0]['answer']}</td>" in chosen.group(1)
    assert dom.count('class="bar policy') == tts["policy_calls"]
    assert dom.count('class="bar scorer') == tts["prm_calls"]

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    shot = ARTIFACTS / "trace-page.png"
    shot.unlink(missing_ok=True)
    browse(
        f"{url}/ui/traces/{request_id}", f"--screenshot={shot.resolve()}", "--window-size=1400,1400"
    )
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 20_000


def test_the_list_page_lists_recent_requests(start_proxy: ProxyFactory) -> None:
    url = start_proxy()
    first, _ = search(url, {"X-TTS-Strategy": "majority", "X-TTS-Budget": "4"})
    second, _ = search(url, {"X-TTS-Strategy": "beam_search", "X-TTS-Budget": "4"})
    dom = browse(f"{url}/ui/traces", "--dump-dom")
    links = re.findall(r'<a href="/ui/traces/([^"]+)">', dom)
    assert links == [second, first]
    assert dom.count('class="trace-row"') == 2
