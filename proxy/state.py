"""What every handler shares, built once in the lifespan."""

from __future__ import annotations

from dataclasses import dataclass

from proxy.search.job import SearchDeps
from proxy.server.cancel import Drain
from proxy.server.limits import Admission

__all__ = ["AppState"]


@dataclass(frozen=True, slots=True, kw_only=True)
class AppState(SearchDeps):
    """A search's collaborators, plus the edge's: admission and the shutdown drain."""

    admission: Admission
    drain: Drain
