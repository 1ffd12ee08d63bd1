"""JSON the proxy relays or builds without a model of its own: one name for each shape, so that
an ``Any`` in the proxy's code means JSON and nothing else."""

from __future__ import annotations

from typing import Any, TypeAlias

__all__ = ["JSONObject", "JSONValue"]

# A JSON value relayed as it came (pydantic does not walk it: a long conversation costs nothing).
JSONValue: TypeAlias = Any
# A JSON object: a request or response body, or a part of one.
JSONObject: TypeAlias = dict[str, Any]
