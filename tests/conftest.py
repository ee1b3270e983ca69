"""Shared fixtures: the repository's embodiment files, the safety limits derived from them, and a real exported IDM."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

from eva_runtime.embodiment import Embodiment, load_embodiment
from eva_runtime.safety import SafetyLimits

REPO = Path(__file__).resolve().parents[1]
CALIBRATION = REPO / "calibration"

# CI replays the same generated cases every run (a red CI must be reproducible); locally the default profile
# explores new cases each run.
settings.register_profile(
    "ci", derandomize=True, deadline=None, suppress_health_check=[HealthCheck.too_slow], print_blob=True
)
settings.register_profile("dev", deadline=None, suppress_health_check=[HealthCheck.too_slow], print_blob=True)
settings.load_profile("ci" if __import__("os").environ.get("CI") else "dev")


@pytest.fixture(params=["aloha_sim", "cobot_magic"])
def embodiment(request: pytest.FixtureRequest) -> Embodiment:
    return load_embodiment(CALIBRATION / f"{request.param}.yaml")


@pytest.fixture
def limits(embodiment: Embodiment) -> SafetyLimits:
    return SafetyLimits.from_embodiment(embodiment)


@pytest.fixture(scope="session")
def idm_onnx(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real exported IDM for the simulated ALOHA (a few steps on the synthetic square dataset), built once."""
    import dataclasses

    from eva_runtime.idm.export import export_idm
    from eva_runtime.idm.train import train_idm
    from eva_runtime.records.hdf5_episodes import episode_path, list_episodes, read_episode, write_episode
    from tests.idm_helpers import tiny_config, tiny_settings, write_synthetic_dataset

    robot = load_embodiment(CALIBRATION / "aloha_sim.yaml")
    synthetic = tmp_path_factory.mktemp("bundle_synthetic")
    data = tmp_path_factory.mktemp("bundle_data")
    for index, path in enumerate(write_synthetic_dataset(synthetic, episodes=3, frames=12)):
        episode = dataclasses.replace(read_episode(path), joint_names=robot.joint_names)
        write_episode(episode_path(data, index), episode)
    assert len(list_episodes(data)) == 3
    settings = tiny_settings(data, tmp_path_factory.mktemp("bundle_run"), steps=2, eval_every=2, held_out=0.34)
    train_idm(settings, tiny_config(joint_names=robot.joint_names))
    return export_idm(settings.out / "last.safetensors", tmp_path_factory.mktemp("bundle_onnx") / "model.onnx").path
