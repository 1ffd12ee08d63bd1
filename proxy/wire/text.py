"""Valid Unicode text: JSON can carry a lone UTF-16 surrogate (``"\\ud800"``), UTF-8 cannot, so
no upstream request holding one can be encoded, whichever field it is in. The one check every
request model and the request skeleton share. An upstream's answer holding one is repaired
instead (``upstream_json``): each lone surrogate becomes U+FFFD, as a lenient UTF-8 decoder
does with bytes it cannot read, so the answer can still be sent."""

from __future__ import annotations

import json
import re

from proxy.wire.json_types import JSONValue

__all__ = ["INVALID_TEXT", "invalid_text_at", "upstream_json", "valid_text"]

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


# A JSON escape of a UTF-16 surrogate (paired or lone): the only way JSON text can hold one.
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")
_SURROGATE_ESCAPE_BYTES = re.compile(rb"\\u[dD][89a-fA-F]")


def upstream_json(raw: str | bytes) -> JSONValue:
    """An upstream's JSON text decoded, every lone surrogate in its text (keys included)
    replaced by U+FFFD; only text that escapes a surrogate is walked. A ``ValueError`` if it is
    not JSON."""
    data: JSONValue = json.loads(raw)
    if isinstance(raw, bytes):
        escaped = _SURROGATE_ESCAPE_BYTES.search(raw) is not None
    else:
        escaped = _SURROGATE_ESCAPE.search(raw) is not None
    return _repaired(data) if escaped else data


def _repaired(value: JSONValue) -> JSONValue:
    if isinstance(value, str):
        return _repaired_text(value)
    if isinstance(value, dict):
        return {_repaired_text(k): _repaired(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_repaired(item) for item in value]
    return value


def _repaired_text(text: str) -> str:
    if _encodes(text):
        return text
    return "".join("\ufffd" if "\ud800" <= ch <= "\udfff" else ch for ch in text)
