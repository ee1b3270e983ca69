"""The executability reward: formula by hand, NumPy/torch agreement, ordering of motions, units, validation."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from eva_runtime.embodiment import Embodiment, load_embodiment
from eva_runtime.reward import FIELDS, RewardConfig, executability, executability_batch, huber
from eva_runtime.reward.torch_reward import executability_torch

CALIBRATION = Path(__file__).resolve().parents[1] / "calibration"
COBOT = load_embodiment(CALIBRATION / "cobot_magic.yaml")
ALOHA = load_embodiment(CALIBRATION / "aloha_sim.yaml")


def minimum_jerk(start: np.ndarray, end: np.ndarray, steps: int) -> np.ndarray:
    s = np.linspace(0.0, 1.0, steps)[:, None]
    return start + (end - start) * (10 * s**3 - 15 * s**4 + 6 * s**5)


def tiny_config(**overrides: object) -> RewardConfig:
    """Two dimensions, dt 1, unit caps: small enough to compute by hand."""
    values: dict[str, object] = {"dt": 1.0, "velocity_max": [1.0, 1.0], "acceleration_max": [1.0, 1.0]}
    values["gripper_indices"] = ()
    values.update(overrides)
    return RewardConfig(**values)


def test_huber_matches_a_hand_computation() -> None:
    x = np.array([-3.0, -0.5, 0.0, 0.2, 1.0, 2.0])
    # |x| <= 1: x^2 / 2; beyond: |x| - 1/2.
    np.testing.assert_allclose(huber(x, 1.0), [2.5, 0.125, 0.0, 0.02, 0.5, 1.5])
    # Per-dimension deltas broadcast over time: delta 0.5 on the first column, 4 on the second.
    np.testing.assert_allclose(huber(np.array([[3.0, 3.0]]), np.array([0.5, 4.0])), [[0.5 * 2.75, 4.5]])


def test_penalty_and_both_forms_match_a_hand_computed_example() -> None:
    # Dimension 0 jumps by 3 at the last step: v = [0, 0, 3], a = [0, 3], j = [3]; dimension 1 is still.
    actions = np.zeros((4, 2))
    actions[3, 0] = 3.0
    # delta_a = a_max / 2 = 0.5 and delta_j = (a_max / dt) / 2 = 0.5, so Huber(3) = 0.5 (3 - 0.25) = 1.375.
    p_acc = 1.375 / 4  # 2 steps x 2 dimensions
    p_jerk = 1.375 / 2  # 1 step x 2 dimensions
    p_vel = (3.0 - 1.0) ** 2 / 6  # 3 steps x 2 dimensions
    p_alim = (3.0 - 1.0) ** 2 / 4
    penalty = 0.5 * p_jerk + 0.25 * p_acc + 2.0 * p_vel + 1.0 * p_alim
    assert penalty == pytest.approx(2.7630208333333335)

    paper = executability(actions, tiny_config(form="paper", p0=2.0, gamma=0.5))
    for name, value in {"p_acc": p_acc, "p_jerk": p_jerk, "p_vel": p_vel, "p_alim": p_alim}.items():
        assert getattr(paper, name) == pytest.approx(value, rel=1e-12)
    assert paper.penalty == pytest.approx(penalty, rel=1e-12)
    assert paper.reward == pytest.approx(((1 + penalty) / 2.0) ** -0.5, rel=1e-12)
    assert paper.velocity_violation_fraction == pytest.approx(1 / 6)
    assert not paper.kinematically_plausible

    authors = executability(actions, tiny_config(p0=2000.0, scale=10.0, gamma=0.5))
    assert authors.reward == pytest.approx(10.0 * (1 + penalty / 2000.0) ** -0.5, rel=1e-12)


@pytest.mark.parametrize("embodiment", [COBOT, ALOHA], ids=["cobot_magic", "aloha_sim"])
def test_motionless_plan_gets_the_maximal_reward(embodiment: Embodiment) -> None:
    config = RewardConfig.from_embodiment(embodiment, fps=16.0)
    pose = (embodiment.position_limits()[0] + embodiment.position_limits()[1]) / 2
    still = executability(np.tile(pose, (49, 1)), config)
    assert still.penalty == 0.0
    assert still.reward == config.scale == 10.0
    assert still.kinematically_plausible and still.velocity_violation_fraction == 0.0
    moving = executability(minimum_jerk(pose, pose + 0.3, 49), config)
    assert 0 < moving.reward < still.reward
    paper = executability(np.tile(pose, (49, 1)), RewardConfig.from_embodiment(embodiment, 16.0, form="paper"))
    assert paper.reward == pytest.approx(np.sqrt(2000.0))


def test_smooth_beats_jerky_beats_too_fast() -> None:
    config = RewardConfig.from_embodiment(COBOT, fps=16.0)
    start = np.array([0.0, 1.0, -1.0, 0.0, 0.0, 0.0, 0.01] * 2)
    end = start + np.array([0.5, 0.4, -0.4, 0.3, 0.2, -0.5, 0.05] * 2)
    smooth = minimum_jerk(start, end, 49)
    jerky = smooth.copy()
    jerky[20:25, :6] += np.array([0.0, 0.003, 0.006, 0.003, 0.0])[:, None]
    # Same poses in 5 steps instead of 49: peak speed ~ 1.875 * 0.5 rad / 0.25 s, above the 2.669 rad/s cap.
    too_fast = np.concatenate([minimum_jerk(start, end, 5), np.tile(end, (44, 1))])
    scores = [executability(a, config) for a in (smooth, jerky, too_fast)]
    assert scores[0].kinematically_plausible and scores[1].kinematically_plausible
    assert scores[1].p_jerk > scores[0].p_jerk and scores[1].p_vel == 0.0
    assert scores[2].p_vel > 0 and scores[2].velocity_violation_fraction > 0
    assert scores[0].reward > scores[1].reward > scores[2].reward


def test_fewer_than_min_steps_scores_zero() -> None:
    config = RewardConfig.from_embodiment(ALOHA, fps=16.0, min_steps=10)
    assert executability(np.zeros((9, 14)), config).reward == 0.0
    assert not executability(np.zeros((9, 14)), config).kinematically_plausible
    assert executability(np.zeros((10, 14)), config).reward == 10.0
    short = executability_torch(torch.zeros(2, 3, 14), RewardConfig.from_embodiment(ALOHA, fps=16.0))
    assert torch.equal(short["reward"], torch.zeros(2, dtype=torch.float32))


def test_dimension_weights_are_normalised_to_mean_one() -> None:
    config = RewardConfig.from_embodiment(COBOT, fps=16.0)
    assert config.dimension_weights.mean() == pytest.approx(1.0)
    assert config.dimension_weights[6] / config.dimension_weights[0] == pytest.approx(0.2)
    assert config.gripper_indices == (6, 13)
    custom = RewardConfig.from_embodiment(COBOT, fps=16.0, dimension_weights=np.full(14, 3.0))
    np.testing.assert_allclose(custom.dimension_weights, np.ones(14))


def cobot_in_normalised_units() -> Embodiment:
    data = yaml.safe_load((CALIBRATION / "cobot_magic.yaml").read_text())
    data["gripper_units"] = "normalized"
    for arm in data["arms"]:
        gripper = arm["joints"][-1]
        gripper.update(position=[0.0, 1.0], velocity_max=2.0, acceleration_max=10.0)
    return Embodiment.model_validate(data)


def test_gripper_in_metres_and_normalised_units_score_the_same() -> None:
    metres = RewardConfig.from_embodiment(COBOT, fps=16.0)
    normalised = RewardConfig.from_embodiment(cobot_in_normalised_units(), fps=16.0)
    np.testing.assert_allclose(metres.velocity_max, normalised.velocity_max)
    rng = np.random.default_rng(3)
    opening = np.clip(np.cumsum(rng.normal(0, 0.08, size=(49, 2)), axis=0) + 0.5, 0, 1)  # 0-1, violates caps
    plan = np.zeros((49, 14))
    plan[:, [6, 13]] = opening
    in_metres = plan.copy()
    in_metres[:, [6, 13]] *= 0.07
    a, b = executability(in_metres, metres), executability(plan, normalised)
    assert a.p_vel > 0 and a.p_jerk > 0
    for name in FIELDS:
        assert getattr(a, name) == pytest.approx(getattr(b, name), rel=1e-9), name
    # Without the scale the metre values would look 14x slower: a different, much smaller penalty.
    unscaled = RewardConfig.from_embodiment(COBOT, fps=16.0, gripper_scale=np.ones(14))
    assert executability(in_metres, unscaled).penalty < 0.1 * a.penalty


def test_batch_matches_single_rollouts() -> None:
    config = RewardConfig.from_embodiment(ALOHA, fps=50.0)
    batch = np.random.default_rng(0).normal(0, 0.05, size=(5, 20, 14)).cumsum(axis=1)
    parts = executability_batch(batch, config)
    for g in range(5):
        single = executability(batch[g], config)
        for name in FIELDS:
            assert getattr(single, name) == pytest.approx(parts[name][g], rel=1e-12)


@st.composite
def rollouts(draw: st.DrawFn) -> tuple[np.ndarray, RewardConfig]:
    groups, steps = draw(st.integers(1, 4)), draw(st.integers(4, 40))
    magnitude = draw(st.sampled_from([1e-3, 1e-2, 0.1, 1.0]))
    values = draw(arrays(np.float64, (groups, steps, 14), elements=st.floats(-1.0, 1.0, width=32)))
    embodiment = draw(st.sampled_from([COBOT, ALOHA]))
    config = RewardConfig.from_embodiment(
        embodiment,
        fps=draw(st.sampled_from([10.0, 16.0, 30.0, 50.0])),
        form=draw(st.sampled_from(["authors", "paper"])),
    )
    return magnitude * values, config


@settings(max_examples=200)
@given(rollouts())
def test_numpy_and_torch_agree(case: tuple[np.ndarray, RewardConfig]) -> None:
    actions, config = case
    expected = executability_batch(actions, config)
    got = executability_torch(torch.from_numpy(actions), config)
    for name in FIELDS:
        assert got[name].shape == (actions.shape[0],)
        if name == "kinematically_plausible":
            np.testing.assert_array_equal(got[name].numpy(), expected[name])
        else:
            assert got[name].dtype == torch.float64
            np.testing.assert_allclose(got[name].numpy(), expected[name], rtol=1e-6, atol=1e-6, err_msg=name)


def test_torch_follows_float32_and_gives_finite_gradients() -> None:
    config = RewardConfig.from_embodiment(COBOT, fps=16.0)
    base = np.random.default_rng(1).normal(0, 0.1, size=(8, 49, 14)).cumsum(axis=1)
    base[0] = 0.0  # a motionless rollout: |x| has a kink at 0, its gradient must still be finite
    single = torch.tensor(base, dtype=torch.float32)
    assert executability_torch(single, config)["reward"].dtype == torch.float32
    np.testing.assert_allclose(
        executability_torch(single, config)["reward"].numpy(), executability_batch(base, config)["reward"], rtol=1e-4
    )
    actions = torch.tensor(base, requires_grad=True)
    executability_torch(actions, config)["reward"].sum().backward()
    assert actions.grad is not None and torch.isfinite(actions.grad).all()
    assert actions.grad[1:].abs().sum() > 0


def test_non_finite_actions_are_refused() -> None:
    config = RewardConfig.from_embodiment(ALOHA, fps=16.0)
    bad = np.zeros((10, 14))
    bad[4, 2] = np.nan
    with pytest.raises(ValueError, match="NaN or infinite"):
        executability(bad, config)
    with pytest.raises(ValueError, match="NaN or infinite"):
        executability_torch(torch.from_numpy(bad)[None].clone().fill_(np.inf), config)
    with pytest.raises(ValueError, match="shape"):
        executability(np.zeros((10, 13)), config)


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"dt": 0.0}, "dt"),
        ({"velocity_max": [[1.0, 1.0]]}, "velocity_max"),
        ({"acceleration_max": [1.0, 1.0, 1.0]}, "acceleration_max"),
        ({"acceleration_max": [1.0, -1.0]}, "acceleration_max"),
        ({"delta_a": [np.nan, 1.0]}, "delta_a"),
        ({"delta_j": [1.0, 0.0]}, "delta_j"),
        ({"dimension_weights": [0.0, 0.0]}, "dimension_weights"),
        ({"gripper_scale": [1.0, np.inf]}, "gripper_scale"),
        ({"gripper_indices": (2,)}, "gripper_indices"),
        ({"w_vel": -1.0}, "w_vel"),
        ({"form": "sum"}, "form"),
        ({"p0": -5.0}, "p0"),
        ({"gamma": np.inf}, "gamma"),
        ({"scale": "10"}, "scale"),
        ({"min_steps": 3}, "min_steps"),
    ],
)
def test_config_errors_name_the_field(overrides: dict[str, object], field: str) -> None:
    with pytest.raises(ValueError, match=rf"RewardConfig\.{field}:"):
        tiny_config(**overrides)


def test_from_embodiment_takes_dt_only_from_fps() -> None:
    with pytest.raises(ValueError, match=r"RewardConfig\.dt"):
        RewardConfig.from_embodiment(ALOHA, fps=16.0, dt=0.1)
    with pytest.raises(ValueError, match=r"RewardConfig\.dt"):
        RewardConfig.from_embodiment(ALOHA, fps=0.0)
    config = RewardConfig.from_embodiment(ALOHA, fps=10.0)
    assert config.dt == pytest.approx(0.1)
    np.testing.assert_allclose(config.delta_j, config.acceleration_max / 0.1 / 2)
    with pytest.raises(ValueError, match="read-only"):
        config.velocity_max[0] = 100.0


@pytest.mark.parametrize("factor", [0.99, 1.01])
def test_kinematic_plausibility_flips_at_the_caps(factor: float) -> None:
    config = tiny_config(dt=0.1, velocity_max=[2.0, 2.0], acceleration_max=[4.0, 4.0])
    t = np.arange(20)[:, None] * 0.1
    cruise = np.hstack([2.0 * factor * t, np.zeros_like(t)])  # constant velocity: no acceleration at all
    assert executability(cruise, config).kinematically_plausible == (factor < 1)
    parabola = np.hstack([0.5 * 4.0 * factor * t**2 * 0.1, np.zeros_like(t)])  # a = 0.4 factor, v < 2
    high_acceleration = np.hstack([0.5 * 4.0 * factor * t**2, np.zeros_like(t)])[:6]  # a = 4 factor, v <= 2
    assert executability(parabola, config).kinematically_plausible
    result = executability(high_acceleration, config)
    assert result.velocity_violation_fraction == 0.0
    assert result.kinematically_plausible == (factor < 1)
    assert (result.p_alim > 0) == (factor > 1)


def test_core_reward_does_not_import_torch() -> None:
    code = "import sys, eva_runtime.reward, eva_runtime.calibration; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
