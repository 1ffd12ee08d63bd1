"""Tiny randomly initialised PRMs of the four real architectures, with a BPE tokenizer trained at
test time (no hub access). Saved as real checkpoint folders so tests go through the real loader.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import (
    LlamaConfig,
    LlamaForCausalLM,
    MistralConfig,
    MistralForCausalLM,
    PreTrainedTokenizerFast,
    Qwen2Config,
)

from prm_server.families import FamilyName
from prm_server.modeling import QwenProcessRewardModel, SkyworkValueModel

SPECIALS = [
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<extra_0>",
    "ки",
    "<|reserved_special_token_0|>",
    "<|begin_of_text|>",
    "<|start_header_id|>",
    "<|end_header_id|>",
    "<|eot_id|>",
]
CHATML = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
LLAMA31 = (
    "{{ bos_token }}{% if date_string is not defined %}"
    "{% set date_string = '1 Jan 2025' %}{% endif %}"
    "<|start_header_id|>system<|end_header_id|>\n\nCutting Knowledge Date: December 2023\n"
    "Today Date: {{ date_string }}\n\n<|eot_id|>{% for m in messages %}<|start_header_id|>"
    "{{ m['role'] }}<|end_header_id|>\n\n{{ m['content'] | trim }}<|eot_id|>{% endfor %}"
    "{% if add_generation_prompt %}<|start_header_id|>assistant<|end_header_id|>\n\n{% endif %}"
)
CORPUS = [
    "What is 2 + 3? Step 1: add the numbers. 2 + 3 = 5. So the answer is \\boxed{5}.",
    "Tom has 12 apples and eats 4. He has 12 - 4 = 8 apples left.",
    "Multiply: 17 * 23 = 391. Divide: 144 / 12 = 12. Then 12 + 35 = 47.",
    "Let x be the number. Then 3x = 12, so x = 4. Therefore, the final answer is: $4$.",
    "+ - * / = ( ) { } [ ] \\frac{1}{2} 0.5 1/2 step Step answer",
] * 20


def train_tokenizer(family: FamilyName) -> PreTrainedTokenizerFast:
    core = Tokenizer(models.BPE(unk_token=None))
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    core.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=600,
        special_tokens=SPECIALS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    core.train_from_iterator(CORPUS, trainer)
    bos = "<|begin_of_text|>" if family == "rlhflow" else "<|endoftext|>"
    tok = PreTrainedTokenizerFast(  # type: ignore[no-untyped-call]
        tokenizer_object=core, bos_token=bos, eos_token="<|endoftext|>", pad_token="<|endoftext|>"
    )
    tok.chat_template = LLAMA31 if family == "rlhflow" else CHATML
    return tok


def build_checkpoint(
    family: FamilyName,
    folder: Path,
    hidden: int = 64,
    layers: int = 2,
    context: int = 512,
    *,
    heads: int = 4,
    kv_heads: int = 2,
    intermediate: int | None = None,
) -> Path:
    """A random checkpoint of ``family`` under ``folder`` (config, weights, tokenizer): tiny by
    default; a real model's shape (hidden size, layers, heads) for throughput figures."""
    torch.manual_seed(0)
    tok = train_tokenizer(family)
    vocab = len(tok)
    folder.mkdir(parents=True, exist_ok=True)
    small: dict[str, Any] = {
        "hidden_size": hidden,
        "intermediate_size": intermediate or 2 * hidden,
        "num_hidden_layers": layers,
        "num_attention_heads": heads,
        "num_key_value_heads": kv_heads,
        "max_position_embeddings": context,
    }
    if family in ("qwen_prm", "skywork"):
        config = Qwen2Config(vocab_size=vocab, **small)
        module = (
            QwenProcessRewardModel(config) if family == "qwen_prm" else SkyworkValueModel(config)
        )
        name = "Qwen2ForProcessRewardModel" if family == "qwen_prm" else "Qwen2ForPrmModel"
        config.architectures = [name]
        config.save_pretrained(folder)
        state = {k: v.contiguous() for k, v in module.state_dict().items()}
        save_file(state, str(folder / "model.safetensors"))
    elif family == "math_shepherd":
        MistralForCausalLM(MistralConfig(vocab_size=vocab, **small)).save_pretrained(folder)
    else:
        LlamaForCausalLM(LlamaConfig(vocab_size=vocab, **small)).save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder
