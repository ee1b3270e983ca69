"""The executed-motion reward: plan-length windows of filtered commands, sampled at the reward's rate, scored with
the plans' own reward; only uninterrupted nominal motion counts; in the loop it lands in the episode's counters."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from eva_runtime.control.episode_stats import episode_counters
from eva_runtime.control.executed_score import ExecutedScorer
from eva_runtime.embodiment import load_embodiment
from eva_runtime.reward import RewardConfig, executability
from tests.conftest import CALIBRATION
from tests.test_autonomous_loop import make_loop, run

EMBODIMENT = load_embodiment(CALIBRATION / "aloha_sim.yaml")
REWARD = RewardConfig.from_embodiment(EMBODIMENT, 12.5)
HORIZON = 9


def _stream(ticks: int, jitter: float = 0.0, seed: int = 0) -> np.ndarray:
    """Commands at 50 Hz: a slow sine on every joint, plus per-tick noise."""
    times = np.arange(ticks)[:, None] / 50.0
    noise = np.random.default_rng(seed).normal(0.0, jitter, (ticks, EMBODIMENT.dof)) if jitter else 0.0
    return 0.3 * np.sin(times + np.arange(EMBODIMENT.dof)) + 0.5 + noise


def test_a_window_is_every_fourth_tick_scored_as_a_plan_would_be() -> None:
    scorer = ExecutedScorer(REWARD, 50.0, HORIZON)
    commands = _stream(4 * (HORIZON - 1) + 1)
    for command in commands:
        scorer.add(command)
    assert scorer.stride == 4
    assert scorer.scores == [pytest.approx(executability(commands[::4], REWARD).reward)]


@settings(max_examples=30, deadline=None)
@given(ticks=st.integers(0, 400), cut=st.integers(0, 400))
def test_only_uninterrupted_nominal_motion_makes_windows(ticks: int, cut: int) -> None:
    scorer = ExecutedScorer(REWARD, 50.0, HORIZON)
    window = 4 * (HORIZON - 1) + 1
    for index, command in enumerate(_stream(ticks)):
        scorer.add(None if index == cut else command)  # a hold, teleop or homing tick ends the window in progress
    before, after = min(cut, ticks), max(0, ticks - cut - 1)
    expected = before // window + after // window if cut < ticks else ticks // window
    assert len(scorer.scores) == expected
    assert all(0.0 <= score <= 10.0 for score in scorer.scores)


def test_jittery_execution_scores_lower_than_smooth_execution() -> None:
    scores = {}
    for jitter in (0.0, 0.05):
        scorer = ExecutedScorer(REWARD, 50.0, HORIZON)
        for command in _stream(400, jitter):
            scorer.add(command)
        scores[jitter] = np.mean(scorer.scores)
    assert scores[0.05] < scores[0.0]


def test_a_non_finite_command_ends_the_window_instead_of_poisoning_it() -> None:
    scorer = ExecutedScorer(REWARD, 50.0, HORIZON)
    commands = _stream(100)
    commands[10, 3] = np.nan
    for command in commands:
        scorer.add(command)
    assert len(scorer.scores) == (100 - 11) // (4 * (HORIZON - 1) + 1)
    assert all(np.isfinite(scorer.scores))


def test_a_control_rate_that_is_not_a_multiple_of_the_reward_rate_is_refused() -> None:
    with pytest.raises(ValueError, match="whole multiple"):
        ExecutedScorer(REWARD, 30.0, HORIZON)
    with pytest.raises(ValueError, match="horizon"):
        ExecutedScorer(REWARD, 50.0, 1)


def test_the_loop_scores_what_it_sent_and_the_log_counters_carry_it() -> None:
    loop, _, clock = make_loop(latency_s=0.3, executed_reward=REWARD, executed_horizon=HORIZON)
    run(loop, clock, 300)
    assert len(loop.stats.executed_scores) >= 5
    counters = episode_counters(loop.stats, loop.period)["executability"]
    assert counters["executed_count"] == len(loop.stats.executed_scores)
    assert counters["executed_mean"] == pytest.approx(np.mean(loop.stats.executed_scores))
    unscored, _, unscored_clock = make_loop(latency_s=0.3)
    run(unscored, unscored_clock, 300)
    assert unscored.stats.executed_scores == []
