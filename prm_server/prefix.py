"""Step-tree key/value reuse for the in-process backend.

A candidate's ids split into segments: the prompt (everything before the first step, when the
family knows where that is) and one segment per step, ending at the step's read position. By
causality a segment's keys/values depend only on the ids up to its end, so each segment is kept as
a node of a tree (its parent is the segment before it) under a hash of those ids. Beam search
re-sends its accepted steps at every depth; they are nodes already, so only the new last steps run.

A batch runs in one forward pass (two when fresh segments branch: a new prompt with K first steps
under it runs the prompt first; more if it exceeds ``pass_tokens``). Fresh segments hang off
cached nodes; a row holds one cached node's past and one or more fresh chains packed side by side
under a tree attention mask (a token sees the past and its own chain only), so K candidates
extending one prefix share one copy of it.
Rows with pasts of different lengths share a pass through left padding and explicit positions;
a pass holds at most ``pass_tokens`` padded tokens (past included), more rows take more passes.
Exact by causality. Memory is bounded by a token budget; the least recently used nodes go first,
leaves before their ancestors. Must not import ``proxy`` or ``strategies``.
"""

from __future__ import annotations

import hashlib
from array import array
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from transformers import DynamicCache

from prm_server.families import Encoded

__all__ = ["PrefixRunner"]

ROW_TOKENS = 256  # fresh tokens packed into one row over a shared past
_WIDTH = array("l").itemsize

_KV = list[tuple[torch.Tensor, torch.Tensor]]  # per layer (keys, values), (1, heads, length, dim)


@dataclass(eq=False, slots=True)
class _Node:
    """A cached segment: its own keys/values and, if it ends at a read position, its score."""

    key: bytes
    parent: _Node | None
    start: int
    end: int
    kv: _KV
    score: float | None


@dataclass(eq=False, slots=True)
class _Fresh:
    """A segment not computed yet; ``node`` is set once it is."""

    key: bytes
    parent: _Node | _Fresh | None
    start: int
    ids: tuple[int, ...]
    reads: bool
    children: int = 0
    node: _Node | None = None

    @property
    def end(self) -> int:
        return self.start + len(self.ids)


@dataclass(slots=True)
class _Row:
    root: _Node | None
    members: list[_Fresh] = field(default_factory=list)
    tokens: int = 0


def _segments(item: Encoded) -> tuple[list[int], list[bytes], set[int]]:
    """Segment ends (prompt, then each step's read position + 1), their ids' hashes, and the
    read positions."""
    ends = [item.prompt_len] if 0 < item.prompt_len <= item.read_positions[0] else []
    ends += [p + 1 for p in item.read_positions]
    data = array("l", item.ids).tobytes()
    hasher = hashlib.blake2b(digest_size=16)
    keys, done = [], 0
    for end in ends:
        hasher.update(data[done * _WIDTH : end * _WIDTH])
        keys.append(hasher.copy().digest())
        done = end
    return ends, keys, set(item.read_positions)


def _resolved(parent: _Node | _Fresh | None) -> _Node | None:
    return parent.node if isinstance(parent, _Fresh) else parent


class PrefixRunner:
    """Scores batches of ``Encoded`` items, reusing cached segments (``max_tokens`` budget)."""

    def __init__(self, network: Any, max_tokens: int, pass_tokens: int = 16384) -> None:
        self.network = network
        self.max_tokens = max_tokens
        self.pass_tokens = pass_tokens  # padded tokens (past + fresh) per forward pass
        self._index: OrderedDict[bytes, _Node] = OrderedDict()
        self.held_tokens = 0  # tokens of the indexed nodes
        self.tokens_run = 0
        self.forward_passes = 0

    @torch.inference_mode()
    def compute(self, batch: Sequence[Encoded]) -> list[list[float]]:
        pending: dict[bytes, _Fresh] = {}
        chains = [self._chain(item, pending) for item in batch]
        fresh = list(pending.values())
        branching = {id(f) for f in fresh if f.children > 1}
        for segment in reversed(fresh):  # branching segments and their fresh ancestors first
            if id(segment) in branching and isinstance(segment.parent, _Fresh):
                branching.add(id(segment.parent))
        first = [f for f in fresh if id(f) in branching]
        rest = [f for f in fresh if id(f) not in branching]
        for group in (first, rest):
            if group:
                self._forward(group)
        out = []
        for item, chain in zip(batch, chains, strict=True):
            nodes = [c.node if isinstance(c, _Fresh) else c for c in chain]
            self._touch([n for n in nodes if n is not None])
            scores = {n.end - 1: n.score for n in nodes if n is not None and n.score is not None}
            out.append([scores[p] for p in item.read_positions])
        self._evict()
        return out

    def uncached_tokens(self, item: Encoded) -> int:
        """Tokens the model would run for ``item`` now (its segments not kept)."""
        ends, keys, reads = _segments(item)
        cached = self._deepest(ends, keys, reads)
        return ends[-1] - (cached.end if cached else 0)

    def _deepest(self, ends: list[int], keys: list[bytes], reads: set[int]) -> _Node | None:
        for depth in range(len(ends) - 1, -1, -1):
            cached = self._index.get(keys[depth])
            if cached is not None and self._matches(cached, ends[: depth + 1], reads):
                return cached
        return None

    def _chain(self, item: Encoded, pending: dict[bytes, _Fresh]) -> list[_Node | _Fresh]:
        """The item's segments, cached or fresh (fresh ones shared through ``pending``)."""
        ends, keys, reads = _segments(item)
        cached = self._deepest(ends, keys, reads)
        chain = self._ancestry(cached) if cached else []
        for depth in range(len(chain), len(ends)):
            parent = chain[-1] if chain else None
            fresh = pending.get(keys[depth])
            if fresh is None:
                start = ends[depth - 1] if depth else 0
                fresh = _Fresh(
                    keys[depth],
                    parent,
                    start,
                    item.ids[start : ends[depth]],
                    ends[depth] - 1 in reads,
                )
                pending[keys[depth]] = fresh
                if isinstance(parent, _Fresh):
                    parent.children += 1
            chain.append(fresh)
        return chain

    @staticmethod
    def _ancestry(node: _Node) -> list[_Node | _Fresh]:
        chain: list[_Node | _Fresh] = []
        current: _Node | None = node
        while current is not None:
            chain.append(current)
            current = current.parent
        chain.reverse()
        return chain

    def _matches(self, node: _Node, ends: list[int], reads: set[int]) -> bool:
        """The cached chain splits the ids where this item does (a hash hit on other bounds is
        possible only for inputs no family produces; then the item runs fresh)."""
        chain = self._ancestry(node)
        return len(chain) == len(ends) and all(
            isinstance(n, _Node) and n.end == e and (n.score is not None) == (e - 1 in reads)
            for n, e in zip(chain, ends, strict=True)
        )

    def _rows(self, group: list[_Fresh]) -> list[_Row]:
        """Fresh chains grouped under their cached root; chains sharing a root share rows."""
        members = {id(f) for f in group}
        top: dict[int, _Fresh] = {}
        trees: dict[int, list[_Fresh]] = {}
        for item in group:  # parents come before children
            parent = item.parent
            head = top[id(parent)] if isinstance(parent, _Fresh) and id(parent) in members else item
            top[id(item)] = head
            trees.setdefault(id(head), []).append(item)
        rows: list[_Row] = []
        open_rows: dict[int, _Row] = {}
        for tree in trees.values():
            root = _resolved(tree[0].parent)
            size = sum(len(f.ids) for f in tree)
            row = open_rows.get(id(root)) if root is not None else None
            if row is None or row.tokens + size > ROW_TOKENS:
                row = _Row(root)
                rows.append(row)
                if root is not None:
                    open_rows[id(root)] = row
            row.members.extend(tree)
            row.tokens += size
        return rows

    def _forward(self, group: list[_Fresh]) -> None:
        """Run the group's rows, as few passes as fit ``pass_tokens`` padded tokens each."""
        rows = sorted(self._rows(group), key=lambda row: row.root.end if row.root else 0)
        chunk: list[_Row] = []
        for row in rows:
            past = row.root.end if row.root else 0  # the largest so far: rows are sorted
            width = max([row.tokens, *(r.tokens for r in chunk)])
            if chunk and (len(chunk) + 1) * (past + width) > self.pass_tokens:
                self._run(chunk)
                chunk = []
            chunk.append(row)
        self._run(chunk)

    def _run(self, rows: list[_Row]) -> None:
        device = self.network.device
        past_len = max(row.root.end if row.root else 0 for row in rows)
        width = max(row.tokens for row in rows)
        ids = torch.zeros((len(rows), width), dtype=torch.long)
        positions = torch.zeros((len(rows), width), dtype=torch.long)
        mask = torch.zeros((len(rows), 1, width, past_len + width), dtype=torch.bool)
        spans: list[list[tuple[_Fresh, int, int]]] = []
        for r, row in enumerate(rows):
            own = row.root.end if row.root else 0
            mask[r, 0, :, past_len - own : past_len] = True
            owner = torch.zeros(width, dtype=torch.long)
            column, placed, row_spans = 0, {}, []
            for slot, item in enumerate(row.members):
                stop = column + len(item.ids)
                ids[r, column:stop] = torch.tensor(item.ids, dtype=torch.long)
                positions[r, column:stop] = torch.arange(item.start, item.end)
                owner[column:stop] = slot
                placed[id(item)] = slot
                row_spans.append((item, column, stop))
                column = stop
            ancestors = torch.eye(len(row.members), dtype=torch.bool)
            for slot, item in enumerate(row.members):
                parent = item.parent
                if isinstance(parent, _Fresh) and id(parent) in placed:
                    ancestors[slot] |= ancestors[placed[id(parent)]]
            used = owner[:column]
            block = ancestors[used][:, used] & torch.ones(column, column, dtype=torch.bool).tril()
            mask[r, 0, :column, past_len : past_len + column] = block
            pads = torch.arange(column, width)
            mask[r, 0, pads, past_len + pads] = True  # padding rows see themselves (no NaN)
            spans.append(row_spans)
        cache = self._past(rows, past_len)
        self.forward_passes += 1
        self.tokens_run += sum(row.tokens for row in rows)
        output = self.network.backbone()(
            input_ids=ids.to(device),
            attention_mask=mask.to(device),
            position_ids=positions.to(device),
            cache=cache,
            use_cache=True,
        )
        self._keep(output, spans, past_len)

    def _past(self, rows: list[_Row], past_len: int) -> DynamicCache:
        if not past_len:
            return DynamicCache()
        joined: dict[int, _KV] = {}
        for row in rows:
            if row.root is not None and id(row.root) not in joined:
                chain = [n for n in self._ancestry(row.root) if isinstance(n, _Node)]
                joined[id(row.root)] = [
                    (
                        torch.cat([n.kv[layer][0] for n in chain], dim=2),
                        torch.cat([n.kv[layer][1] for n in chain], dim=2),
                    )
                    for layer in range(len(chain[0].kv))
                ]
        template = next(iter(joined.values()))
        per_layer = []
        for layer, (keys0, _) in enumerate(template):
            shape = (len(rows), keys0.shape[1], past_len, keys0.shape[3])
            keys = keys0.new_zeros(shape)
            values = keys0.new_zeros(shape)
            for r, row in enumerate(rows):
                if row.root is not None:
                    k, v = joined[id(row.root)][layer]
                    keys[r, :, past_len - k.shape[2] :] = k[0]
                    values[r, :, past_len - v.shape[2] :] = v[0]
            per_layer.append((keys, values))
        return DynamicCache(per_layer)

    def _keep(self, output: Any, spans: list[list[tuple[_Fresh, int, int]]], past_len: int) -> None:
        """Turn every fresh segment into a node: its keys/values and its score."""
        layers = output.cache.layers
        hidden = output.last_hidden_state
        reading = [(r, stop - 1) for r, row in enumerate(spans) for f, _, stop in row if f.reads]
        values: list[float] = []
        if reading:
            rows_at = torch.tensor([r for r, _ in reading], device=hidden.device)
            cols_at = torch.tensor([c for _, c in reading], device=hidden.device)
            values = self.network.transform(hidden[rows_at, cols_at]).float().cpu().tolist()
        scores = iter(values)
        for r, row in enumerate(spans):
            for item, begin, stop in row:
                cols = slice(past_len + begin, past_len + stop)
                kv = [
                    (
                        layer.keys[r : r + 1, :, cols].clone(),
                        layer.values[r : r + 1, :, cols].clone(),
                    )
                    for layer in layers
                ]
                parent = _resolved(item.parent)
                score = next(scores) if item.reads else None
                item.node = _Node(item.key, parent, item.start, item.end, kv, score)
                replaced = self._index.pop(item.key, None)
                if replaced is not None:
                    self.held_tokens -= replaced.end - replaced.start
                self._index[item.key] = item.node
                self.held_tokens += len(item.ids)

    def _touch(self, chain: list[_Node]) -> None:
        """Most recent last; ancestors after their descendants, so leaves are evicted first."""
        for node in reversed(chain):
            if node.key in self._index:
                self._index.move_to_end(node.key)

    def _evict(self) -> None:
        """Drop least recently used nodes over the budget (an evicted ancestor of a kept node
        stays reachable through it; touching order makes that rare)."""
        while self.held_tokens > self.max_tokens and self._index:
            _, node = self._index.popitem(last=False)
            self.held_tokens -= node.end - node.start
