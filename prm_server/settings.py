"""Configuration of the PRM server: ``PrmServerSettings`` (env ``PRM_SERVER_*`` or CLI)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from prm_server.families import FamilyName

__all__ = ["PrmServerSettings"]


class PrmServerSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="PRM_SERVER_", extra="forbid", frozen=True)

    host: str = "127.0.0.1"  # the address to listen on
    port: int = 8002  # the port to listen on
    model: Path | None = None  # a local folder: config.json, *.safetensors, tokenizer files
    # How the checkpoint reads steps and reports rewards (qwen_prm, ...).
    family: FamilyName = "qwen_prm"
    served_name: str | None = None  # default: the folder's name
    # Hf: transformers in-process; vllm_pooling: a vLLM pooling server.
    backend: Literal["hf", "vllm_pooling"] = "hf"
    vllm_url: str | None = None  # for backend vllm_pooling, e.g. http://127.0.0.1:8003
    device: str = "cpu"  # torch device: cpu, cuda, cuda:1
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"  # the model's dtype on that device
    max_tokens: int | None = None  # default: the model's max_position_embeddings
    max_wait_ms: float = 10.0  # a batch waits this long for more requests
    max_batch_tokens: int = 16384  # padded tokens per forward pass (cached pasts included)
    max_queue_items: int = 4096  # candidates waiting; beyond: 429
    max_candidates: int = 512  # candidates in one request; more: 400
    cache_entries: int = 200_000  # scored step prefixes remembered (repeat requests cost nothing)
    kv_cache_tokens: int = 65536  # tokens of step key/value caches kept (0: no reuse)
    log_level: str = "info"  # debug, info, warning or error
    header_read_timeout_s: float = Field(default=10.0, gt=0)  # unfinished headers: closed
    api_keys: list[SecretStr] = Field(default_factory=list)  # empty: no auth; else Bearer keys
