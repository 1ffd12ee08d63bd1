"""``ExperimentStore``: comparison records in SQLite (a file, WAL, safe for several writers) or
PostgreSQL (a URL, for a team sharing one), through SQLAlchemy's asyncio Core.

Opening a store migrates it to ``SCHEMA_VERSION``; a database written by a newer release is refused
rather than guessed at. ``StoreError`` is the one error this package raises.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError, OperationalError, ProgrammingError, SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from experiments.records import Comparison
from experiments.schema import MIGRATIONS, SCHEMA_VERSION, comparisons, schema_version, traces
from experiments.urls import StoreError, database_url

__all__ = ["ExperimentStore", "StoreError", "database_url"]


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")  # readers never block the writer
    cursor.execute("PRAGMA busy_timeout=30000")  # other writers wait instead of failing
    cursor.execute("PRAGMA synchronous=NORMAL")  # durable at each commit under WAL
    cursor.close()


class ExperimentStore:
    """Comparison records, appended by the proxy and read by ``tts-eval report``."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    @classmethod
    async def open(cls, url_or_path: str) -> ExperimentStore:
        url = database_url(url_or_path)
        if url.startswith("sqlite"):
            path = url.split(":///", 1)[1]
            if path and path != ":memory:":
                Path(path).parent.mkdir(parents=True, exist_ok=True)
        try:
            engine = create_async_engine(url, pool_pre_ping=not url.startswith("sqlite"))
        except (SQLAlchemyError, ImportError) as exc:
            raise StoreError(f"cannot open the store {url_or_path!r}: {exc}") from exc
        if url.startswith("sqlite"):
            sa.event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
        store = cls(engine)
        try:
            await store._migrate()
        except BaseException:
            await engine.dispose()
            raise
        return store

    async def _migrate(self) -> None:
        # Several processes may open a new database at once: the DDL is not atomic everywhere
        # (SQLite runs it outside the transaction), so a loser sees "already exists" or a
        # duplicate key and simply re-reads the version.
        for attempt in range(5):
            try:
                async with self._engine.begin() as conn:
                    await conn.run_sync(_migrate_sync)
                return
            except StoreError:
                raise
            except (IntegrityError, OperationalError, ProgrammingError) as exc:
                if attempt == 4 or not _is_race(exc):
                    raise StoreError(f"cannot migrate the store: {exc}") from exc
                await asyncio.sleep(0.05 * (attempt + 1))
            except (SQLAlchemyError, OSError) as exc:
                raise StoreError(f"cannot migrate the store: {exc}") from exc

    async def version(self) -> int:
        async with self._engine.connect() as conn:
            return int((await conn.execute(sa.select(schema_version.c.version))).scalar_one())

    async def add(self, record: Comparison) -> None:
        row = record.to_row()
        row["created_at"] = _utc(record.created_at)
        try:
            async with self._engine.begin() as conn:
                await conn.execute(comparisons.insert().values(**row))
        except SQLAlchemyError as exc:
            raise StoreError(f"cannot write comparison {record.request_id}: {exc}") from exc

    async def comparisons(
        self, since: datetime | None = None, until: datetime | None = None
    ) -> list[Comparison]:
        """Records in ``[since, until)``, oldest first."""
        query = sa.select(comparisons).order_by(comparisons.c.created_at, comparisons.c.id)
        if since is not None:
            query = query.where(comparisons.c.created_at >= _utc(since))
        if until is not None:
            query = query.where(comparisons.c.created_at < _utc(until))
        try:
            async with self._engine.connect() as conn:
                rows = (await conn.execute(query)).mappings().all()
        except SQLAlchemyError as exc:
            raise StoreError(f"cannot read the store: {exc}") from exc
        out = []
        for row in rows:
            values = dict(row)
            values.pop("id")
            values["created_at"] = _utc(values["created_at"])
            out.append(Comparison.from_row(values))
        return out

    async def add_trace(
        self,
        request_id: str,
        created_at: datetime,
        model: str,
        strategy: str,
        trace: dict[str, Any],
    ) -> None:
        """One search's trace (the proxy's JSON form), under its request id."""
        row = {
            "request_id": request_id,
            "created_at": _utc(created_at),
            "model": model,
            "strategy": strategy,
            "trace": trace,
        }
        try:
            async with self._engine.begin() as conn:
                await conn.execute(traces.insert().values(**row))
        except SQLAlchemyError as exc:
            raise StoreError(f"cannot write trace {request_id}: {exc}") from exc

    async def trace(self, request_id: str) -> dict[str, Any] | None:
        query = sa.select(traces.c.trace).where(traces.c.request_id == request_id)
        try:
            async with self._engine.connect() as conn:
                found = (await conn.execute(query)).scalar_one_or_none()
        except SQLAlchemyError as exc:
            raise StoreError(f"cannot read the store: {exc}") from exc
        return dict(found) if found is not None else None

    async def aclose(self) -> None:
        await self._engine.dispose()


def _migrate_sync(conn: sa.Connection) -> None:
    schema_version.create(conn, checkfirst=True)
    current = conn.execute(sa.select(schema_version.c.version)).scalar_one_or_none()
    if current is None:
        conn.execute(schema_version.insert().values(id=1, version=0))
        current = 0
    if current > SCHEMA_VERSION:
        raise StoreError(
            f"the store is at schema version {current}, newer than this release's "
            f"{SCHEMA_VERSION}; upgrade tts-proxy"
        )
    for version in range(current, SCHEMA_VERSION):
        MIGRATIONS[version](conn)
    if current != SCHEMA_VERSION:
        conn.execute(schema_version.update().values(version=SCHEMA_VERSION))


def _is_race(exc: SQLAlchemyError) -> bool:
    text = str(exc).lower()
    return isinstance(exc, IntegrityError) or "already exists" in text or "locked" in text


def _utc(moment: datetime) -> datetime:
    """Aware UTC (SQLite hands back naive datetimes; they were written as UTC)."""
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)
