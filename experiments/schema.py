"""The store's tables (SQLAlchemy Core) and its migrations. ``SCHEMA_VERSION`` is the newest
version; ``MIGRATIONS[k]`` takes a database from version ``k`` to ``k + 1``. Migrations are only
ever appended: a released one never changes, so every database reaches the same shape.
"""

from __future__ import annotations

from collections.abc import Callable

import sqlalchemy as sa

__all__ = [
    "MIGRATIONS",
    "SCHEMA_VERSION",
    "comparisons",
    "metadata",
    "schema_version",
    "traces",
]

metadata = sa.MetaData()

schema_version = sa.Table(
    "tts_schema_version",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),  # always 1: one row
    sa.Column("version", sa.Integer, nullable=False),
)


def _side(prefix: str) -> list[sa.Column[object]]:
    return [
        sa.Column(f"{prefix}_model", sa.String(200), nullable=False),
        sa.Column(f"{prefix}_status", sa.String(16), nullable=False),
        sa.Column(f"{prefix}_answer", sa.Text),
        sa.Column(f"{prefix}_text", sa.Text),
        sa.Column(f"{prefix}_prompt_tokens", sa.Integer, nullable=False),
        sa.Column(f"{prefix}_completion_tokens", sa.Integer, nullable=False),
        sa.Column(f"{prefix}_hidden_tokens", sa.Integer, nullable=False),
        sa.Column(f"{prefix}_cost_usd", sa.Float),
        sa.Column(f"{prefix}_latency_s", sa.Float),
        sa.Column(f"{prefix}_error", sa.Text),
    ]


comparisons = sa.Table(
    "tts_comparisons",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("request_id", sa.String(100), nullable=False, unique=True),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, index=True),
    sa.Column("strategy", sa.String(32), nullable=False),
    sa.Column("budget", sa.Integer),
    sa.Column("agree", sa.Boolean),
    sa.Column("match", sa.String(8)),
    sa.Column("reference", sa.Text),
    sa.Column("prompt", sa.Text),
    sa.Column("tts", sa.JSON, nullable=False),
    *_side("primary"),
    *_side("baseline"),
)


# Search traces (the proxy's /v1/tts/traces JSON), kept past the proxy's in-memory store.
traces = sa.Table(
    "tts_traces",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("request_id", sa.String(100), nullable=False, unique=True),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, index=True),
    sa.Column("model", sa.String(200), nullable=False),
    sa.Column("strategy", sa.String(32), nullable=False),
    sa.Column("trace", sa.JSON, nullable=False),
)


def _v1(conn: sa.Connection) -> None:
    comparisons.create(conn, checkfirst=True)


def _v2(conn: sa.Connection) -> None:
    traces.create(conn, checkfirst=True)


MIGRATIONS: list[Callable[[sa.Connection], None]] = [_v1, _v2]
SCHEMA_VERSION = len(MIGRATIONS)
