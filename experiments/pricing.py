"""Dollars per request: litellm's price map for large APIs (its offline copy: nothing is fetched)
and a configured price for the self-hosted policy ($ per 1M tokens, or $ per GPU-hour turned into $
per token by a measured throughput).
"""

from __future__ import annotations

import importlib
import os
from dataclasses import dataclass
from functools import cache
from typing import Any

__all__ = ["Price", "api_cost"]


@dataclass(frozen=True, slots=True)
class Price:
    """A self-hosted model's price. ``usd_per_gpu_hour`` needs ``tokens_per_s`` (aggregate
    throughput of one GPU) to become a per-token price; without either the cost is unknown."""

    usd_per_mtok: float | None = None
    usd_per_gpu_hour: float | None = None
    tokens_per_s: float | None = None

    def __post_init__(self) -> None:
        for name in ("usd_per_mtok", "usd_per_gpu_hour", "tokens_per_s"):
            value = getattr(self, name)
            if value is not None and value < 0:
                raise ValueError(f"{name} must be >= 0")

    @property
    def usd_per_token(self) -> float | None:
        if self.usd_per_mtok is not None:
            return self.usd_per_mtok / 1e6
        if self.usd_per_gpu_hour is not None and self.tokens_per_s:
            return self.usd_per_gpu_hour / 3600.0 / self.tokens_per_s
        return None

    def cost(self, tokens: int) -> float | None:
        """Every token the policy processed (prompt, returned and hidden) at one rate."""
        rate = self.usd_per_token
        return None if rate is None else tokens * rate


@cache
def _litellm() -> Any | None:
    # Without this litellm downloads its price map at import time.
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # noqa: TID251
    try:
        litellm: Any = importlib.import_module("litellm")
    except ImportError:
        return None
    # A price lookup for a model litellm does not know prints a red "Provider List" banner to
    # stdout, once per call (a benchmark row each), unless this is set.
    litellm.suppress_debug_info = True
    return litellm


def api_cost(model: str, prompt_tokens: int, completion_tokens: int) -> float | None:
    """A large API's list price for one call, or None when litellm does not know the model."""
    litellm = _litellm()
    if litellm is None:
        return None
    try:
        prompt_usd, completion_usd = litellm.cost_per_token(
            model=model, prompt_tokens=prompt_tokens, completion_tokens=completion_tokens
        )
    except Exception:  # litellm raises its own error types for unmapped models
        return None
    return float(prompt_usd) + float(completion_usd)
