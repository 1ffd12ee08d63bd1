"""The ``Scorer`` Protocol the service runs on, and its transformers implementation.

A scorer turns (problem, steps) into ``Encoded`` ids and computes the scores of a batch of them.
``compute`` may block (it is run off the event loop); tests inject tiny deterministic scorers.
Must not import ``proxy`` or ``strategies``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

from prm_server.families import FAMILIES, Encoded, FamilyName, Tokenizer, encode, plus_minus_ids

__all__ = ["HfScorer", "Scorer", "load_hf_scorer"]


class Scorer(Protocol):
    """Encodes candidates and scores batches of them."""

    @property
    def name(self) -> str: ...

    @property
    def family(self) -> FamilyName: ...

    @property
    def max_tokens(self) -> int: ...

    def encode(self, problem: str, steps: list[str]) -> Encoded: ...

    def compute(self, batch: Sequence[Encoded]) -> list[list[float]]:
        """One score per read position of each item (blocking)."""
        ...


class HfScorer:
    """A PRM run in-process with transformers (CPU or GPU)."""

    def __init__(self, name: str, family: FamilyName, tokenizer: Tokenizer, network: object):
        from prm_server.modeling import PrmNetwork

        assert isinstance(network, PrmNetwork)
        self._name = name
        self._family = family
        self._tokenizer = tokenizer
        self._network = network

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

    def compute(self, batch: Sequence[Encoded]) -> list[list[float]]:
        return self._network.scores([e.ids for e in batch], [e.read_positions for e in batch])


def load_hf_scorer(
    path: Path, family: FamilyName, *, name: str | None, device: str, dtype: str
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
    return HfScorer(name or path.name, family, tokenizer, network)
