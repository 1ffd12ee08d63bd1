"""``tts-eval`` end to end on loopback: the real proxy over a fake vLLM plays "our side", a fake
OpenAI-compatible server plays the large API (through litellm's ``openai/`` provider)."""

from __future__ import annotations

import csv
import dataclasses
import json
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest
from PIL import Image

from harness.fake_api import FakeChatApi
from harness.fake_servers import FakeVllm
from harness.servers import serve
from tests.conftest import ProxyFactory
from tests.eventually import eventually
from tts_eval.__main__ import main
from tts_eval.datasets import DatasetError, in_fold, load_problems, parse_fold
from tts_eval.grading import grade
from tts_eval.rows import Row, read_rows
from tts_eval.stats import difficulty_bins, wilson
from tts_eval.verdict import verdicts, verdicts_markdown

PROBLEMS = [
    {"id": f"p{i}", "problem": f"What is {i} + {4 - i}?", "answer": "4", "level": 1 + i % 2}
    for i in range(4)
] + [{"id": "p-half", "problem": "What is 1/2?", "answer": "\\frac{1}{2}", "level": 3}]


@pytest.fixture
def dataset(tmp_path: Path) -> Path:
    path = tmp_path / "problems.jsonl"
    path.write_text("".join(json.dumps(p) + "\n" for p in PROBLEMS))
    return path


@pytest.fixture
def api(stack: ExitStack) -> Iterator[tuple[FakeChatApi, str]]:
    fake = FakeChatApi(
        answer=lambda m: "That is \\boxed{4}." if "+" in m[-1]["content"] else "It is \\boxed{0.5}"
    )
    yield fake, stack.enter_context(serve(fake.app())) + "/v1"


def big_api_run(url: str, dataset: Path, out: Path, *extra: str) -> int:
    return main(
        [
            "run",
            "--dataset",
            str(dataset),
            "--provider",
            "litellm",
            "--model",
            "openai/fake-big",
            "--endpoint",
            url,
            "--api-key",
            "sk-test",
            "--retries",
            "0",
            "--out",
            str(out),
            *extra,
        ]
    )


def test_grading_accepts_equivalent_forms_and_survives_free_text() -> None:
    assert grade("so \\boxed{0.5}", "\\frac{1}{2}") == ("0.5", True)
    assert grade("The answer is \\boxed{\\dfrac{3}{6}}", "0.5")[1]
    assert grade("\\boxed{(3, \\frac{\\pi}{2})}", "\\left( 3, \\frac{\\pi}{2} \\right)")[1]
    assert not grade("\\boxed{5}", "4")[1]
    assert grade("I cannot solve this, sorry!", "4") == ("", False)
    assert grade("\\boxed{\\text{north-east}}", "17")[1] is False


def test_bundled_datasets_and_malformed_lines(tmp_path: Path) -> None:
    math500 = load_problems("math500")
    assert len(math500) == 500 and {p.level for p in math500} == {1, 2, 3, 4, 5}
    assert len(load_problems("aime24")) == 30
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"problem": "1+1", "answer": "2"}\n{"problem": "oops"\n')
    with pytest.raises(DatasetError, match=r"bad.jsonl:2: not valid JSON"):
        load_problems(str(bad))
    bad.write_text('{"problem": "1+1"}\n')
    with pytest.raises(DatasetError, match=r"bad.jsonl:1: missing or empty 'answer'"):
        load_problems(str(bad))
    assert (
        main(
            [
                "run",
                "--dataset",
                str(bad),
                "--endpoint",
                "http://127.0.0.1:9/v1",
                "--model",
                "m",
                "--out",
                str(tmp_path / "o"),
            ]
        )
        == 2
    )


def test_proxy_and_big_api_rows_and_report(
    start_proxy: ProxyFactory,
    vllm: FakeVllm,
    api: tuple[FakeChatApi, str],
    dataset: Path,
    tmp_path: Path,
) -> None:
    proxy = start_proxy(with_prm=False)
    out = tmp_path / "run"
    code = main(
        [
            "run",
            "--dataset",
            str(dataset),
            "--endpoint",
            proxy + "/v1",
            "--model",
            "fake-policy",
            "--strategy",
            "cot",
            "majority",
            "best_of_n",
            "--budgets",
            "2,4",
            "--concurrency",
            "3",
            "--usd-per-mtok",
            "0.5",
            "--out",
            str(out),
        ]
    )
    assert code == 0
    assert big_api_run(api[1], dataset, out) == 0
    rows = read_rows([out])
    assert len(rows) == 5 * (1 + 2 + 2) + 5
    assert len({r.key for r in rows}) == len(rows)
    ours = [r for r in rows if r.provider == "openai"]
    assert {(r.strategy, r.budget) for r in ours} == {
        ("cot", 1),
        ("majority", 2),
        ("majority", 4),
        ("best_of_n", 2),
        ("best_of_n", 4),
    }
    for row in ours:
        assert row.tts["strategy"] == row.strategy and row.tts["budget_spent"] >= 1
        assert row.cost_usd == pytest.approx(row.tokens * 0.5e-6)
    majority4 = [r for r in ours if (r.strategy, r.budget) == ("majority", 4)]
    assert all(r.hidden_tokens > 0 for r in majority4)  # 3 of 4 samples are not returned
    # One best_of_n run serves majority too: the same samples, voted on the reported votes.
    best4 = {r.id: r for r in ours if (r.strategy, r.budget) == ("best_of_n", 4)}
    for row in majority4:
        assert row.tts["derived_from"] == "best_of_n" and row.tts["has_every_vote"]
        assert row.tokens == best4[row.id].tokens
        top = max(row.tts["answers"], key=lambda a: a["votes"])
        assert row.answer == top["answer"]
    assert len(vllm.completion_calls) == 5 * 3  # cot + best_of_n at 2 and 4, nothing for majority
    big = [r for r in rows if r.provider == "litellm"]
    assert all(r.strategy == "none" and r.correct for r in big)  # 0.5 == \frac{1}{2}
    assert all(r.cost_usd is None for r in big)  # no price for an unknown model, no crash

    assert main(["report", str(out), "--html"]) == 0
    for name in ("accuracy_vs_budget", "accuracy_vs_tokens", "accuracy_by_difficulty"):
        with Image.open(out / f"{name}.png") as image:
            image.verify()
            assert image.format == "PNG"
    assert not (out / "accuracy_vs_cost.png").exists() or (out / "accuracy_vs_cost.png").stat()
    html = (out / "report.html").read_text()
    assert "data:image/png;base64," in html and "openai/fake-big" in html
    with (out / "summary.csv").open() as f:
        summary = {(g["model"], g["strategy"], int(g["budget"])): g for g in csv.DictReader(f)}
    for (model, strategy, budget), group in summary.items():
        members = [r for r in rows if (r.model, r.strategy, r.budget) == (model, strategy, budget)]
        assert int(group["n"]) == len(members)
        assert float(group["accuracy"]) == pytest.approx(
            sum(r.correct for r in members) / len(members)
        )
        tokens = sum(r.tokens for r in members) / len(members)
        assert float(group["tokens_per_problem"]) == pytest.approx(tokens)
    assert "n/a" in (out / "report.md").read_text()  # the unpriced large API


def test_headers_reach_the_proxy_and_rows_keep_its_reports(
    start_proxy: ProxyFactory, dataset: Path, tmp_path: Path
) -> None:
    proxy = start_proxy(with_prm=False)
    out = tmp_path / "run"
    headers = [
        "--header",
        "X-TTS-Keep-Percent: 50",
        "--header",
        "X-TTS-Particle-Iterations:2",
        "--header",
        "Authorization: Bearer sk-secret",
        "--header",
        "X-Api-Key: sk-2",
        "--header",
        "X-TTS-Max-Total-Tokens: 100000",
    ]
    assert (
        main(
            [
                "run",
                "--dataset",
                str(dataset),
                "--endpoint",
                proxy + "/v1",
                "--model",
                "fake-policy",
                "--strategy",
                "deepconf",
                "particle_filtering",
                "--budgets",
                "4",
                *headers,
                "--out",
                str(out),
            ]
        )
        == 0
    )
    rows = read_rows([out])
    assert len(rows) == 2 * len(PROBLEMS)
    for row in rows:
        if row.strategy == "deepconf":
            report = row.tts["deepconf"]
            assert report["keep_percent"] == 50 and report["traces"] >= report["kept"] >= 1
        else:
            assert row.tts["particle_iterations"] == 2
    (logged,) = [json.loads(line) for line in (out / "runs.jsonl").read_text().splitlines()]
    assert logged["headers"] == {
        "X-TTS-Keep-Percent": "50",
        "X-TTS-Particle-Iterations": "2",
        "Authorization": "***",
        "X-Api-Key": "***",
        "X-TTS-Max-Total-Tokens": "100000",
    }
    for bad in ("X-TTS-Budget: 4", "no-colon", ": empty"):
        with pytest.raises(SystemExit):
            main(
                [
                    "run",
                    "--dataset",
                    str(dataset),
                    "--endpoint",
                    proxy + "/v1",
                    "--model",
                    "m",
                    "--header",
                    bad,
                    "--out",
                    str(tmp_path / "bad"),
                ]
            )


def test_headers_reach_a_large_api_through_litellm(
    api: tuple[FakeChatApi, str], dataset: Path, tmp_path: Path
) -> None:
    fake, url = api
    assert (
        big_api_run(
            url, dataset, tmp_path, "--limit", "2", "--header", "OpenAI-Organization: org-1"
        )
        == 0
    )
    assert len(fake.headers) == 2
    assert all(h.get("openai-organization") == "org-1" for h in fake.headers)
    assert all("temperature" not in call for call in fake.calls)  # the server's default


def test_temperature_reaches_both_providers_and_is_logged(
    start_proxy: ProxyFactory,
    vllm: FakeVllm,
    api: tuple[FakeChatApi, str],
    dataset: Path,
    tmp_path: Path,
) -> None:
    fake, url = api
    assert big_api_run(url, dataset, tmp_path / "big", "--limit", "2", "--temperature", "0") == 0
    assert [call["temperature"] for call in fake.calls] == [0, 0]
    logged = json.loads((tmp_path / "big" / "runs.jsonl").read_text().splitlines()[-1])
    assert logged["temperature"] == 0
    proxy = start_proxy(with_prm=False)
    assert (
        main(
            [
                "run",
                "--dataset",
                str(dataset),
                "--endpoint",
                proxy + "/v1",
                "--model",
                "fake-policy",
                "--strategy",
                "cot",
                "--limit",
                "1",
                "--temperature",
                "0",
                "--out",
                str(tmp_path / "ours"),
            ]
        )
        == 0
    )
    assert [call["temperature"] for call in vllm.completion_calls] == [0]


def test_known_prices_come_from_litellm_offline(
    api: tuple[FakeChatApi, str], dataset: Path, tmp_path: Path
) -> None:
    out = tmp_path / "run"
    code = main(
        [
            "run",
            "--dataset",
            str(dataset),
            "--provider",
            "litellm",
            "--model",
            "openai/gpt-4o",
            "--endpoint",
            api[1],
            "--api-key",
            "sk-test",
            "--out",
            str(out),
        ]
    )
    assert code == 0
    rows = read_rows([out])
    for row in rows:  # gpt-4o list price: $2.50 / 1M input, $10 / 1M output
        assert row.cost_usd == pytest.approx(
            row.prompt_tokens * 2.5e-6 + row.completion_tokens * 1e-5
        )


def test_429_and_5xx_are_retried(
    api: tuple[FakeChatApi, str], dataset: Path, tmp_path: Path
) -> None:
    fake, url = api
    fake.fail_statuses = [429, 503]
    code = main(
        [
            "run",
            "--dataset",
            str(dataset),
            "--limit",
            "1",
            "--endpoint",
            url,
            "--model",
            "fake-big",
            "--strategy",
            "none",
            "--retries",
            "2",
            "--out",
            str(tmp_path),
        ]
    )
    assert code == 0
    assert len(fake.calls) == 3 and len(read_rows([tmp_path])) == 1


def test_failed_requests_are_reported_and_rerun(
    api: tuple[FakeChatApi, str], dataset: Path, tmp_path: Path
) -> None:
    fake, url = api
    fake.fail_statuses = [500]
    assert big_api_run(url, dataset, tmp_path, "--limit", "2", "--concurrency", "1") == 1
    assert len(read_rows([tmp_path])) == 1
    assert "injected 500" in (tmp_path / "errors.jsonl").read_text()
    assert big_api_run(url, dataset, tmp_path, "--limit", "2") == 0
    assert len(read_rows([tmp_path])) == 2


@pytest.mark.parametrize("stop", [signal.SIGINT, signal.SIGKILL], ids=["ctrl-c", "kill"])
def test_resume_after_a_stop_and_after_a_torn_line(
    api: tuple[FakeChatApi, str], dataset: Path, tmp_path: Path, stop: signal.Signals
) -> None:
    fake, url = api
    fake.gate, fake.gate_after = threading.Event(), 2  # two answers, then the third hangs
    out = tmp_path / "run"
    command = [
        sys.executable,
        "-m",
        "tts_eval",
        "run",
        "--dataset",
        str(dataset),
        "--provider",
        "litellm",
        "--model",
        "openai/fake-big",
        "--endpoint",
        url,
        "--api-key",
        "x",
        "--concurrency",
        "1",
        "--out",
        str(out),
    ]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        eventually(lambda: len(read_rows([out])) >= 2 and len(fake.calls) >= 3, "two rows", 60)
        process.send_signal(stop)
        output, _ = process.communicate(timeout=30)
    finally:
        fake.gate.set()
        if process.poll() is None:
            process.kill()
            process.communicate()
    if stop == signal.SIGINT:
        assert process.returncode == 130, output
        assert "run the same command to resume" in output
    else:
        assert process.returncode == -signal.SIGKILL
    kept = read_rows([out])
    assert len(kept) == 2
    lines = (out / "rows.jsonl").read_text().splitlines()
    assert all(json.loads(line) for line in lines)  # whole rows only
    with (out / "rows.jsonl").open("a") as f:
        f.write('{"id": "p3", "model": "openai/fak')  # a kill mid-write
    calls_before = len(fake.calls)
    assert big_api_run(url, dataset, out) == 0
    rows = read_rows([out])
    assert sorted(r.id for r in rows) == sorted(str(p["id"]) for p in PROBLEMS)
    assert len(fake.calls) - calls_before == 5 - len(kept)


def test_concurrency_is_bounded(
    api: tuple[FakeChatApi, str], dataset: Path, tmp_path: Path
) -> None:
    fake, url = api
    fake.delay_s = 0.3
    assert big_api_run(url, dataset, tmp_path, "--concurrency", "2") == 0
    assert len(fake.calls) == 5 and fake.peak_in_flight == 2


def test_gpu_hour_prices_use_the_runs_measured_throughput(
    api: tuple[FakeChatApi, str], dataset: Path, tmp_path: Path
) -> None:
    fake, url = api
    fake.delay_s = 0.1
    assert big_api_run(url, dataset, tmp_path, "--usd-per-gpu-hour", "3.6") == 0
    [run] = [json.loads(line) for line in (tmp_path / "runs.jsonl").read_text().splitlines()]
    rate = 3.6 / 3600 / run["tokens_per_s"]
    for row in read_rows([tmp_path]):  # one rate for the whole run, not each row's moment
        assert row.cost_usd == pytest.approx(row.tokens * rate)


def _row(problem: str, correct: bool, strategy: str = "cot", sample: int = 0) -> Row:
    return Row(
        id=problem,
        model="m",
        provider="openai",
        strategy=strategy,
        budget=1,
        sample=sample,
        answer="",
        reference="1",
        correct=correct,
        prompt_tokens=1,
        completion_tokens=1,
        hidden_tokens=0,
        latency_s=1.0,
        cost_usd=None,
        level=2,
    )


def test_difficulty_bins_follow_pass_at_1_when_problems_have_several_samples() -> None:
    rows = [_row("easy", s < 3, sample=s) for s in range(4)]
    rows += [_row("medium", s == 0, sample=s) for s in range(4)]
    rows += [_row("hard", False, sample=s) for s in range(4)]
    rows += [_row("hard", True, strategy="best_of_n")]  # search rows do not decide difficulty
    assert difficulty_bins(rows) == {"easy": "easy", "medium": "medium", "hard": "hard"}
    assert difficulty_bins([_row("one", True)]) == {"one": "level 2"}


def test_wilson_interval() -> None:
    assert wilson(0, 0) == (0.0, 0.0)
    low, high = wilson(8, 10)
    assert low == pytest.approx(0.4902, abs=1e-4) and high == pytest.approx(0.9433, abs=1e-4)
    assert wilson(0, 5)[0] == 0.0 and wilson(5, 5)[1] == 1.0
    for trials in range(1, 60):  # the plots draw p - low and high - p as error bars
        for successes in range(trials + 1):
            low, high = wilson(successes, trials)
            assert low <= successes / trials <= high, (successes, trials)


def test_folds_split_problems_into_disjoint_stable_halves(dataset: Path) -> None:
    problems = load_problems("math500")
    halves = [[p.id for p in problems if in_fold(p, parse_fold(f"{k}/2"))] for k in (0, 1)]
    assert not set(halves[0]) & set(halves[1]) and len(halves[0]) + len(halves[1]) == 500
    assert 200 < len(halves[0]) < 300  # a hash, not a cut: both halves hold every level
    shuffled = list(reversed(problems))
    assert [p.id for p in shuffled if in_fold(p, parse_fold("0/2"))] == halves[0][::-1]
    for bad in ("2/2", "1", "a/b", "0/1"):
        with pytest.raises(ValueError, match="a fold is K/M"):
            parse_fold(bad)
    with pytest.raises(SystemExit):
        main(
            [
                "run",
                "--dataset",
                str(dataset),
                "--endpoint",
                "http://x/v1",
                "--model",
                "m",
                "--fold",
                "3/2",
                "--out",
                "unused",
            ]
        )


def _priced(
    problem: str, model: str, strategy: str, correct: bool, cost: float | None, latency: float
) -> Row:
    return dataclasses.replace(
        _row(problem, correct, strategy), model=model, budget=16, cost_usd=cost, latency_s=latency
    )


def test_verdicts_name_the_winner_the_paired_test_and_the_price() -> None:
    # 12 problems: the search right on 10, the big single call on 3; they disagree on 9 (8-1).
    small = [_priced(f"p{i}", "small", "auto", i < 10, 0.001, 4.0) for i in range(12)]
    big = [_priced(f"p{i}", "big", "none", i in (0, 1, 10), 0.004, 1.0) for i in range(12)]
    (verdict,) = verdicts([*small, *big])
    assert (verdict.won, verdict.lost, verdict.problems) == (8, 1, 12)
    assert verdict.p_value == pytest.approx(2 * 10 / 512)  # exact: P(<= 1 of 9) twice
    assert verdict.cost_ratio == pytest.approx(0.25) and verdict.latency_ratio == pytest.approx(4)
    text = verdict.sentence()
    assert (
        text.startswith("- **small auto@16** beats **big (single call)**") and "significant" in text
    )
    assert "search wins at equal $" in text
    # The big model better and cheaper: the single call wins; unpriced: no call at equal $.
    worse = [dataclasses.replace(r, correct=not r.correct, cost_usd=0.01) for r in small]
    (flipped,) = verdicts([*worse, *big])
    assert flipped.gap < 0 and "single call wins at equal $" in flipped.sentence()
    unpriced = [dataclasses.replace(r, cost_usd=None) for r in big]
    assert "no call at equal $" in verdicts([*small, *unpriced])[0].sentence()
    # Only problems both answered are paired.
    assert verdicts([*small[:5], *big[3:]])[0].problems == 2
    assert "## Verdicts" in verdicts_markdown([*small, *big]) and verdicts_markdown(small) == ""
