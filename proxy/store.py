"""The experiment store (``PROXY_STORE_URL``), opened on first use and shared by shadow
comparisons and persisted traces; the ``store`` extra is imported only then."""

from __future__ import annotations

import asyncio
import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from experiments.store import ExperimentStore

__all__ = ["StoreLink"]


class StoreLink:
    """One ``ExperimentStore`` per app, opened once however many tasks ask at the same time."""

    def __init__(self, url: str) -> None:
        self._url = url
        self._store: ExperimentStore | None = None
        self._lock = asyncio.Lock()

    async def get(self) -> ExperimentStore:
        async with self._lock:
            if self._store is None:
                store = importlib.import_module("experiments.store")  # the store extra
                self._store = await store.ExperimentStore.open(self._url)
            return self._store

    async def aclose(self) -> None:
        if self._store is not None:
            await self._store.aclose()
            self._store = None
