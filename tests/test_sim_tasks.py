"""Task definitions: seeded placements inside the documented ranges, and the geometric insertion check."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from eva_runtime.sim.tasks import MIN_DEPTH, PEG_HALF_LENGTH, SOCKET_HALF_LENGTH, peg_inserted, task_spec

UPRIGHT = np.array([1.0, 0.0, 0.0, 0.0])


def pose(x: float, y: float = 0.5, z: float = 0.15, quaternion: np.ndarray = UPRIGHT) -> np.ndarray:
    return np.r_[x, y, z, quaternion]


def about_z(degrees: float) -> np.ndarray:
    half = np.radians(degrees) / 2
    return np.array([np.cos(half), 0.0, 0.0, np.sin(half)])


SOCKET = pose(-0.08)
# Peg centre x at which its -x end is exactly MIN_DEPTH inside the socket's +x opening.
JUST_DEEP = SOCKET[0] + SOCKET_HALF_LENGTH - MIN_DEPTH + PEG_HALF_LENGTH


@pytest.mark.parametrize(
    ("peg", "inserted"),
    [
        (pose(JUST_DEEP - 0.005), True),
        (pose(JUST_DEEP + 0.005), False),  # not deep enough
        (pose(JUST_DEEP - 0.005, y=0.515), False),  # beside the hollow
        (pose(JUST_DEEP - 0.005, z=0.165), False),  # above it
        (pose(JUST_DEEP - 0.005, quaternion=about_z(30)), False),  # crossed
        (pose(JUST_DEEP - 0.005, quaternion=about_z(180)), True),  # a peg is symmetric end to end
        (pose(SOCKET[0] - 0.2), False),  # on the wrong side
    ],
    ids=["inserted", "shallow", "offset_y", "offset_z", "tilted", "reversed", "wrong_side"],
)
def test_peg_inserted(peg: np.ndarray, inserted: bool) -> None:
    assert peg_inserted(peg, SOCKET) is inserted


@settings(max_examples=200)
@given(
    yaw=st.floats(-180, 180),
    shift=st.floats(-0.2, 0.2),
    depth=st.floats(-0.05, 0.05).filter(lambda d: abs(d) > 1e-6),  # off the decision boundary itself
)
def test_insertion_check_moves_with_the_socket(yaw: float, shift: float, depth: float) -> None:
    """The verdict depends only on the relative pose: rotating and moving both objects together changes nothing."""
    peg = pose(JUST_DEEP + depth)
    reference = peg_inserted(peg, SOCKET)
    turn = about_z(yaw)
    c, s = np.cos(np.radians(yaw)), np.sin(np.radians(yaw))
    rotate = np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]])

    def moved(p: np.ndarray) -> np.ndarray:
        w1, x1, y1, z1 = turn
        w2, x2, y2, z2 = p[3:]
        product = [
            w1 * w2 - x1 * x2 - y1 * y2 - z1 * z2,
            w1 * x2 + x1 * w2 + y1 * z2 - z1 * y2,
            w1 * y2 - x1 * z2 + y1 * w2 + z1 * x2,
            w1 * z2 + x1 * y2 - y1 * x2 + z1 * w2,
        ]
        return np.r_[rotate @ p[:3] + shift, product]

    assert peg_inserted(moved(peg), moved(SOCKET)) is reference


@pytest.mark.parametrize("task", ["transfer_cube", "insertion"])
def test_placements_are_seeded_and_inside_the_ranges(task: str) -> None:
    spec = task_spec(task)
    first, again, other = spec.sample_objects(5), spec.sample_objects(5), spec.sample_objects(6)
    for name in first:
        assert np.array_equal(first[name], again[name])
        assert not np.array_equal(first[name], other[name])
    for seed in range(50):
        objects = spec.sample_objects(seed)
        if task == "transfer_cube":
            x, y = objects["box"][:2]
            assert 0.0 <= x <= 0.2 and 0.4 <= y <= 0.6
        else:
            assert 0.1 <= objects["peg"][0] <= 0.2 and -0.2 <= objects["socket"][0] <= -0.1


def test_unknown_task_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown simulated task"):
        task_spec("fold_laundry")
