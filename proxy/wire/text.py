"""Valid Unicode text: JSON can carry a lone UTF-16 surrogate (``"\\ud800"``), UTF-8 cannot, so
no upstream request holding one can be encoded, whichever field it is in. The one check every
request model and the request skeleton share."""

from __future__ import annotations

from proxy.wire.json_types import JSONValue

__all__ = ["INVALID_TEXT", "invalid_text_at", "valid_text"]

INVALID_TEXT = "holds a lone UTF-16 surrogate: not valid Unicode text"


def invalid_text_at(value: JSONValue, path: str = "") -> str | None:
    """The dotted path (``stop.0``, ``metadata.key``) of the first string in ``value`` — keys
    included — that is not valid Unicode, or None."""
    if isinstance(value, str):
        return None if _encodes(value) else path or "body"
    if isinstance(value, dict):
        for key, item in value.items():
            if not _encodes(str(key)):
                return path or "body"
            found = invalid_text_at(item, f"{path}.{key}" if path else str(key))
            if found is not None:
                return found
    elif isinstance(value, list | tuple):
        for i, item in enumerate(value):
            found = invalid_text_at(item, f"{path}.{i}" if path else str(i))
            if found is not None:
                return found
    return None


def valid_text(value: JSONValue) -> JSONValue:
    """``value`` if all its text is valid Unicode; a ``ValueError`` (a validator's) if not."""
    if invalid_text_at(value) is not None:
        raise ValueError(INVALID_TEXT)
    return value


def _encodes(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True
