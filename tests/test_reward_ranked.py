"""Reward-ranked fine-tuning on tiny real Wan transformers: the ranking picks each group's best and skips flat
groups, bad rewards are refused, and a few iterations raise a reward with a known direction."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import example, given, settings
from hypothesis import strategies as st

from eva_runtime.training.reward_ranked import RankedSettings, best_of_groups, ranked_iteration
from tests.wan_helpers import KnownDirection

torch.set_num_threads(1)

_rewards = st.lists(st.floats(-5, 5, allow_nan=False), min_size=2, max_size=6)


@settings(max_examples=60, deadline=None)
@given(st.lists(_rewards, min_size=1, max_size=4), st.integers(1, 3), st.floats(0.0, 2.0))
@example(groups=[[0.0, 0.664458206815338]], keep=1, min_spread=0.664458206815338)  # a spread equal to the bound
def test_each_ranked_group_gives_its_best_and_flat_groups_give_none(
    groups: list[list[float]], keep: int, min_spread: float
) -> None:
    rewards = torch.tensor([value for group in groups for value in group])
    keys = [f"condition{g}" for g, group in enumerate(groups) for _ in group]
    picks = best_of_groups(rewards, keys, keep, min_spread)
    assert len(picks) == len(set(picks))
    begin = 0
    for g, group in enumerate(groups):
        members = list(range(begin, begin + len(group)))
        begin += len(group)
        chosen = [i for i in picks if i in members]
        stored = rewards[members].double()  # the float32 values ranked (not the float64 drawn), spread in float64
        if float(stored.max() - stored.min()) <= min_spread:
            assert chosen == []
            continue
        assert len(chosen) == min(keep, len(group))
        values = [float(rewards[i]) for i in chosen]
        assert values == sorted(values, reverse=True)  # best first
        left = [float(rewards[i]) for i in members if i not in chosen]
        assert not left or min(values) >= max(left)  # nothing left behind beats a kept one
        assert all(keys[i] == f"condition{g}" for i in chosen)


def test_bad_rewards_and_settings_are_refused() -> None:
    with pytest.raises(ValueError, match="keep"):
        best_of_groups(torch.tensor([1.0, 2.0]), ["a", "a"], keep=0)
    with pytest.raises(ValueError, match="rewards for"):
        best_of_groups(torch.tensor([1.0, 2.0]), ["a"], keep=1)
    with pytest.raises(ValueError, match="NaN"):
        best_of_groups(torch.tensor([1.0, float("nan")]), ["a", "a"], keep=1)


def test_a_few_iterations_raise_a_reward_with_a_known_direction() -> None:
    """The Flow-GRPO learning test's problem (imagined motion along +channel 0 of latent space is rewarded);
    ranking the model's own ODE rollouts and fine-tuning on the best must learn it from the rankings alone."""
    problem = KnownDirection(seed=4, groups_of=8)
    optimizer = torch.optim.Adam(problem.parameters, lr=3e-2)
    ranked = RankedSettings(keep=1, updates=2, shift=float(problem.pipeline.scheduler.config.shift))
    before = problem.evaluate()
    for iteration in range(25):
        telemetry, final = ranked_iteration(
            problem.trainee(optimizer),
            problem.batch(iteration),
            problem.reward,
            ranked,
        )
        assert final.shape == problem.condition.shape and np.isfinite(telemetry["loss"])
        assert telemetry["ranked_group_fraction"] == 1.0 and telemetry["kept_reward_mean"] >= telemetry["reward_mean"]
    after = problem.evaluate()
    assert after > before + 0.1, (before, after)
