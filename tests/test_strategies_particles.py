"""Particle weights and systematic resampling, by hand and by property."""

from __future__ import annotations

import math
import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from strategies.particle_filtering import particle_weights, systematic_resample


class _Fixed(random.Random):
    """An RNG whose every draw is ``value``."""

    def __init__(self, value: float) -> None:
        super().__init__(0)
        self.value = value

    def random(self) -> float:
        return self.value


def test_weights_are_the_softmax_of_logits_over_temperature() -> None:
    assert particle_weights([0.75, 0.5], 1.0) == pytest.approx([0.75, 0.25])  # odds 3 : 1
    assert particle_weights([0.75, 0.5], 2.0) == pytest.approx(
        [math.sqrt(3) / (1 + math.sqrt(3)), 1 / (1 + math.sqrt(3))]
    )
    assert particle_weights([0.0, 1.0], 1.0)[1] == pytest.approx(1.0)  # clipped, not inf/nan


@pytest.mark.parametrize(
    ("draw", "expected"), [(0.0, [0, 0, 1, 1]), (0.3, [0, 0, 1, 2]), (0.99, [0, 1, 1, 2])]
)
def test_systematic_resampling_by_hand(draw: float, expected: list[int]) -> None:
    # cumulative 0.4, 0.75, 1.0, 1.0 against pointers (u + k) / 4
    assert systematic_resample([0.4, 0.35, 0.25, 0.0], _Fixed(draw)) == expected


@given(
    st.lists(st.floats(0.0, 1.0), min_size=1, max_size=32).filter(lambda w: sum(w) > 1e-3),
    st.floats(0.0, 0.999999),
)
def test_every_particle_is_kept_floor_or_ceil_of_n_times_its_weight(
    raw: list[float], draw: float
) -> None:
    total = sum(raw)
    weights = [w / total for w in raw]
    drawn = systematic_resample(weights, _Fixed(draw))
    n = len(weights)
    assert len(drawn) == n and drawn == sorted(drawn)
    for index, weight in enumerate(weights):
        count = drawn.count(index)
        assert math.floor(n * weight - 1e-9) <= count <= math.ceil(n * weight + 1e-9)
