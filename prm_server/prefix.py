"""KV prefix reuse for the in-process backend.

Beam search sends K candidates that share the problem and the accepted steps, and the next depth
shares one more step. A batch is therefore run as at most two forward passes: (1) the shared
prefixes not seen before, each extended from the key/value cache of its longest cached ancestor
(usually the previous depth's prefix, so only the newly accepted step runs), and (2) every
candidate's own last step on top of its prefix's cache. Rows with different cache lengths share a
pass by left-padding the caches (masked) with explicit position ids. Exact by causality.
"""

from __future__ import annotations

import hashlib
from array import array
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from transformers import DynamicCache

from prm_server.families import Encoded

__all__ = ["PrefixRunner"]

_KV = tuple[tuple[torch.Tensor, torch.Tensor], ...]  # per layer (keys, values), batch size 1


def _key(ids: Sequence[int]) -> bytes:
    return hashlib.blake2b(array("l", ids).tobytes(), digest_size=16).digest()


@dataclass(frozen=True, slots=True)
class _Prefix:
    kv: _KV
    scores: dict[int, float]  # read position -> score, for reads inside the prefix


@dataclass(frozen=True, slots=True)
class _Job:
    past: _Prefix | None
    start: int  # tokens already in ``past``
    tail: tuple[int, ...]


class PrefixRunner:
    """Scores batches with shared-prefix reuse, keeping prefix caches in a small LRU."""

    def __init__(self, network: Any, max_entries: int) -> None:
        self.network = network
        self.max_entries = max_entries
        self._lru: OrderedDict[bytes, _Prefix] = OrderedDict()
        self.prefix_tokens_run = 0
        self.forward_passes = 0

    @torch.inference_mode()
    def compute(self, batch: Sequence[Encoded]) -> list[list[float]]:
        prefixes = {_shared_part(item): item for item in batch if _shared_part(item)}
        entries = self._prefixes(prefixes)
        jobs = []
        for item in batch:
            prefix = _shared_part(item)
            entry = entries.get(prefix)
            jobs.append(_Job(entry, len(prefix), item.ids[len(prefix) :]))
        hidden, _ = self._run(jobs)
        out = []
        for row, (item, job) in enumerate(zip(batch, jobs, strict=True)):
            inside = (
                [job.past.scores[p] for p in item.read_positions if p < job.start]
                if job.past
                else []
            )
            later = [p - job.start for p in item.read_positions if p >= job.start]
            out.append(inside + self._read(hidden[row], later))
        return out

    def _prefixes(self, wanted: dict[tuple[int, ...], Encoded]) -> dict[tuple[int, ...], _Prefix]:
        found: dict[tuple[int, ...], _Prefix] = {}
        missing: list[tuple[tuple[int, ...], Encoded, _Job]] = []
        for prefix, item in wanted.items():
            entry = self._get(prefix)
            if entry is not None:
                found[prefix] = entry
                continue
            start, base = 0, None
            for position in sorted(
                (p for p in item.read_positions if p < len(prefix)), reverse=True
            ):
                base = self._get(prefix[: position + 1])
                if base is not None:
                    start = position + 1
                    break
            missing.append((prefix, item, _Job(base, start, prefix[start:])))
        if not missing:
            return found
        hidden, rows = self._run([job for _, _, job in missing])
        for row, (prefix, item, job) in enumerate(missing):
            scores = dict(job.past.scores) if job.past else {}
            reads = [p for p in item.read_positions if job.start <= p < len(prefix)]
            scores.update(
                zip(reads, self._read(hidden[row], [p - job.start for p in reads]), strict=True)
            )
            self.prefix_tokens_run += len(job.tail)
            found[prefix] = self._put(prefix, _Prefix(rows[row], scores))
        return found

    def _run(self, jobs: Sequence[_Job]) -> tuple[torch.Tensor, list[_KV]]:
        """One forward for all jobs: left-padded pasts, right-padded tails, explicit positions."""
        device = self.network.device
        past_len = max(job.start if job.past else 0 for job in jobs)
        width = max(len(job.tail) for job in jobs)
        ids = torch.zeros((len(jobs), width), dtype=torch.long)
        mask = torch.zeros((len(jobs), past_len + width), dtype=torch.long)
        positions = torch.zeros((len(jobs), width), dtype=torch.long)
        for row, job in enumerate(jobs):
            own = job.start if job.past else 0
            ids[row, : len(job.tail)] = torch.tensor(job.tail, dtype=torch.long)
            mask[row, past_len - own : past_len + len(job.tail)] = 1
            positions[row] = torch.arange(own, own + width)
        cache = self._padded_cache(jobs, past_len) if past_len else None
        self.forward_passes += 1
        output = self.network.backbone()(
            input_ids=ids.to(device), attention_mask=mask.to(device),
            position_ids=positions.to(device), past_key_values=cache, use_cache=True,
        )  # fmt: skip
        layers = output.past_key_values.layers
        rows: list[_KV] = []
        for row, job in enumerate(jobs):
            own = job.start if job.past else 0
            span = slice(past_len - own, past_len + len(job.tail))
            one = slice(row, row + 1)
            rows.append(
                tuple((layer.keys[one, :, span], layer.values[one, :, span]) for layer in layers)
            )
        return output.last_hidden_state, rows

    def _padded_cache(self, jobs: Sequence[_Job], past_len: int) -> DynamicCache:
        template = next(job.past.kv for job in jobs if job.past)
        per_layer = []
        for layer, (keys0, values0) in enumerate(template):
            keys, values = [], []
            for job in jobs:
                k, v = job.past.kv[layer] if job.past else (keys0[:, :, :0], values0[:, :, :0])
                pad = past_len - k.shape[2]
                keys.append(torch.nn.functional.pad(k, (0, 0, pad, 0)))
                values.append(torch.nn.functional.pad(v, (0, 0, pad, 0)))
            per_layer.append((torch.cat(keys), torch.cat(values)))
        return DynamicCache(per_layer)

    def _read(self, hidden: torch.Tensor, positions: list[int]) -> list[float]:
        if not positions:
            return []
        index = torch.tensor(positions, dtype=torch.long, device=hidden.device)
        values: list[float] = self.network.transform(hidden[index]).float().cpu().tolist()
        return values

    def _get(self, prefix: Sequence[int]) -> _Prefix | None:
        key = _key(prefix)
        entry = self._lru.get(key)
        if entry is not None:
            self._lru.move_to_end(key)
        return entry

    def _put(self, prefix: Sequence[int], entry: _Prefix) -> _Prefix:
        self._lru[_key(prefix)] = entry
        if len(self._lru) > self.max_entries:
            self._lru.popitem(last=False)
        return entry


def _shared_part(item: Encoded) -> tuple[int, ...]:
    """The ids before the candidate's last step (empty for a one-step candidate)."""
    if len(item.read_positions) < 2:
        return ()
    return item.ids[: item.read_positions[-2] + 1]
