"""The planner's gate (best of G, resample up to `attempts`, threshold, NaN), its typed spec across the process
boundary, and the oracle's privileged context on the wire.

The world model and decoder here are scripted stand-ins: the subject is the gate's logic, so each rollout's
decoded motion is chosen by the test (a calm or a jerky one, whose executability rewards differ by construction).
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from eva_runtime.control.planner import Planner, PlannerSettings, PlanRequest
from eva_runtime.control.planner_process import PlannerSpec
from eva_runtime.embodiment import load_embodiment
from eva_runtime.reward import RewardConfig, executability
from eva_runtime.world_model.protocol import Rollout, RolloutRequest
from tests.conftest import CALIBRATION

EMBODIMENT = load_embodiment(CALIBRATION / "aloha_sim.yaml")
FPS = 12.5
HORIZON = 9
DOF = EMBODIMENT.dof


def calm() -> np.ndarray:
    return np.linspace(0.0, 0.05, HORIZON)[:, None] * np.ones(DOF)


def jerky(seed: int) -> np.ndarray:
    return calm() + np.random.default_rng(seed).normal(0.0, 0.2, (HORIZON, DOF))


class ScriptedWorldModel:
    """Sample g's frames are all g (so which sample was kept can be told from its frames)."""

    model_id, fps, cameras = "scripted", FPS, ("cam_high",)

    def __init__(self) -> None:
        self.requests: list[RolloutRequest] = []

    def rollout(self, request: RolloutRequest) -> Rollout:
        self.requests.append(request)
        frames = np.zeros((request.samples, request.horizon, 8, 8, 3), np.uint8)
        frames += np.arange(request.samples, dtype=np.uint8)[:, None, None, None, None]
        return Rollout({"cam_high": frames}, FPS, 0.0, self.model_id)


@dataclass
class _Config:
    cameras: tuple[str, ...] = ("cam_high",)
    image_size: tuple[int, int] = (8, 8)


class ScriptedDecoder:
    """Each decode call takes the next list of motions (one per sample) from the script."""

    fps = FPS
    config = _Config()

    def __init__(self, script: list[list[np.ndarray]]) -> None:
        self.script = list(script)

    def decode_batch(self, videos):
        return np.stack(self.script.pop(0))


def planner(script, **settings) -> tuple[Planner, ScriptedWorldModel]:
    model = ScriptedWorldModel()
    reward = RewardConfig.from_embodiment(EMBODIMENT, FPS, p0=50.0)
    chosen = PlannerSettings(horizon=HORIZON, smooth=1, preview_frames=0, **settings)
    return Planner(model, ScriptedDecoder(script), reward, chosen), model


def request() -> PlanRequest:
    return PlanRequest(1.5, {"cam_high": np.zeros((1, 8, 8, 3), np.uint8)}, "do it", seed=7)


def score(actions: np.ndarray) -> float:
    return executability(actions, RewardConfig.from_embodiment(EMBODIMENT, FPS, p0=50.0)).reward


def test_best_of_g_executes_the_highest_scoring_rollout() -> None:
    motions = [jerky(1), calm(), jerky(2), jerky(3)]
    gate, model = planner([motions], samples=4, attempts=1, threshold=-1e9)
    outcome = gate.plan(request())
    assert outcome.plan is not None and outcome.plan.attempts == 1
    np.testing.assert_allclose(outcome.plan.actions, calm())
    assert outcome.scores == pytest.approx([score(m) for m in motions])
    assert outcome.plan.score == max(outcome.scores) and model.requests[0].samples == 4
    assert outcome.plan.start_time == 1.5  # action 0 belongs to the observation's stamp


def test_committed_frames_follow_the_observed_ones_and_the_plan_starts_after_them() -> None:
    # The robot will carry out 4 more imagined frames (0.32 s) while this plan is made: the world model sees them
    # after the observation, and the plan's action 0 belongs to the last of them.
    motions = [jerky(1), calm()]
    gate, model = planner([motions], samples=2, attempts=1, threshold=-1e9, keep_imagined=True)
    observed = np.full((5, 16, 16, 3), 1, np.uint8)  # a camera's size; the committed frames are the model's
    committed = np.full((4, 8, 8, 3), 2, np.uint8)
    outcome = gate.plan(PlanRequest(1.5, {"cam_high": observed}, "do it", seed=7, committed={"cam_high": committed}))
    seen = model.requests[0].frames["cam_high"]
    assert seen.shape == (9, 8, 8, 3) and np.all(seen[:5] == 1) and np.all(seen[5:] == 2)
    assert outcome.plan is not None and outcome.plan.start_time == pytest.approx(1.5 + 4 / FPS)
    # The kept rollout's whole video comes back (sample 1, the calm one), for the next request to commit to.
    imagined = outcome.plan.metadata["imagined"]["cam_high"]
    assert imagined.shape == (HORIZON, 8, 8, 3) and np.all(imagined == 1)
    plain, _ = planner([motions], samples=2, attempts=1, threshold=-1e9)
    assert "imagined" not in plain.plan(request()).plan.metadata  # only when asked: it is 37 frames a plan


def test_a_rollout_below_the_threshold_is_resampled_with_a_new_seed_until_one_passes() -> None:
    threshold = (score(jerky(1)) + score(calm())) / 2
    assert score(jerky(1)) < threshold < score(calm())
    gate, model = planner([[jerky(1)], [jerky(1)], [calm()]], attempts=3, threshold=threshold)
    outcome = gate.plan(request())
    assert outcome.plan is not None and outcome.plan.attempts == 3 and len(outcome.scores) == 3
    seeds = [r.seed for r in model.requests]
    assert len(set(seeds)) == 3  # every attempt samples anew


def test_another_sampling_draw_samples_the_same_requests_with_other_noise() -> None:
    threshold = score(calm()) + 1.0  # every attempt fails, so every attempt's seed is seen
    default, model = planner([[calm()]] * 3, attempts=3, threshold=threshold)
    default.plan(request())
    # Draw 0 keeps the seeds every earlier closed-loop result was sampled with: request seed x 1000 + attempt.
    assert [r.seed for r in model.requests] == [7001, 7002, 7003]
    redrawn, other = planner([[calm()]] * 3, attempts=3, threshold=threshold, sampling_draw=1)
    redrawn.plan(request())
    seeds = [r.seed for r in other.requests]
    assert len(set(seeds)) == 3 and not set(seeds) & {7001, 7002, 7003}


@pytest.mark.parametrize("draw", [-1, 1001])
def test_a_sampling_draw_out_of_range_is_refused(draw: int) -> None:
    with pytest.raises(ValueError, match="sampling_draw"):
        PlannerSettings(sampling_draw=draw)


@given(
    st.tuples(st.integers(0, 1000), st.integers(0, 10**11 - 1), st.integers(1, 999)),
    st.tuples(st.integers(0, 1000), st.integers(0, 10**11 - 1), st.integers(1, 999)),
)
def test_attempt_seeds_are_distinct_for_distinct_draws_requests_and_attempts_and_fit_a_generator(a, b) -> None:
    seed_a = PlannerSettings(sampling_draw=a[0]).attempt_seed(a[1], a[2])
    seed_b = PlannerSettings(sampling_draw=b[0]).attempt_seed(b[1], b[2])
    assert (seed_a == seed_b) == (a == b)
    assert 0 <= seed_a < 2**63 and 0 <= seed_b < 2**63


def test_when_no_attempt_passes_the_plan_is_rejected_with_every_score() -> None:
    threshold = score(calm()) + 1.0
    gate, model = planner([[calm(), jerky(1)], [calm(), jerky(2)]], samples=2, attempts=2, threshold=threshold)
    outcome = gate.plan(request())
    assert outcome.plan is None and len(outcome.scores) == 4 and len(model.requests) == 2
    assert outcome.reason.startswith("best reward") and f"< {threshold}" in outcome.reason


def test_nan_rollouts_never_execute_and_a_finite_one_still_can() -> None:
    nan = np.full((HORIZON, DOF), np.nan)
    gate, _ = planner([[nan, nan]], samples=2, attempts=1, threshold=-1e9)
    outcome = gate.plan(request())
    assert outcome.plan is None and outcome.reason == "no finite rollout" and all(np.isnan(outcome.scores))
    gate, _ = planner([[nan, calm()]], samples=2, attempts=1, threshold=-1e9)
    outcome = gate.plan(request())
    assert outcome.plan is not None and np.isnan(outcome.scores[0])


def test_the_planner_spec_crosses_as_json_and_refuses_unknown_keys() -> None:
    spec = PlannerSpec(
        idm="idm.onnx",
        embodiment="e.yaml",
        world_model={"kind": "oracle", "task": "transfer_cube"},
        settings=PlannerSettings(horizon=17, attempts=2),
        reward={"p0": 40.0},
    )
    again = PlannerSpec.from_json(spec.to_json())
    assert again == spec and isinstance(again.settings, PlannerSettings)
    values = json.loads(spec.to_json())
    with pytest.raises(ValueError, match=r"unknown keys \['fault_injection'\]"):
        PlannerSpec.from_dict({**values, "fault_injection": {"nan": True}})
    with pytest.raises(ValueError, match=r"settings: unknown keys \['horizn'\]"):
        PlannerSpec.from_dict({**values, "settings": {"horizn": 3}})
    merged = spec.merged({"degrade": {"delay_s": 1.0}}, {"samples": 4})
    assert merged.world_model["degrade"] == {"delay_s": 1.0} and merged.settings.samples == 4
    assert "degrade" not in spec.world_model and spec.settings.samples == 1  # the original is untouched


def test_the_oracle_state_round_trips_through_the_wire_format() -> None:
    from eva_runtime.safety import FilterState
    from eva_runtime.sim.bimanual_sim import SimSnapshot
    from eva_runtime.wire import pack, unpack
    from eva_runtime.world_model.oracle import OracleState

    rng = np.random.default_rng(0)
    state = OracleState(
        SimSnapshot(rng.normal(size=40), 1.25),
        62,
        FilterState(1.24, rng.normal(size=DOF), rng.normal(size=DOF), rng.normal(size=DOF), None),
    )
    again = OracleState.from_wire(unpack(pack(state.to_wire())))
    assert again.step == 62 and again.snapshot.time == 1.25 and again.filter_state.fault is None
    np.testing.assert_array_equal(again.snapshot.state, state.snapshot.state)
    for name in ("command", "velocity", "target"):
        np.testing.assert_array_equal(getattr(again.filter_state, name), getattr(state.filter_state, name))
