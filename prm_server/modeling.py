"""PRM networks in our own code (no ``trust_remote_code``) and the read-out of step scores.

- ``QwenProcessRewardModel``: ``model`` (Qwen2Model) + ``score`` = Linear(h,h) → ReLU → Linear(h,2),
  parameter names as in Qwen2.5-Math-PRM checkpoints; score = softmax(...)[1].
- ``SkyworkValueModel``: ``model`` (Qwen2Model) + ``v_head.summary`` = Linear(h,1); score = sigmoid.
- ``math_shepherd`` / ``rlhflow`` are plain causal LMs; the score is P(+) over {+, -} from the
  hidden state at the read position times just those two rows of ``lm_head`` (never the whole
  vocabulary).

Must not import ``proxy`` or ``strategies``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file
from torch import nn
from transformers import AutoConfig, AutoModelForCausalLM, Qwen2Config, Qwen2Model

from prm_server.families import Family

__all__ = ["PrmNetwork", "QwenProcessRewardModel", "SkyworkValueModel", "load_network"]


class QwenProcessRewardModel(nn.Module):
    def __init__(self, config: Qwen2Config) -> None:
        super().__init__()
        self.model = Qwen2Model(config)
        h = config.hidden_size
        self.score = nn.Sequential(nn.Linear(h, h), nn.ReLU(), nn.Linear(h, 2))


class _ValueHead(nn.Module):
    def __init__(self, hidden: int) -> None:
        super().__init__()
        self.summary = nn.Linear(hidden, 1)


class SkyworkValueModel(nn.Module):
    def __init__(self, config: Qwen2Config) -> None:
        super().__init__()
        self.model = Qwen2Model(config)
        self.v_head = _ValueHead(config.hidden_size)


class PrmNetwork:
    """A loaded PRM and the family-specific transform from hidden states to step scores."""

    def __init__(self, family: Family, module: Any, label_ids: tuple[int, int] | None):
        self.family = family
        self.module: Any = module.eval()  # heads differ per family; checked by the loader
        self.label_ids = label_ids
        config: Any = self.module.model.config
        self.max_tokens = int(getattr(config, "max_position_embeddings", 4096))

    @property
    def device(self) -> torch.device:
        device: torch.device = next(self.module.parameters()).device
        return device

    def backbone(self) -> Any:
        return self.module.model

    @torch.inference_mode()
    def scores(
        self, rows: Sequence[Sequence[int]], reads: Sequence[Sequence[int]]
    ) -> list[list[float]]:
        """Right-padded batch forward; one score per read position of each row."""
        width = max(len(r) for r in rows)
        ids = torch.zeros((len(rows), width), dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for i, row in enumerate(rows):
            ids[i, : len(row)] = torch.tensor(row, dtype=torch.long)
            mask[i, : len(row)] = 1
        device = self.device
        hidden = self.backbone()(
            input_ids=ids.to(device), attention_mask=mask.to(device)
        ).last_hidden_state
        out = []
        for i, positions in enumerate(reads):
            picked = hidden[i, torch.tensor(list(positions), dtype=torch.long, device=device)]
            out.append(self.transform(picked).float().cpu().tolist())
        return out

    def transform(self, hidden: torch.Tensor) -> torch.Tensor:
        head = self.family.head
        if head == "two_label":
            return torch.softmax(self.module.score(hidden).float(), dim=-1)[:, 1]
        if head == "value":
            return torch.sigmoid(self.module.v_head.summary(hidden).float())[:, 0]
        assert self.label_ids is not None
        weight = self.module.lm_head.weight[list(self.label_ids)]
        return torch.softmax((hidden @ weight.T).float(), dim=-1)[:, 0]


def load_network(
    path: Path, family: Family, device: str, dtype: torch.dtype, label_ids: tuple[int, int] | None
) -> PrmNetwork:
    """Load a checkpoint folder (config.json + safetensors) of ``family``."""
    if family.head == "plus_minus":
        lm: Any = AutoModelForCausalLM.from_pretrained(path, dtype=dtype)
        return PrmNetwork(family, lm.to(device), label_ids)
    config = Qwen2Config.from_pretrained(path)
    module: Any = (
        QwenProcessRewardModel(config) if family.head == "two_label" else SkyworkValueModel(config)
    )
    state: dict[str, Any] = {}
    files = sorted(path.glob("*.safetensors"))
    if not files:
        raise FileNotFoundError(f"no *.safetensors under {path}")
    for file in files:
        state.update(load_file(str(file)))
    state = {k: v for k, v in state.items() if not k.startswith("lm_head.")}
    module.load_state_dict(state, strict=True)
    module.model.config = config
    return PrmNetwork(family, module.to(device=device, dtype=dtype), None)


def architecture_of(path: Path) -> str:
    """The checkpoint's declared architecture (for messages and family checks)."""
    config = AutoConfig.from_pretrained(path)
    names = getattr(config, "architectures", None) or ["?"]
    return str(names[0])
