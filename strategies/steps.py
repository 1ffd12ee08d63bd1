"""Turning generations into steps and deciding when a candidate is finished.

Pure functions only. A step ends at the step delimiter, which stays in the step's text
(Liu et al. 2025 use "\\n\\n" with ``include_stop_str_in_output``).
"""

from __future__ import annotations

from collections.abc import Sequence

from strategies.results import Candidate
from strategies.types import Finish, Generation, Step

__all__ = ["extend", "has_marker", "split_generation", "step_of"]


def step_of(generation: Generation) -> Step:
    """A generation that stopped at (or before) one delimiter, as one step."""
    return Step(
        text=generation.text,
        tokens=generation.completion_tokens,
        token_logprobs=generation.token_logprobs,
    )


def split_generation(generation: Generation, delimiter: str) -> tuple[Step, ...]:
    """A full sample cut into steps at every delimiter; token log-probs follow their characters.

    A token that straddles a step boundary belongs to the step where it ends.
    """
    text = generation.text
    cuts = _cut_points(text, delimiter)
    logprobs, ends = generation.token_logprobs, generation.token_ends
    has_offsets = len(logprobs) == len(ends) and bool(ends)
    steps: list[Step] = []
    token = 0
    start = 0
    for cut in cuts:
        first = token
        if has_offsets:
            while token < len(ends) and ends[token] <= cut:
                token += 1
            if cut == len(text):
                token = len(ends)
        steps.append(
            Step(text=text[start:cut], tokens=token - first, token_logprobs=logprobs[first:token])
        )
        start = cut
    if not has_offsets:
        steps = _spread_tokens(steps, generation.completion_tokens)
    return tuple(steps)


def _cut_points(text: str, delimiter: str) -> list[int]:
    cuts: list[int] = []
    pos = text.find(delimiter)
    while pos >= 0:
        end = pos + len(delimiter)
        # A run of blank lines is one delimiter: extend over further newlines.
        while end < len(text) and text[end] == "\n" and delimiter.endswith("\n"):
            end += 1
        cuts.append(end)
        pos = text.find(delimiter, end)
    if not cuts or cuts[-1] < len(text):
        cuts.append(len(text))
    return cuts


def _spread_tokens(steps: list[Step], total: int) -> list[Step]:
    """Without offsets, attribute all tokens to the last step so that sums stay exact."""
    if not steps:
        return steps
    last = steps[-1]
    return [*steps[:-1], Step(text=last.text, tokens=total, token_logprobs=last.token_logprobs)]


def has_marker(text: str, markers: Sequence[str]) -> bool:
    """Whether ``text`` holds one of the answer ``markers`` (``\\boxed{``): a finished answer."""
    return any(marker in text for marker in markers)


def extend(
    beam: Candidate,
    generation: Generation,
    *,
    node_id: int,
    max_steps: int,
    markers: Sequence[str],
) -> Candidate:
    """The beam plus one step; finished on EOS, truncation, an answer or the depth limit."""
    step = step_of(generation)
    steps = (*beam.steps, step)
    is_truncated = generation.finish is Finish.LENGTH
    is_finished = (
        generation.finish is not Finish.STEP
        or has_marker(step.text, markers)
        or len(steps) >= max_steps
    )
    return Candidate(
        steps=steps,
        step_scores=beam.step_scores,
        is_finished=is_finished,
        is_truncated=is_truncated,
        node_id=node_id,
    )
