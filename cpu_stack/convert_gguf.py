"""Convert a GGUF checkpoint to a Hugging Face folder (safetensors + tokenizer).

Run with the policy environment's Python (it needs torch, transformers, gguf, accelerate):
    python -I .../cpu_stack/convert_gguf.py SRC_DIR GGUF_NAME OUT_DIR [bfloat16|float32]

It imports nothing of the project, so it runs as a file in the policy environment.

transformers can load a GGUF (``gguf_file=``) but refuses to save the dequantised model, so the
model is rebuilt from its config and the weights copied across.
"""

from __future__ import annotations

import sys

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer


def main() -> None:
    src, gguf, out = sys.argv[1:4]
    dtype = getattr(torch, sys.argv[4]) if len(sys.argv) > 4 else torch.bfloat16
    tokenizer = AutoTokenizer.from_pretrained(src, gguf_file=gguf)
    quantised = AutoModelForCausalLM.from_pretrained(src, gguf_file=gguf, dtype=torch.float32)
    config = quantised.config
    if hasattr(config, "quantization_config"):
        delattr(config, "quantization_config")
    config.dtype = dtype
    model = AutoModelForCausalLM.from_config(config, dtype=dtype)  # type: ignore[no-untyped-call]
    missing, unexpected = model.load_state_dict(quantised.state_dict(), strict=False)
    if missing or unexpected:
        raise SystemExit(f"weights do not match: missing={missing} unexpected={unexpected}")
    model.generation_config = quantised.generation_config
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)


if __name__ == "__main__":
    main()
