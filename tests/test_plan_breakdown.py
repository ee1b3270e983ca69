"""Plan penalty breakdown: the joint / gripper split adds up to the reward's penalty, each group's motion lands in
its own fields, paired differences pair plan by plan, and `eva eval plan-penalties` runs on saved plans."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from typer.testing import CliRunner

from eva_runtime.embodiment import load_embodiment
from eva_runtime.reward import RewardConfig, executability_batch
from eva_runtime.reward.numpy_reward import penalty_terms_by_dimension
from eva_runtime.reward.plan_breakdown import paired_plan_differences, plan_breakdown, summarise_plans

CALIBRATION = Path(__file__).resolve().parents[1] / "calibration"
COBOT = load_embodiment(CALIBRATION / "cobot_magic.yaml")
CONFIG = RewardConfig.from_embodiment(COBOT, 12.5)
BUNDLE = Path(__file__).resolve().parents[1] / "models" / "bundle_transfer_cube"


def _ramp(steps: int, dims: int, moving: list[int], amplitude: float) -> np.ndarray:
    plan = np.zeros((steps, dims))
    plan[:, moving] = amplitude * np.linspace(0.0, 1.0, steps)[:, None] ** 3
    return plan


@settings(max_examples=40, deadline=None)
@given(arrays(np.float64, (3, 9, 14), elements=st.floats(-2.0, 2.0)))
def test_the_per_dimension_terms_add_up_to_each_term_and_the_split_to_the_penalty(actions: np.ndarray) -> None:
    terms, _, _ = penalty_terms_by_dimension(actions, CONFIG)
    parts = executability_batch(actions, CONFIG)
    for name, by_dimension in terms.items():
        assert by_dimension.shape == (3, 14)
        np.testing.assert_allclose(by_dimension.sum(axis=1), parts[name], rtol=1e-9, atol=1e-12)
    rows = plan_breakdown(actions, CONFIG)
    np.testing.assert_allclose(rows["penalty_joints"] + rows["penalty_grippers"], rows["penalty"], rtol=1e-9)
    assert np.all((rows["gripper_share"] >= 0) & (rows["gripper_share"] <= 1 + 1e-12))


def test_each_groups_motion_lands_in_its_own_fields() -> None:
    grippers = list(CONFIG.gripper_indices)
    joints = [d for d in range(CONFIG.dims) if d not in grippers]
    span_m = 1.0 / CONFIG.gripper_scale[grippers[0]]  # the gripper's whole opening in metres
    plans = np.stack([np.zeros((12, 14)), _ramp(12, 14, grippers[:1], span_m), _ramp(12, 14, joints, 0.5)])
    rows = plan_breakdown(plans, CONFIG)
    assert rows["penalty"][0] == 0 and rows["gripper_share"][0] == 0 and rows["gripper_span"][0] == 0
    assert rows["gripper_share"][1] == pytest.approx(1.0) and rows["penalty_joints"][1] == 0
    assert rows["gripper_span"][1] == pytest.approx(1.0)  # the full opening, in the reward's 0-1 units
    assert rows["travel_grippers"][1] == pytest.approx(1.0 / len(grippers))
    assert rows["gripper_share"][2] == 0 and rows["travel_grippers"][2] == 0
    assert rows["travel_joints_rad"][2] == pytest.approx(0.5)
    assert rows["jerk_grippers"][1] > 0 and rows["jerk_grippers"][2] == 0


def test_paired_differences_pair_plan_by_plan_and_refuse_unequal_sets() -> None:
    rng = np.random.default_rng(0)
    plans = rng.normal(0.0, 0.02, (6, 10, 14)).cumsum(axis=1)
    first = plan_breakdown(plans, CONFIG)
    calmer = plan_breakdown(plans * 0.5, CONFIG)
    same = paired_plan_differences(first, first)
    assert all(mean == 0 for mean, _, _ in same.values())
    diff = paired_plan_differences(first, calmer)
    mean, low, high = diff["penalty"]
    assert mean < 0 and low <= mean <= high
    assert summarise_plans(first)["reward"][0] < summarise_plans(calmer)["reward"][0]
    with pytest.raises(ValueError, match="as many plans"):
        paired_plan_differences(first, plan_breakdown(plans[:3], CONFIG))


def test_plans_too_short_to_score_are_refused() -> None:
    with pytest.raises(ValueError, match="too short"):
        plan_breakdown(np.zeros((2, 3, 14)), CONFIG)


def test_the_command_writes_both_sets_and_their_paired_difference(tmp_path: Path) -> None:
    from eva_runtime.cli import app

    rng = np.random.default_rng(1)
    plans = rng.normal(0.0, 0.02, (5, 12, 14)).cumsum(axis=1)
    np.save(tmp_path / "a.npy", plans)
    np.save(tmp_path / "b.npy", plans * 0.5)
    out = tmp_path / "penalties.json"
    args = [
        "eval",
        "plan-penalties",
        "--plans",
        f"sft={tmp_path / 'a.npy'}",
        "--plans",
        f"aligned={tmp_path / 'b.npy'}",
    ]
    result = CliRunner().invoke(app, [*args, "--bundle", str(BUNDLE), "--out", str(out)])
    assert result.exit_code == 0, result.output
    written = json.loads(out.read_text())
    assert set(written["sets"]) == {"sft", "aligned"}
    assert written["paired"]["a"] == "sft" and written["paired"]["penalty"][0] < 0
    assert "aligned - sft (paired)" in out.with_suffix(".md").read_text()
    bad = CliRunner().invoke(app, ["eval", "plan-penalties", "--plans", "nopath", "--bundle", "x", "--out", str(out)])
    assert bad.exit_code == 2 and "NAME=PATH" in bad.output
    (tmp_path / "broken.npy").write_bytes(b"not an array")
    broken = ["eval", "plan-penalties", "--plans", f"x={tmp_path / 'broken.npy'}", "--bundle", str(BUNDLE)]
    refused = CliRunner().invoke(app, [*broken, "--out", str(out)])
    assert refused.exit_code == 2 and "not a readable .npy" in refused.output
