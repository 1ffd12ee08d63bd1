"""Backend ``vllm_pooling``: delegate ``qwen_prm`` scoring to a vLLM pooling server.

Start vLLM with ``vllm serve <Qwen2.5-Math-PRM> --runner pooling --max-model-len 4096`` (its native
``Qwen2ForProcessRewardModel`` uses STEP pooling on ``<extra_0>``). We still build the token ids
(sent as ids, so tokenization is exactly ours) and keep batching and the step-score cache; vLLM
returns ``[p_negative, p_positive]`` per step tag. ``compute`` runs in the batcher's worker thread.
The model is asked for by the name vLLM serves it under (its ``/v1/models``, read on the first
call), whatever ``--served-model-name`` it was given; a failing vLLM is a ``BackendError``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import httpx

from prm_server.families import FAMILIES, Encoded, FamilyName, Tokenizer, encode
from prm_server.scorer import BackendError
from prm_server.settings import PrmServerSettings

__all__ = ["PoolingScorer"]


class PoolingScorer:
    def __init__(
        self, name: str, tokenizer: Tokenizer, url: str, max_tokens: int, timeout_s: float = 120.0
    ) -> None:
        self._name = name
        self._tokenizer = tokenizer
        self._client = httpx.Client(base_url=url.rstrip("/"), timeout=timeout_s)
        self._max_tokens = max_tokens
        self._vllm_model: str | None = None

    @classmethod
    def from_settings(cls, settings: PrmServerSettings) -> PoolingScorer:
        from transformers import AutoTokenizer

        if settings.family != "qwen_prm" or not settings.vllm_url or settings.model is None:
            raise SystemExit("backend vllm_pooling serves family qwen_prm and needs --vllm-url")
        tokenizer = AutoTokenizer.from_pretrained(settings.model)
        name = settings.served_name or settings.model.name
        return cls(name, tokenizer, settings.vllm_url, settings.max_tokens or 4096)

    def close(self) -> None:
        self._client.close()

    @property
    def name(self) -> str:
        return self._name

    @property
    def family(self) -> FamilyName:
        return "qwen_prm"

    @property
    def max_tokens(self) -> int:
        return self._max_tokens

    def encode(self, problem: str, steps: list[str]) -> Encoded:
        return encode(FAMILIES["qwen_prm"], self._tokenizer, problem, steps)

    def cost(self, item: Encoded) -> int:
        return len(item.ids)  # vLLM's own prefix cache is not visible from here

    def _served(self) -> str:
        """The model's name on the vLLM server (its first in ``/v1/models``)."""
        if self._vllm_model is None:
            models = self._call("GET", "/v1/models", None).get("data") or []
            if not models or not isinstance(models[0], dict) or "id" not in models[0]:
                raise BackendError("the vLLM pooling server lists no model at /v1/models")
            self._vllm_model = str(models[0]["id"])
        return self._vllm_model

    def _call(self, method: str, path: str, payload: dict[str, Any] | None) -> dict[str, Any]:
        try:
            response = self._client.request(method, path, json=payload)
            response.raise_for_status()
            data: dict[str, Any] = response.json()
        except (httpx.HTTPError, ValueError) as exc:
            raise BackendError(f"the vLLM pooling server failed on {path}: {exc}") from exc
        return data

    def compute(self, batch: Sequence[Encoded]) -> list[list[float]]:
        payload = {
            "model": self._served(),
            "input": [list(e.ids) for e in batch],
            "task": "token_classify",
        }
        rows = self._call("POST", "/pooling", payload)["data"]
        data: list[dict[str, Any]] = sorted(rows, key=lambda d: d["index"])
        out = []
        for item, row in zip(batch, data, strict=True):
            steps = row["data"]
            if len(steps) != len(item.read_positions):
                raise RuntimeError(
                    f"vLLM returned {len(steps)} step rows for {len(item.read_positions)} steps"
                )
            out.append([float(pair[1]) for pair in steps])
        return out
