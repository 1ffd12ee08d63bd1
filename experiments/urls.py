"""Store URLs: what users write (``sqlite:///file``, a bare path, ``postgresql://…``) to the
async SQLAlchemy URL (aiosqlite, asyncpg). No SQLAlchemy import, so settings can validate early."""

from __future__ import annotations

from pathlib import Path

__all__ = ["StoreError", "database_url"]


class StoreError(Exception):
    """The store cannot be opened, migrated, read or written."""


_DRIVERS = {
    "sqlite": "sqlite+aiosqlite",
    "postgresql": "postgresql+asyncpg",
    "postgres": "postgresql+asyncpg",
}


def database_url(url_or_path: str) -> str:
    """An async SQLAlchemy URL: ``sqlite:///f.db`` and bare paths -> aiosqlite, ``postgresql://``
    -> asyncpg; URLs that already name an async driver pass unchanged."""
    if "://" not in url_or_path:
        return f"sqlite+aiosqlite:///{Path(url_or_path).expanduser().resolve()}"
    scheme, rest = url_or_path.split("://", 1)
    if "+" in scheme:
        return url_or_path
    if scheme not in _DRIVERS:
        raise StoreError(
            f"unsupported store URL scheme {scheme!r} (use sqlite:// or postgresql://)"
        )
    return f"{_DRIVERS[scheme]}://{rest}"
