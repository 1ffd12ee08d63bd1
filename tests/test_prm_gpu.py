"""A real PRM checkpoint on a GPU (opt-in: set TTS_PRM_CHECKPOINT=/path and TTS_PRM_FAMILY)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from prm_server.scorer import load_hf_scorer

CHECKPOINT = os.environ.get("TTS_PRM_CHECKPOINT")
pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not CHECKPOINT, reason="set TTS_PRM_CHECKPOINT to a local PRM folder"),
]


def test_real_checkpoint_scores_a_correct_solution_above_a_wrong_one() -> None:
    import torch

    assert CHECKPOINT is not None
    family = os.environ.get("TTS_PRM_FAMILY", "qwen_prm")
    device = "cuda" if torch.cuda.is_available() else "cpu"
    scorer = load_hf_scorer(
        Path(CHECKPOINT),
        family,  # type: ignore[arg-type]
        name=None,
        device=device,
        dtype="bfloat16" if device == "cuda" else "float32",
    )
    problem = "What is 17 * 23?"
    good = scorer.encode(
        problem, ["17 * 23 = 17 * 20 + 17 * 3 = 340 + 51 = 391.", "The answer is \\boxed{391}."]
    )
    bad = scorer.encode(
        problem, ["17 * 23 = 17 * 20 + 17 * 3 = 340 + 41 = 381.", "The answer is \\boxed{381}."]
    )
    good_scores, bad_scores = scorer.compute([good, bad])
    assert len(good_scores) == len(bad_scores) == 2
    assert good_scores[-1] > bad_scores[-1]
