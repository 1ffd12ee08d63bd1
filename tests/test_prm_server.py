"""prm_server/ with tiny random PRMs of the four real architectures, loaded by the real loader."""

from __future__ import annotations

import json
import threading
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from harness.prm_models import build_checkpoint
from harness.servers import serve
from prm_server.app import create_app
from prm_server.families import FamilyName
from prm_server.pooling import PoolingScorer
from prm_server.scorer import HfScorer, load_hf_scorer
from prm_server.settings import PrmServerSettings

FAMILY_NAMES: list[FamilyName] = ["qwen_prm", "skywork", "math_shepherd", "rlhflow"]
PROBLEM = "What is 2 + 3?"
STEPS = ["Step 1: add the numbers.", "2 + 3 = 5.", "So the answer is \\boxed{5}."]
GOLDEN = json.loads((Path(__file__).parent / "golden" / "prm_score.json").read_text())


@pytest.fixture(scope="session")
def checkpoints(tmp_path_factory: pytest.TempPathFactory) -> dict[FamilyName, Path]:
    root = tmp_path_factory.mktemp("prm")
    return {family: build_checkpoint(family, root / family) for family in FAMILY_NAMES}


@pytest.fixture(scope="session")
def scorers(checkpoints: dict[FamilyName, Path]) -> dict[FamilyName, HfScorer]:
    return {
        f: load_hf_scorer(path, f, name=f"tiny-{f}", device="cpu", dtype="float32")
        for f, path in checkpoints.items()
    }


EXPECTED_TEXT = {
    "qwen_prm": "<|im_start|>assistant\nStep 1: add the numbers.<extra_0>2 + 3 = 5.<extra_0>"
    "So the answer is \\boxed{5}.<extra_0>",
    "skywork": "<|endoftext|>What is 2 + 3?\nStep 1: add the numbers.\n2 + 3 = 5.\n"
    "So the answer is \\boxed{5}.\n",
    "math_shepherd": "What is 2 + 3? Step 1: add the numbers. ки\n2 + 3 = 5. ки\n"
    "So the answer is \\boxed{5}. ки\n",
    "rlhflow": "user<|end_header_id|>\n\nWhat is 2 + 3? Step 1: add the numbers.<|eot_id|>"
    "<|start_header_id|>assistant<|end_header_id|>\n\n+<|eot_id|><|start_header_id|>user"
    "<|end_header_id|>\n\n2 + 3 = 5.<|eot_id|>",
}
READ_TOKEN = {"qwen_prm": "<extra_0>", "skywork": "\n", "math_shepherd": "ки", "rlhflow": "\n"}


@pytest.mark.parametrize("family", FAMILY_NAMES)
def test_input_format_and_read_positions(scorers: dict[FamilyName, HfScorer], family: str) -> None:
    scorer = scorers[family]  # type: ignore[index]
    tok: Any = scorer._tokenizer
    encoded = scorer.encode(PROBLEM, STEPS)
    text = tok.decode(list(encoded.ids))
    assert EXPECTED_TEXT[family] in text
    assert len(encoded.read_positions) == len(STEPS)
    for position in encoded.read_positions:
        assert tok.decode([encoded.ids[position]]).endswith(READ_TOKEN[family])
    if family == "rlhflow":  # read just before each assistant "+"
        assert all(tok.decode([encoded.ids[p + 1]]) == "+" for p in encoded.read_positions)


@pytest.mark.parametrize("family", FAMILY_NAMES)
def test_scores_are_probabilities_one_per_step(
    scorers: dict[FamilyName, HfScorer], family: str
) -> None:
    scorer = scorers[family]  # type: ignore[index]
    (row,) = scorer.compute([scorer.encode(PROBLEM, STEPS)])
    assert len(row) == len(STEPS) and all(0.0 <= s <= 1.0 for s in row)


@pytest.mark.parametrize("family", FAMILY_NAMES)
def test_batched_equals_unbatched(scorers: dict[FamilyName, HfScorer], family: str) -> None:
    scorer = scorers[family]  # type: ignore[index]
    items = [scorer.encode(PROBLEM, STEPS[:k]) for k in (3, 1, 2)]
    batched = scorer.compute(items)
    for item, row in zip(items, batched, strict=True):
        assert row == pytest.approx(scorer.compute([item])[0], abs=1e-5)


@pytest.mark.parametrize("family", FAMILY_NAMES)
def test_step_score_ignores_later_steps(scorers: dict[FamilyName, HfScorer], family: str) -> None:
    scorer = scorers[family]  # type: ignore[index]
    short = scorer.compute([scorer.encode(PROBLEM, STEPS[:1])])[0]
    long = scorer.compute([scorer.encode(PROBLEM, STEPS)])[0]
    assert long[0] == pytest.approx(short[0], abs=1e-6)
    # ...and a child's ids extend its parent's, which is what lets the cache hit.
    parent, child = scorer.encode(PROBLEM, STEPS[:2]), scorer.encode(PROBLEM, STEPS)
    assert child.ids[: len(parent.ids)] == parent.ids


def test_steps_are_cleaned_of_family_tags(scorers: dict[FamilyName, HfScorer]) -> None:
    scorer = scorers["qwen_prm"]
    encoded = scorer.encode(PROBLEM, ["a <extra_0> b"])
    assert len(encoded.read_positions) == 1
    with pytest.raises(ValueError, match="empty"):
        scorer.encode(PROBLEM, ["<extra_0>"])


# --- the HTTP service ---------------------------------------------------------------------
def settings(**kw: Any) -> PrmServerSettings:
    return PrmServerSettings(**kw)


@pytest.fixture
def prm_url(scorers: dict[FamilyName, HfScorer]) -> Any:
    app = create_app(settings(max_wait_ms=50), scorer=scorers["qwen_prm"])
    with serve(app) as url:
        yield url, app


def test_golden_contract(prm_url: tuple[str, FastAPI]) -> None:
    url, _ = prm_url
    body = dict(GOLDEN["request"])
    response = httpx.post(url + "/v1/score", json=body, timeout=30)
    assert response.status_code == 200
    data = response.json()
    assert set(data) == set(GOLDEN["response"]) and data["model"] == "tiny-qwen_prm"
    assert [len(r) for r in data["scores"]] == [len(c) for c in body["candidates"]]
    assert data["usage"]["prompt_tokens"] > 0


def test_cache_hits_return_identical_scores_without_the_model(
    prm_url: tuple[str, FastAPI],
) -> None:
    url, app = prm_url
    body = {"problem": PROBLEM, "candidates": [STEPS, STEPS[:2]]}
    first = httpx.post(url + "/v1/score", json=body, timeout=30).json()
    calls = app.state.batcher.forward_calls
    second = httpx.post(url + "/v1/score", json=body, timeout=30).json()
    assert second["scores"] == first["scores"]
    assert app.state.batcher.forward_calls == calls
    assert "prm_cache_hits_total 5.0" in httpx.get(url + "/metrics").text


def test_concurrent_requests_share_forward_passes(prm_url: tuple[str, FastAPI]) -> None:
    url, app = prm_url
    before = app.state.batcher.forward_calls
    start = threading.Barrier(16)

    def one(i: int) -> int:
        start.wait()
        body = {"problem": f"{PROBLEM} #{i}", "candidates": [STEPS[: 1 + i % 3]]}
        return httpx.post(url + "/v1/score", json=body, timeout=60).status_code

    with ThreadPoolExecutor(16) as pool:
        assert set(pool.map(one, range(16))) == {200}
    assert app.state.batcher.forward_calls - before < 16


@pytest.mark.parametrize(
    ("body", "status", "param"),
    [
        ({"problem": "p", "candidates": [["ok", " "]]}, 400, "candidates"),
        ({"problem": "p", "candidates": [[]]}, 400, "candidates"),
        ({"problem": "p", "candidates": []}, 400, "candidates"),
        ({"candidates": [["a"]]}, 400, "problem"),
        ({"model": "other", "problem": "p", "candidates": [["a"]]}, 404, "model"),
        ({"problem": "p " * 600, "candidates": [["a"]]}, 413, "candidates"),
    ],
)
def test_api_errors_are_clear(
    prm_url: tuple[str, FastAPI], body: dict[str, Any], status: int, param: str
) -> None:
    url, _ = prm_url
    response = httpx.post(url + "/v1/score", json=body, timeout=30)
    assert response.status_code == status
    error = response.json()["error"]
    assert error["param"] == param and error["message"]


def test_models_and_health(prm_url: tuple[str, FastAPI]) -> None:
    url, _ = prm_url
    card = httpx.get(url + "/v1/models").json()["data"][0]
    assert card["id"] == "tiny-qwen_prm" and card["family"] == "qwen_prm"
    assert card["max_tokens"] == 512
    assert httpx.get(url + "/health").json() == {"status": "ok"}


def test_vllm_pooling_backend_reads_step_rows(checkpoints: dict[FamilyName, Path]) -> None:
    from transformers import AutoTokenizer

    seen: list[dict[str, Any]] = []
    fake = FastAPI()

    @fake.get("/v1/models")
    async def models() -> dict[str, Any]:
        return {"data": [{"id": "/models/Qwen2.5-Math-PRM-7B"}]}

    @fake.post("/pooling")
    async def pooling(request: Request) -> dict[str, Any]:
        body = await request.json()
        seen.append(body)
        tag = 3  # "<extra_0>" is the 4th special token of the test tokenizer
        rows = [[[0.3, 0.7] for t in ids if t == tag] for ids in body["input"]]
        return {"data": [{"index": i, "data": r} for i, r in enumerate(rows)]}

    tokenizer = AutoTokenizer.from_pretrained(checkpoints["qwen_prm"])
    with serve(fake) as url:
        scorer = PoolingScorer("qwen-prm", tokenizer, url, 512)
        try:
            items = [scorer.encode(PROBLEM, STEPS), scorer.encode(PROBLEM, STEPS[:1])]
            assert scorer.compute(items) == [[0.7, 0.7, 0.7], [0.7]]
        finally:
            scorer.close()
    assert seen[0]["task"] == "token_classify" and seen[0]["input"][0] == list(items[0].ids)
    assert seen[0]["model"] == "/models/Qwen2.5-Math-PRM-7B"  # as vLLM serves it, asked once


def test_a_failing_vllm_pooling_backend_is_a_502(
    stack: ExitStack, checkpoints: dict[FamilyName, Path]
) -> None:
    gone = FastAPI()  # a vLLM that lists its model and then fails every call

    @gone.get("/v1/models")
    async def models() -> dict[str, Any]:
        return {"data": [{"id": "prm"}]}

    @gone.post("/pooling")
    async def pooling() -> JSONResponse:
        return JSONResponse({"error": {"message": "engine dead"}}, status_code=500)

    vllm_url = stack.enter_context(serve(gone))
    settings = PrmServerSettings(
        model=checkpoints["qwen_prm"],
        family="qwen_prm",
        backend="vllm_pooling",
        vllm_url=vllm_url,
    )
    url = stack.enter_context(serve(create_app(settings)))
    response = httpx.post(url + "/v1/score", json={"problem": PROBLEM, "candidates": [STEPS]})
    assert response.status_code == 502, response.text
    error = response.json()["error"]
    assert error["code"] == "upstream_error" and "/pooling" in error["message"]


@pytest.mark.parametrize("family", FAMILY_NAMES)
def test_kv_prefix_reuse_equals_full_recompute(
    checkpoints: dict[FamilyName, Path], family: FamilyName
) -> None:
    plain = load_hf_scorer(
        checkpoints[family], family, name="a", device="cpu", dtype="float32", kv_cache_tokens=0
    )
    reuse = load_hf_scorer(
        checkpoints[family], family, name="b", device="cpu", dtype="float32", kv_cache_tokens=4096
    )
    assert reuse.prefix_runner is not None
    accepted: list[str] = []
    new_tokens = 0
    for depth, step in enumerate(STEPS):
        items = [reuse.encode(PROBLEM, [*accepted, f"{step} v{b}"]) for b in range(3)]
        expected = plain.compute(items)
        got = reuse.compute(items)
        for want, have in zip(expected, got, strict=True):
            assert have == pytest.approx(want, abs=1e-5), depth
        for item in items:  # each candidate's own last step...
            start = item.read_positions[-2] + 1 if depth else item.prompt_len
            new_tokens += item.read_positions[-1] + 1 - start
        accepted.append(f"{step} v0")
    # ...and the prompt once are all that ran: accepted steps were never run again
    assert reuse.prefix_runner.tokens_run == new_tokens + items[0].prompt_len


@pytest.mark.parametrize("family", FAMILY_NAMES)
def test_kv_reuse_batches_ragged_prefixes_exactly(
    checkpoints: dict[FamilyName, Path], family: FamilyName
) -> None:
    plain = load_hf_scorer(
        checkpoints[family], family, name="a", device="cpu", dtype="float32", kv_cache_tokens=0
    )
    reuse = load_hf_scorer(
        checkpoints[family], family, name="b", device="cpu", dtype="float32", kv_cache_tokens=4096
    )
    assert reuse.prefix_runner is not None
    warm = [reuse.encode("Other problem?", ["a step.", "b step."])]
    reuse.compute(warm)  # one cached prefix, so the next batch mixes cached and fresh pasts
    batch = [
        reuse.encode("Other problem?", ["a step.", "b step.", "c step."]),
        reuse.encode(PROBLEM, STEPS),
        reuse.encode(PROBLEM, STEPS[:1]),
        reuse.encode("Other problem?", ["a step.", "b step.", "d step, longer than c."]),
    ]
    passes = reuse.prefix_runner.forward_passes
    for want, have in zip(plain.compute(batch), reuse.compute(batch), strict=True):
        assert have == pytest.approx(want, abs=1e-5)
    assert reuse.prefix_runner.forward_passes - passes <= 2


@pytest.mark.parametrize("family", FAMILY_NAMES)
def test_kv_reuse_fresh_branching_trees_and_cost(
    checkpoints: dict[FamilyName, Path], family: FamilyName
) -> None:
    plain = load_hf_scorer(
        checkpoints[family], family, name="a", device="cpu", dtype="float32", kv_cache_tokens=0
    )
    reuse = load_hf_scorer(
        checkpoints[family], family, name="b", device="cpu", dtype="float32", kv_cache_tokens=4096
    )
    runner = reuse.prefix_runner
    assert runner is not None
    # best-of-N shaped: nothing cached, candidates share two fresh steps, then branch
    batch = [reuse.encode(PROBLEM, [*STEPS[:2], f"Then {b}: the answer is {b}."]) for b in range(5)]
    batch.append(reuse.encode("Another one?", ["x.", "y."]))
    # cost: the ids up to the last read position (later ids never affect a score)
    assert [reuse.cost(item) for item in batch] == [i.read_positions[-1] + 1 for i in batch]
    for want, have in zip(plain.compute(batch), reuse.compute(batch), strict=True):
        assert have == pytest.approx(want, abs=1e-5)
    assert runner.forward_passes == 2  # the shared trunk, then the branches
    shared_trunk = batch[0].read_positions[1] + 1
    assert (
        runner.tokens_run
        == shared_trunk
        + sum(i.read_positions[-1] - i.read_positions[-2] for i in batch[:5])
        + batch[5].read_positions[-1]
        + 1
    )
    # what is kept costs nothing; a child costs its own last step only
    assert reuse.cost(batch[0]) == 0
    child = reuse.encode(PROBLEM, [*STEPS[:2], "Then 0: the answer is 0.", "Done."])
    assert reuse.cost(child) == child.read_positions[-1] - child.read_positions[-2]


@pytest.mark.parametrize("family", ["qwen_prm", "rlhflow"])
def test_kv_reuse_token_budget_evicts_and_stays_exact(
    checkpoints: dict[FamilyName, Path], family: FamilyName
) -> None:
    plain = load_hf_scorer(
        checkpoints[family], family, name="a", device="cpu", dtype="float32", kv_cache_tokens=0
    )
    budget = len(plain.encode(PROBLEM, STEPS).ids)  # room for about one candidate
    reuse = load_hf_scorer(
        checkpoints[family], family, name="b", device="cpu", dtype="float32", kv_cache_tokens=budget
    )
    runner = reuse.prefix_runner
    assert runner is not None
    accepted: list[str] = []
    for depth, step in enumerate(STEPS * 2):
        for problem in (PROBLEM, "Another one?"):
            items = [reuse.encode(problem, [*accepted, f"{step} v{b}"]) for b in range(3)]
            for want, have in zip(plain.compute(items), reuse.compute(items), strict=True):
                assert have == pytest.approx(want, abs=1e-5), depth
            assert 0 < runner.held_tokens <= budget
        accepted.append(f"{step} v0")


def test_kv_reuse_splits_passes_over_the_padded_token_limit(
    checkpoints: dict[FamilyName, Path],
) -> None:
    path = checkpoints["qwen_prm"]
    plain = load_hf_scorer(
        path, "qwen_prm", name="a", device="cpu", dtype="float32", kv_cache_tokens=0
    )
    tight = load_hf_scorer(
        path,
        "qwen_prm",
        name="b",
        device="cpu",
        dtype="float32",
        kv_cache_tokens=4096,
        pass_tokens=1,
    )
    runner = tight.prefix_runner
    assert runner is not None
    batch = [
        tight.encode(p, [f"{s} v{b}"])
        for p in (PROBLEM, "Another?")
        for s in STEPS[:1]
        for b in range(2)
    ]
    for want, have in zip(plain.compute(batch), tight.compute(batch), strict=True):
        assert have == pytest.approx(want, abs=1e-5)
    # two prompts (one row each), then the two pairs of first steps (one row per prompt): a pass
    # per row, since none fits with another
    assert runner.forward_passes == 4


def test_api_keys_guard_scoring_but_not_health(scorers: dict[FamilyName, HfScorer]) -> None:
    app = create_app(settings(api_keys=["prm-key"]), scorer=scorers["qwen_prm"])
    body = {"problem": "q", "candidates": [["step one"]]}
    with serve(app) as url:
        refused = httpx.post(url + "/v1/score", json=body)
        assert refused.status_code == 401 and refused.json()["error"]["code"] == "invalid_api_key"
        assert refused.json()["error"]["type"] == "authentication_error"
        key = {"Authorization": "Bearer prm-key"}
        assert httpx.post(url + "/v1/score", json=body, headers=key).status_code == 200
        assert httpx.get(url + "/health").status_code == 200
        # with keys, the schema and its pages are not open either
        for page in ("/docs", "/redoc", "/openapi.json"):
            assert httpx.get(url + page).status_code in (401, 404), page


def _openai_error(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    error: dict[str, Any] = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["message"]
    return error


def test_every_error_is_openai_shaped(scorers: dict[FamilyName, HfScorer]) -> None:
    app = create_app(settings(), scorer=scorers["qwen_prm"])
    with serve(app) as url:
        _openai_error(httpx.get(url + "/v1/nowhere"), 404)
        wrong_method = httpx.get(url + "/v1/score")
        _openai_error(wrong_method, 405)
        assert wrong_method.headers["allow"] == "POST"
        broken = httpx.post(
            url + "/v1/score", content=b'{"problem": ', headers={"content-type": "application/json"}
        )
        _openai_error(broken, 400)
        # a lone surrogate anywhere in the text is the client's 400 naming the field, not a 500
        for body, param in (
            ('{"problem": "q\\ud800", "candidates": [["a"]]}', "problem"),
            ('{"problem": "q", "candidates": [["a", "b\\udfff"]]}', "candidates.0.1"),
        ):
            sent = httpx.post(
                url + "/v1/score",
                content=body.encode(),
                headers={"content-type": "application/json"},
            )
            assert _openai_error(sent, 400)["param"] == param
        assert httpx.get(url + "/health").status_code == 200
