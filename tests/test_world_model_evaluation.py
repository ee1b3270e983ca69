"""Open-loop evaluation's summary: the decoded-action errors against the recorded future (arm and grippers
apart) and the per-start-frame table that says in which phase of the task a model's plans go wrong."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from eva_runtime.world_model.evaluation import ConditionResult, _add_errors, summarise

GRIPPERS = (6, 13)


def _row(path: float, arm: float = 0.0, gripper: float = 0.0) -> dict:
    return {"reward": 5.0, "path_rad": path, "arm_error_rad": arm, "gripper_error": gripper}


def _condition(start: int, model: dict, truth: dict, psnr: float = 25.0) -> ConditionResult:
    return ConditionResult("episode", start, psnr, (psnr,), model, truth, 0.1)


def test_errors_keep_arm_joints_and_grippers_apart() -> None:
    truth = np.zeros((10, 14))
    decoded = truth.copy()
    decoded[:, list(GRIPPERS)] = 0.5
    rows = [{}, {}]
    _add_errors(rows, [decoded, truth], truth, GRIPPERS)
    assert rows[0] == {"arm_error_rad": 0.0, "gripper_error": 0.5}
    assert rows[1] == {"arm_error_rad": 0.0, "gripper_error": 0.0}
    decoded[:, 0] = 1.2  # one arm joint of twelve
    _add_errors(rows, [decoded, truth], truth, GRIPPERS)
    assert np.isclose(rows[0]["arm_error_rad"], 0.1)


@settings(max_examples=50, deadline=None)
@given(
    st.lists(
        st.tuples(st.sampled_from([0, 8, 16]), st.floats(0.01, 2.0), st.floats(0.01, 2.0), st.floats(0.0, 1.0)),
        min_size=1,
        max_size=12,
    )
)
def test_by_start_groups_conditions_and_ratios_path_lengths(rows) -> None:
    results = [_condition(start, _row(model, gripper=g), _row(truth)) for start, model, truth, g in rows]
    table = summarise(results)["by_start"]
    assert sorted(table, key=int) == [str(s) for s in sorted({r[0] for r in rows})]
    for start, entry in table.items():
        mine = [r for r in rows if r[0] == int(start)]
        assert entry["conditions"] == len(mine)
        expected = np.mean([r[1] for r in mine]) / np.mean([r[2] for r in mine])
        assert np.isclose(entry["motion_ratio"], expected)
        assert np.isclose(entry["gripper_error"], np.mean([r[3] for r in mine]))
