"""Reward-ranked fine-tuning on tiny real Wan transformers: the ranking picks each group's best and skips flat
groups, bad rewards are refused, and a few iterations raise a reward with a known direction."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from eva_runtime.training.flow_grpo import condition_key
from eva_runtime.training.reward_ranked import RankedSettings, best_of_groups, ranked_iteration
from eva_runtime.world_model.wan.latents import encode_frames
from eva_runtime.world_model.wan.lora import add_lora
from eva_runtime.world_model.wan.sampling import Denoiser, euler_sample, flow_sigmas
from tests.wan_helpers import INSTRUCTION, square_video, tiny_pipeline

torch.set_num_threads(1)

_rewards = st.lists(st.floats(-5, 5, allow_nan=False), min_size=2, max_size=6)


@settings(max_examples=60, deadline=None)
@given(st.lists(_rewards, min_size=1, max_size=4), st.integers(1, 3), st.floats(0.0, 2.0))
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
        stored = rewards[members]  # the float32 values ranked, not the float64 drawn
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
    """The reward prefers imagined motion along +channel 0 of latent space (as the Flow-GRPO test's); ranking the
    model's own ODE rollouts and fine-tuning on the best must learn it from the rankings alone."""
    pipeline = tiny_pipeline(seed=4)
    transformer = pipeline.transformer
    add_lora(transformer, "align", rank=1, alpha=4, targets=("proj_out",))
    parameters = [p for p in transformer.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(parameters, lr=3e-2)
    groups, size = 2, 8
    embeds = pipeline.encode_prompt(INSTRUCTION, do_classifier_free_guidance=False, max_sequence_length=32)[0]
    embeds = embeds.detach().expand(groups * size, -1, -1)
    condition = torch.zeros(groups * size, 4, 3, 8, 8)
    keys = []
    for g, start in enumerate([0, 9]):
        frame = square_video(1, 32, start)
        condition[g * size : (g + 1) * size, :, :1] = encode_frames(pipeline.vae, frame[None])
        keys += [condition_key(frame, INSTRUCTION)] * size
    sigmas = flow_sigmas(pipeline.scheduler, 4)
    shift = float(pipeline.scheduler.config.shift)

    def reward(latents: torch.Tensor):
        score = (latents[:, 0, 1:] - latents[:, 0, :1]).mean((-1, -2, -3))
        return score, {"direction": float(score.mean())}

    def evaluate() -> float:
        values = []
        for seed in range(3):
            noise = torch.randn(condition.shape, generator=torch.Generator().manual_seed(1000 + seed))
            with torch.no_grad():
                final = euler_sample(Denoiser(transformer, embeds, condition, 1), noise, sigmas)
            values.append(float(reward(final)[0].mean()))
        return float(np.mean(values))

    before = evaluate()
    ranked = RankedSettings(keep=1, updates=2, shift=shift)
    for iteration in range(25):
        noise = torch.randn(condition.shape, generator=torch.Generator().manual_seed(iteration))
        telemetry, final = ranked_iteration(
            transformer,
            transformer,
            optimizer,
            lambda loss: loss.backward(),
            condition,
            embeds,
            1,
            keys,
            noise,
            sigmas,
            reward,
            ranked,
            torch.Generator().manual_seed(100 + iteration),
            parameters,
        )
        assert final.shape == condition.shape and np.isfinite(telemetry["loss"])
        assert telemetry["ranked_group_fraction"] == 1.0 and telemetry["kept_reward_mean"] >= telemetry["reward_mean"]
    after = evaluate()
    assert after > before + 0.1, (before, after)
