"""The experiment store on real databases: a SQLite file (WAL, several writers, restarts) and a
real PostgreSQL server started for the test run."""

from __future__ import annotations

import asyncio
import dataclasses
import sqlite3
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from experiments import Comparison, Side, answers_agree
from experiments.pricing import api_cost
from experiments.schema import SCHEMA_VERSION
from experiments.store import ExperimentStore, StoreError, database_url
from harness.postgres import postgres_server

T0 = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)


def record(i: int, *, agree: bool | None = True, when: datetime | None = None) -> Comparison:
    return Comparison(
        request_id=f"chatcmpl-{i}",
        created_at=when or T0 + timedelta(seconds=i),
        strategy="best_of_n",
        budget=8,
        primary=Side(
            model="qwen",
            answer="4",
            prompt_tokens=10,
            completion_tokens=80,
            hidden_tokens=70,
            cost_usd=0.0001,
            latency_s=1.5,
        ),
        baseline=Side(
            model="openai/gpt-4o",
            answer="4",
            prompt_tokens=10,
            completion_tokens=20,
            cost_usd=0.002,
            latency_s=0.8,
        ),
        agree=agree,
        match="math",
        reference="4",
        tts={"strategy": "best_of_n", "auto": None},
    )


async def test_records_round_trip_and_survive_a_restart(tmp_path: Path) -> None:
    path = tmp_path / "exp.sqlite"
    store = await ExperimentStore.open(str(path))
    written = [record(i) for i in range(5)]
    failed = dataclasses.replace(
        record(5, agree=None),
        baseline=Side(model="openai/gpt-4o", status="timeout", error="no answer in 1 s"),
    )
    for r in [*written, failed]:
        await store.add(r)
    await store.aclose()

    reopened = await ExperimentStore.open(f"sqlite:///{path}")
    got = await reopened.comparisons()
    assert got == [*written, failed]
    assert await reopened.version() == SCHEMA_VERSION
    window = await reopened.comparisons(
        since=T0 + timedelta(seconds=2), until=T0 + timedelta(seconds=4)
    )
    assert [r.request_id for r in window] == ["chatcmpl-2", "chatcmpl-3"]
    await reopened.aclose()
    mode = sqlite3.connect(path).execute("PRAGMA journal_mode").fetchone()[0]
    assert mode == "wal"


async def test_concurrent_writers_lose_nothing(tmp_path: Path) -> None:
    path = str(tmp_path / "exp.sqlite")
    stores = await asyncio.gather(*(ExperimentStore.open(path) for _ in range(3)))

    async def write(store: ExperimentStore, offset: int) -> None:
        await asyncio.gather(*(store.add(record(offset + i)) for i in range(40)))

    await asyncio.gather(*(write(s, k * 1000) for k, s in enumerate(stores)))
    for store in stores:
        await store.aclose()
    check = await ExperimentStore.open(path)
    ids = {r.request_id for r in await check.comparisons()}
    await check.aclose()
    assert len(ids) == 120


async def test_a_newer_schema_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "exp.sqlite"
    await (await ExperimentStore.open(str(path))).aclose()
    with sqlite3.connect(path) as db:
        db.execute("UPDATE tts_schema_version SET version = ?", (SCHEMA_VERSION + 1,))
    with pytest.raises(StoreError, match="newer than this release"):
        await ExperimentStore.open(str(path))


async def test_a_duplicate_request_id_is_a_store_error(tmp_path: Path) -> None:
    store = await ExperimentStore.open(str(tmp_path / "exp.sqlite"))
    await store.add(record(1))
    with pytest.raises(StoreError, match="chatcmpl-1"):
        await store.add(record(1))
    await store.aclose()


def test_database_urls() -> None:
    assert database_url("postgresql://u@h/db") == "postgresql+asyncpg://u@h/db"
    assert database_url("sqlite:///x.db") == "sqlite+aiosqlite:///x.db"
    assert database_url("x.db").startswith("sqlite+aiosqlite:////")
    with pytest.raises(StoreError, match="mysql"):
        database_url("mysql://h/db")


@pytest.mark.parametrize(
    ("left", "right", "expected"),
    [
        ("so \\boxed{0.5}", "the answer: \\boxed{\\frac{1}{2}}", (True, "math")),
        ("\\boxed{3}", "\\boxed{4}", (False, "math")),
        ("Paris.", "  paris ", (True, "text")),
        ("Paris", "Lyon", (False, "text")),
        ("", "\\boxed{4}", (None, None)),
    ],
)
def test_answers_agree(left: str, right: str, expected: tuple[bool | None, str | None]) -> None:
    assert answers_agree(left, right) == expected


@pytest.fixture(scope="module")
def postgres_url() -> Iterator[str]:
    with postgres_server() as url:
        yield url


async def test_postgresql_store(postgres_url: str) -> None:
    stores = await asyncio.gather(*(ExperimentStore.open(postgres_url) for _ in range(2)))
    await asyncio.gather(*(stores[i % 2].add(record(i)) for i in range(30)))
    for store in stores:
        await store.aclose()
    reopened = await ExperimentStore.open(postgres_url)
    got = await reopened.comparisons()
    assert got == [record(i) for i in range(30)]
    assert got[0].created_at.tzinfo is not None
    assert await reopened.version() == SCHEMA_VERSION
    await reopened.aclose()


async def test_traces_round_trip_and_a_v1_store_is_migrated(tmp_path: Path) -> None:
    path = tmp_path / "exp.sqlite"
    await (await ExperimentStore.open(str(path))).aclose()
    with sqlite3.connect(path) as db:  # as release 1 left it: no traces table
        db.execute("DROP TABLE tts_traces")
        db.execute("UPDATE tts_schema_version SET version = 1")
    store = await ExperimentStore.open(str(path))
    assert await store.version() == SCHEMA_VERSION == 2
    await store.add(record(1))
    trace = {"request_id": "chatcmpl-1", "nodes": [{"node_id": 0, "text": None}], "answer": "4"}
    await store.add_trace("chatcmpl-1", T0, "qwen", "beam_search", trace)
    assert await store.trace("chatcmpl-1") == trace
    assert await store.trace("chatcmpl-2") is None
    with pytest.raises(StoreError, match="chatcmpl-1"):
        await store.add_trace("chatcmpl-1", T0, "qwen", "beam_search", trace)
    assert [r.request_id for r in await store.comparisons()] == ["chatcmpl-1"]
    await store.aclose()


async def test_postgresql_traces(postgres_url: str) -> None:
    store = await ExperimentStore.open(postgres_url)
    trace = {"request_id": "chatcmpl-pg", "calls": [{"kind": "policy", "started_ms": 0.5}]}
    await store.add_trace("chatcmpl-pg", T0, "qwen", "dvts", trace)
    assert await store.trace("chatcmpl-pg") == trace
    await store.aclose()


def test_price_lookups_are_quiet(capfd: pytest.CaptureFixture[str]) -> None:
    """A large API's list price: known models priced, unknown ones None, and nothing printed
    (litellm's "Provider List" banner would otherwise bury tts-eval's progress bar)."""
    known = api_cost("gpt-4o", 1000, 1000)
    assert known is not None and known > 0
    assert api_cost("a-model-no-price-map-knows", 1000, 1000) is None
    printed = capfd.readouterr()
    assert "Provider List" not in printed.out + printed.err
    assert printed.out == ""
