"""Errors raised by the search library (mapped to HTTP errors by the proxy).

Hierarchy::

    ConfigError (ValueError)    a setting does not suit the method; names the field
    SearchError                 a search could not produce a valid result
     +-- NoCandidatesError      nothing was generated (e.g. the deadline expired first)

Must not import anything outside the standard library.
"""

from __future__ import annotations

__all__ = ["ConfigError", "NoCandidatesError", "SearchError"]


class ConfigError(ValueError):
    """A search setting is out of range or does not suit the method.

    Attributes:
        field: the ``SearchConfig`` field (or ``"scorer"``) the caller should change.
    """

    def __init__(self, message: str, field: str) -> None:
        super().__init__(message)
        self.field = field


class SearchError(Exception):
    """A search could not produce a valid result (e.g. a collaborator broke its contract)."""


class NoCandidatesError(SearchError):
    """The search ended without a single candidate."""
