"""The ``Scorer`` Protocol the service runs on, and its transformers implementation.

A scorer turns (problem, steps) into ``Encoded`` ids and computes the scores of a batch of them.
``compute`` may block (it is run off the event loop); tests inject tiny deterministic scorers.
Must not import ``proxy`` or ``strategies``.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

from prm_server.families import FAMILIES, Encoded, FamilyName, Tokenizer, encode, plus_minus_ids

__all__ = ["BackendError", "HfScorer", "Scorer", "load_hf_scorer"]


class BackendError(Exception):
    """The model backend behind the server failed (a vLLM pooling server that errs or is gone):
    the client's 502, not a bug of ours."""


class Scorer(Protocol):
    """Encodes candidates and scores batches of them."""

    @property
    def name(self) -> str: ...

    @property
    def family(self) -> FamilyName: ...

    @property
    def max_tokens(self) -> int: ...

    def encode(self, problem: str, steps: list[str]) -> Encoded: ...

    def cost(self, item: Encoded) -> int:
        """Tokens the model would run for ``item`` (what a batch's token budget counts)."""
        ...

    def compute(self, batch: Sequence[Encoded]) -> list[list[float]]:
        """One score per read position of each item (blocking)."""
        ...


class CachedTokenizer:
    """Memoises encodings and chat renderings: beam search re-sends every accepted step (and the
    same problem) at each depth, so each text is encoded once. Bounded; one per scorer."""

    def __init__(self, tokenizer: Any, max_entries: int = 65536) -> None:
        self._tok = tokenizer
        self.bos_token: str | None = tokenizer.bos_token
        self._max = max_entries
        self._encoded: dict[tuple[str, bool], dict[str, list[int]]] = {}
        self._rendered: dict[str, Any] = {}

    def __call__(self, text: str, add_special_tokens: bool = True) -> dict[str, list[int]]:
        key = (text, add_special_tokens)
        found = self._encoded.get(key)
        if found is None:
            ids = list(self._tok(text, add_special_tokens=add_special_tokens)["input_ids"])
            found = {"input_ids": ids}
            self._remember(self._encoded, key, found)
        return {"input_ids": list(found["input_ids"])}

    def convert_tokens_to_ids(self, token: str) -> Any:
        return self._tok.convert_tokens_to_ids(token)

    def apply_chat_template(self, conversation: Any, **kwargs: Any) -> Any:
        key = json.dumps([conversation, kwargs], sort_keys=True)
        if key not in self._rendered:
            self._remember(
                self._rendered, key, self._tok.apply_chat_template(conversation, **kwargs)
            )
        return self._rendered[key]

    def decode(self, ids: list[int]) -> str:
        text: str = self._tok.decode(ids)
        return text

    def _remember(self, table: dict[Any, Any], key: Any, value: Any) -> None:
        if len(table) >= self._max:
            table.pop(next(iter(table)))
        table[key] = value


class HfScorer:
    """A PRM run in-process with transformers (CPU or GPU)."""

    def __init__(
        self,
        name: str,
        family: FamilyName,
        tokenizer: Tokenizer,
        network: object,
        kv_cache_tokens: int = 0,
        pass_tokens: int = 16384,
    ) -> None:
        from prm_server.modeling import PrmNetwork
        from prm_server.prefix import PrefixRunner

        assert isinstance(network, PrmNetwork)
        self._name = name
        self._family = family
        self._tokenizer = CachedTokenizer(tokenizer)
        self._network = network
        self.prefix_runner = (
            PrefixRunner(network, kv_cache_tokens, pass_tokens) if kv_cache_tokens else None
        )

    @property
    def name(self) -> str:
        return self._name

    @property
    def family(self) -> FamilyName:
        return self._family

    @property
    def max_tokens(self) -> int:
        return self._network.max_tokens

    def encode(self, problem: str, steps: list[str]) -> Encoded:
        return encode(FAMILIES[self._family], self._tokenizer, problem, steps)

    def cost(self, item: Encoded) -> int:
        if self.prefix_runner is not None:
            return self.prefix_runner.uncached_tokens(item)
        return len(item.ids)

    def compute(self, batch: Sequence[Encoded]) -> list[list[float]]:
        if self.prefix_runner is not None:
            return self.prefix_runner.compute(batch)
        return self._network.scores([e.ids for e in batch], [e.read_positions for e in batch])


def load_hf_scorer(
    path: Path,
    family: FamilyName,
    *,
    name: str | None,
    device: str,
    dtype: str,
    kv_cache_tokens: int = 65536,
    pass_tokens: int = 16384,
) -> HfScorer:
    """Load tokenizer and weights from a local folder (imports torch lazily)."""
    import torch
    from transformers import AutoTokenizer

    from prm_server.modeling import load_network

    tokenizer = AutoTokenizer.from_pretrained(path)
    spec = FAMILIES[family]
    labels = plus_minus_ids(tokenizer) if spec.head == "plus_minus" else None
    torch_dtype = getattr(torch, dtype)
    network = load_network(path, spec, device, torch_dtype, labels)
    return HfScorer(name or path.name, family, tokenizer, network, kv_cache_tokens, pass_tokens)
