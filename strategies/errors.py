"""Errors raised by the search library (mapped to HTTP errors by the proxy).

Hierarchy::

    SearchError                 a search could not produce a valid result
     +-- NoCandidatesError      nothing was generated (e.g. the deadline expired first)

Must not import anything outside the standard library.
"""

from __future__ import annotations

__all__ = ["NoCandidatesError", "SearchError"]


class SearchError(Exception):
    """A search could not produce a valid result (e.g. a collaborator broke its contract)."""


class NoCandidatesError(SearchError):
    """The search ended without a single candidate."""
