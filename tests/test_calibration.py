"""Calibration from data: joint caps from synthetic demonstrations, P0 from rollouts, and the CLI end to end."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from eva_runtime.calibration import calibrate_limits, estimate_p0, load_rollouts, read_limits_yaml, write_limits_yaml
from eva_runtime.cli import app
from eva_runtime.embodiment import load_embodiment
from eva_runtime.records.hdf5_episodes import Episode, dataset_digest, episode_path, list_episodes, write_episode
from eva_runtime.reward import RewardConfig, executability

CALIBRATION = Path(__file__).resolve().parents[1] / "calibration"
ALOHA = load_embodiment(CALIBRATION / "aloha_sim.yaml")
FPS = 50.0
runner = CliRunner()


def sinusoid_actions(seconds: float, phase: float, amplitudes: np.ndarray, omega: float) -> np.ndarray:
    """Each joint k follows amplitudes[k] * sin(omega t + phase) around the middle of its range."""
    t = np.arange(int(seconds * FPS))[:, None] / FPS
    low, high = ALOHA.position_limits()
    return (low + high) / 2 + amplitudes * np.sin(omega * t + phase)


def make_episode(actions: np.ndarray, fps: float = FPS) -> Episode:
    return Episode(
        images={},
        qpos=actions,
        action=actions,
        qvel=None,
        fps=fps,
        embodiment=ALOHA.name,
        task="synthetic",
        instruction="move",
        joint_names=ALOHA.joint_names,
    )


OMEGA = 2 * np.pi * 0.5
# joint 0 moves slowly (caps from data), joint 1 fast (velocity above the hard cap), joint 2 never moves.
AMPLITUDES = np.zeros(14)
AMPLITUDES[0], AMPLITUDES[1] = 0.4, 2.0
AMPLITUDES[7] = 0.5


def test_limits_recover_sinusoid_caps_clamp_at_hard_caps_and_floor_still_joints() -> None:
    episodes = [make_episode(sinusoid_actions(10.0, phase, AMPLITUDES, OMEGA)) for phase in (0.0, 0.7)]
    episodes.append((sinusoid_actions(6.0, 2.1, AMPLITUDES, OMEGA), FPS))  # bare (actions, fps) works too
    result = calibrate_limits(episodes, ALOHA, percentile=99.5, margin=1.2)
    joints = result["joints"]
    # The 99.5th percentile of |cos| over uniform phase is cos(0.005 pi / 2) ~ 0.99997: the peak, A omega^k.
    for name, amplitude in (("left_waist", 0.4), ("right_waist", 0.5)):
        for key, power in (("velocity_max", 1), ("acceleration_max", 2), ("jerk_max", 3)):
            assert joints[name][key] == pytest.approx(1.2 * amplitude * OMEGA**power, rel=0.01), (name, key)
        assert joints[name]["sources"] == {"velocity": "data", "acceleration": "data", "jerk": "data"}
    fast = joints["left_shoulder"]  # 2.0 * pi = 6.3 rad/s > 2.67; 2 pi^2 = 19.7 rad/s^2 > 10
    assert fast["velocity_max"] == ALOHA.joints[1].velocity_max and fast["sources"]["velocity"] == "hard_cap"
    assert fast["acceleration_max"] == ALOHA.joints[1].acceleration_max
    still = joints["left_elbow"]
    assert still["velocity_max"] == pytest.approx(0.05 * 2.67)
    assert still["acceleration_max"] == pytest.approx(0.05 * 10.0)
    assert still["sources"] == {"velocity": "floor", "acceleration": "floor", "jerk": "floor"}
    # The gripper has no hard jerk cap: its floor refers to the reward's jerk scale (a_max * fps) / 2.
    assert joints["left_gripper"]["jerk_max"] == pytest.approx(0.05 * 10.0 * FPS / 2)
    assert result["episodes"] == 3
    assert result["samples"] == {"frames": 1300, "velocity": 1297, "acceleration": 1294, "jerk": 1291}


@settings(max_examples=30)
@given(
    seed=st.integers(0, 2**32 - 1),
    noise=st.sampled_from([1e-4, 0.01, 0.3]),
    percentile=st.floats(50.0, 100.0),
    margin=st.floats(0.5, 5.0),
)
def test_limits_never_exceed_the_hard_caps(seed: int, noise: float, percentile: float, margin: float) -> None:
    rng = np.random.default_rng(seed)
    episodes = [(rng.normal(0, noise, size=(int(rng.integers(4, 60)), 14)).cumsum(axis=0), FPS) for _ in range(2)]
    result = calibrate_limits(episodes, ALOHA, percentile=percentile, margin=margin)
    for joint in ALOHA.joints:
        entry = result["joints"][joint.name]
        assert 0 < entry["velocity_max"] <= joint.velocity_max
        assert 0 < entry["acceleration_max"] <= joint.acceleration_max
        assert entry["jerk_max"] > 0
        if joint.jerk_max is not None:
            assert entry["jerk_max"] <= joint.jerk_max


def write_dataset(directory: Path, count: int = 3, frames: int = 120, fps: float = 25.0) -> list[Path]:
    rng = np.random.default_rng(7)
    for index in range(count):
        actions = sinusoid_actions(frames / FPS, float(index), AMPLITUDES, OMEGA)
        actions += rng.normal(0, 1e-3, size=actions.shape)
        write_episode(episode_path(directory, index), make_episode(actions, fps=fps))
    return list_episodes(directory)


def test_limits_yaml_round_trips_with_provenance(tmp_path: Path) -> None:
    paths = write_dataset(tmp_path / "data")
    result = calibrate_limits(paths, ALOHA, percentile=99.0, margin=1.5)
    out = write_limits_yaml(tmp_path / "limits.yaml", result)
    data = read_limits_yaml(out)
    provenance = data["provenance"]
    assert provenance["data_digest"] == dataset_digest(paths)
    assert (provenance["percentile"], provenance["margin"], provenance["episodes"]) == (99.0, 1.5, 3)
    assert provenance["samples"]["frames"] == 360 and provenance["fps"] == [25.0]
    assert data["embodiment"] == "aloha_sim"
    assert list(data["joints"]) == list(ALOHA.joint_names)
    assert data["joints"]["left_waist"]["velocity_max"] == pytest.approx(result["joints"]["left_waist"]["velocity_max"])
    (tmp_path / "other.yaml").write_text("format: something-else\n")
    with pytest.raises(ValueError, match="not a limits file"):
        read_limits_yaml(tmp_path / "other.yaml")


def test_limits_refuse_another_robots_episodes() -> None:
    episode = make_episode(np.zeros((10, 14)))
    foreign = Episode(**{**episode.__dict__, "embodiment": "cobot_magic"})
    with pytest.raises(ValueError, match="cobot_magic"):
        calibrate_limits([foreign], ALOHA)


def test_p0_is_the_mean_penalty_of_the_rollouts() -> None:
    config = RewardConfig.from_embodiment(ALOHA, fps=16.0)
    rng = np.random.default_rng(2)
    batches = [rng.normal(0, 0.02, size=(8, 49, 14)).cumsum(axis=1), rng.normal(0, 0.05, size=(30, 14)).cumsum(0)]
    estimate = estimate_p0(batches, config)
    penalties = [executability(r, config).penalty for r in [*batches[0], batches[1]]]
    assert estimate.n_rollouts == 9
    assert estimate.p0 == pytest.approx(np.mean(penalties), rel=1e-12) == estimate.mean
    assert estimate.p10 <= estimate.median <= estimate.p90
    assert estimate_p0(batches, config, statistic="median").p0 == pytest.approx(np.median(penalties))
    with pytest.raises(ValueError, match="P0 must be > 0"):
        estimate_p0([np.zeros((2, 10, 14))], config)
    with pytest.raises(ValueError, match="min_steps"):
        estimate_p0([np.zeros((2, 3, 14))], config)


def test_rollouts_from_episodes_are_horizon_windows_at_the_requested_rate(tmp_path: Path) -> None:
    write_dataset(tmp_path / "data", count=2, frames=120, fps=25.0)
    own = load_rollouts([tmp_path / "data"], ALOHA, horizon=49)
    assert own.fps == 25.0 and [b.shape for b in own.batches] == [(2, 49, 14)] * 2
    # 120 frames at 25 fps span 4.76 s: 77 samples at 16 fps, one 49-step window per episode.
    resampled = load_rollouts([tmp_path / "data"], ALOHA, fps=16.0, horizon=49)
    assert resampled.fps == 16.0 and resampled.count == 2
    np.save(tmp_path / "rollouts.npy", np.zeros((3, 20, 14)))
    with pytest.raises(ValueError, match="carry no frame rate"):
        load_rollouts([tmp_path / "rollouts.npy"], ALOHA)
    mixed = load_rollouts([tmp_path / "rollouts.npy", tmp_path / "data"], ALOHA, fps=16.0)
    assert mixed.count == 5 and len(mixed.files) == 3


def test_cli_calibrate_limits_end_to_end(tmp_path: Path) -> None:
    paths = write_dataset(tmp_path / "data")
    out = tmp_path / "limits.yaml"
    result = runner.invoke(app, ["calibrate", "limits", "--data", str(tmp_path / "data"), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "left_waist" in result.output and "floor" in result.output
    data = read_limits_yaml(out)
    assert data["provenance"]["data_digest"] == dataset_digest(paths)
    assert data["provenance"]["percentile"] == 99.5 and data["provenance"]["margin"] == 1.2
    empty = runner.invoke(app, ["calibrate", "limits", "--data", str(tmp_path), "--out", str(tmp_path / "x.yaml")])
    assert empty.exit_code == 2 and "no episode_<n>.hdf5" in empty.output


def test_cli_calibrate_reward_end_to_end(tmp_path: Path) -> None:
    write_dataset(tmp_path / "data", frames=200)
    out = tmp_path / "p0.yaml"
    args = ["calibrate", "reward", "--rollouts", str(tmp_path / "data"), "--horizon", "49", "--out", str(out)]
    result = runner.invoke(app, [*args, "--embodiment", str(CALIBRATION / "aloha_sim.yaml")])
    assert result.exit_code == 0, result.output
    written = yaml.safe_load(out.read_text())
    loaded = load_rollouts([tmp_path / "data"], ALOHA, horizon=49)
    expected = estimate_p0(loaded.batches, RewardConfig.from_embodiment(ALOHA, fps=25.0))
    assert written["p0"] == pytest.approx(expected.p0) and written["n_rollouts"] == 12
    assert written["fps"] == 25.0 and written["reward_config"]["dt"] == pytest.approx(0.04)
    assert f"P0 = {expected.p0:.6g}" in result.output
    rng = np.random.default_rng(0)
    np.save(tmp_path / "r.npy", rng.normal(0, 0.01, size=(4, 49, 14)).cumsum(axis=1))
    no_fps = runner.invoke(app, ["calibrate", "reward", "--rollouts", str(tmp_path / "r.npy")])
    assert no_fps.exit_code == 2 and "no frame rate" in no_fps.output
    npy = runner.invoke(app, ["calibrate", "reward", "--rollouts", str(tmp_path / "r.npy"), "--fps", "16"])
    assert npy.exit_code == 0, npy.output
    assert "P0 = " in npy.output and not (tmp_path / "x.yaml").exists()
