"""Inverse dynamics model (training side): safetensors checkpoints (round trip, tamper, format) and training on a tiny
synthetic dataset (learning, normalisation, split, determinism, resume).

The synthetic dataset makes the IDM's job learnable: a bright square moves across the image, its column and row
following joints 0 and 1 of the action, so frames determine the action.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pytest
import torch
from hypothesis import settings
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from torch import nn

from eva_runtime.idm.checkpoint import (
    CheckpointError,
    TrainingState,
    file_sha256,
    load_checkpoint,
    save_checkpoint,
)
from eva_runtime.idm.dataset import IdmDataset, load_episodes
from eva_runtime.idm.network import InverseDynamicsModel
from eva_runtime.idm.train import TrainSettings, evaluate_idm, train_idm
from eva_runtime.records.hdf5_episodes import list_episodes, read_episode
from tests.idm_helpers import IMAGE, pixels, tiny_config, tiny_settings, write_synthetic_dataset

# --------------------------------------------------------------------------------------------------- helpers


def assert_same_weights(a: nn.Module, b: nn.Module) -> None:
    first, second = a.state_dict(), b.state_dict()
    assert first.keys() == second.keys()
    for name in first:
        assert torch.equal(first[name], second[name]), f"{name} differs"


class Run(NamedTuple):
    settings: TrainSettings
    model: InverseDynamicsModel
    history: list[dict]


@pytest.fixture(scope="module")
def dataset_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("idm_data")
    write_synthetic_dataset(directory)
    return directory


@pytest.fixture(scope="module")
def trained_run(dataset_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Run:
    settings = tiny_settings(dataset_dir, tmp_path_factory.mktemp("idm_run"), steps=200, eval_every=100)
    model, history = train_idm(settings, tiny_config())
    return Run(settings, model, history)


# --------------------------------------------------------------------------------------------------- network


@settings(max_examples=50, deadline=None)
def _saved_checkpoint(directory: Path) -> tuple[Path, InverseDynamicsModel]:
    torch.manual_seed(0)
    model = InverseDynamicsModel(tiny_config())
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model.normalized(pixels(2, 9, IMAGE, IMAGE)).sum().backward()
    optimizer.step()
    state = TrainingState(step=1, epoch=0, data_digest="abc", numpy_rng=None, history=[{"step": 1}])
    return save_checkpoint(directory / "ckpt.safetensors", model, optimizer, state), model


def test_checkpoint_round_trip(tmp_path: Path) -> None:
    path, model = _saved_checkpoint(tmp_path)
    assert Path(str(path) + ".sha256").read_text().strip() == file_sha256(path)
    loaded, optimizer, state = load_checkpoint(path, torch.optim.AdamW, lr=1e-3)
    assert loaded.config == model.config
    assert_same_weights(loaded, model)
    assert (state.step, state.epoch, state.data_digest, state.history) == (1, 0, "abc", [{"step": 1}])
    assert optimizer is not None
    slots = optimizer.state[next(iter(loaded.parameters()))]
    assert float(slots["step"]) == 1.0 and float(slots["exp_avg"].abs().sum()) > 0


def test_tampered_checkpoint_is_refused(tmp_path: Path) -> None:
    path, _ = _saved_checkpoint(tmp_path)
    data = bytearray(path.read_bytes())
    data[-5] ^= 0x01
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="SHA-256"):
        load_checkpoint(path)


def test_checkpoint_without_sidecar_is_refused(tmp_path: Path) -> None:
    path, _ = _saved_checkpoint(tmp_path)
    Path(str(path) + ".sha256").unlink()
    with pytest.raises(CheckpointError, match="sha256"):
        load_checkpoint(path)
    with pytest.raises(CheckpointError, match="no such checkpoint"):
        load_checkpoint(tmp_path / "absent.safetensors")


def _rewrite_metadata(path: Path, **changes: str) -> None:
    with safe_open(str(path), framework="pt") as handle:
        metadata = dict(handle.metadata())
    tensors = load_file(str(path))
    save_file(tensors, str(path), metadata={**metadata, **changes})
    Path(str(path) + ".sha256").write_text(file_sha256(path) + "\n")


def test_checkpoint_config_not_matching_weights_is_refused(tmp_path: Path) -> None:
    path, model = _saved_checkpoint(tmp_path)
    _rewrite_metadata(path, config=model.config.model_copy(update={"width": 16}).to_json())
    with pytest.raises(CheckpointError, match="do not match"):
        load_checkpoint(path)


def test_checkpoint_of_another_format_is_refused(tmp_path: Path) -> None:
    path, _ = _saved_checkpoint(tmp_path)
    _rewrite_metadata(path, format="something-else")
    with pytest.raises(CheckpointError, match="format"):
        load_checkpoint(path)


# --------------------------------------------------------------------------------------------------- training


def test_training_reduces_validation_error(trained_run: Run) -> None:
    settings, model, history = trained_run
    split = json.loads((settings.out / "split.json").read_text())
    config = model.config
    validation = IdmDataset(load_episodes([settings.data / name for name in split["validation"]], config), config)
    torch.manual_seed(settings.seed)
    untrained = InverseDynamicsModel(config)  # the same normalised config and initialisation training started from
    before = evaluate_idm(untrained, validation, settings)
    after = evaluate_idm(model, validation, settings)
    assert after["samples"] == before["samples"] == 24
    assert after["arm_mae"] < 0.5 * before["arm_mae"], (before, after)
    assert after["mae"][0] < before["mae"][0] and after["mae"][1] < before["mae"][1]
    assert history[-1]["validation"] == after


def test_training_normalises_with_training_episodes_only(trained_run: Run) -> None:
    settings, model, _ = trained_run
    split = json.loads((settings.out / "split.json").read_text())
    actions = np.concatenate([read_episode(settings.data / name).action for name in split["train"]])
    np.testing.assert_allclose(model.config.action_mean, actions.mean(axis=0), atol=1e-9)
    np.testing.assert_allclose(model.config.action_std, np.maximum(actions.std(axis=0), 1e-3), atol=1e-9)


def test_training_writes_checkpoints_metrics_and_split(trained_run: Run) -> None:
    settings, model, history = trained_run
    out = settings.out
    for name in ("last.safetensors", "best.safetensors"):
        assert (out / name).is_file()
        assert (out / f"{name}.sha256").read_text().strip() == file_sha256(out / name)
    lines = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [line["step"] for line in lines] == [100, 200]
    assert lines == json.loads(json.dumps(history))
    last, optimizer, state = load_checkpoint(out / "last.safetensors", torch.optim.AdamW, lr=1e-3)
    assert state.step == 200 and optimizer is not None
    assert_same_weights(last, model)
    _, _, best_state = load_checkpoint(out / "best.safetensors")
    best_step = min(history, key=lambda report: report["validation"]["arm_mae"])["step"]
    assert best_state.step == best_step


def test_validation_episodes_are_disjoint_from_training(trained_run: Run) -> None:
    settings, _, _ = trained_run
    split = json.loads((settings.out / "split.json").read_text())
    train, validation = set(split["train"]), set(split["validation"])
    assert len(validation) == 1 and len(train) == 3
    assert not train & validation
    assert train | validation == {path.name for path in list_episodes(settings.data)}


def test_training_is_deterministic_for_a_seed(dataset_dir: Path, tmp_path: Path) -> None:
    first, _ = train_idm(tiny_settings(dataset_dir, tmp_path / "a"), tiny_config())
    second, _ = train_idm(tiny_settings(dataset_dir, tmp_path / "b"), tiny_config())
    assert_same_weights(first, second)
    torch.manual_seed(0)
    initial = InverseDynamicsModel(first.config)
    assert not torch.equal(initial.head[0].weight, first.head[0].weight)  # it did train
    other, _ = train_idm(tiny_settings(dataset_dir, tmp_path / "c", seed=1), tiny_config())
    assert not torch.equal(other.head[0].weight, first.head[0].weight)


class _InterruptedError(Exception):
    pass


def test_resumed_training_equals_an_uninterrupted_run(dataset_dir: Path, tmp_path: Path) -> None:
    # An N-step run stopped after its checkpoint at N/2 (the schedule depends on N, so it is the same N-step run),
    # then resumed, must end bit-identical to the N-step run that never stopped.
    steps = 12
    uninterrupted, full_history = train_idm(tiny_settings(dataset_dir, tmp_path / "full", steps=steps), tiny_config())

    def stop_at_half(step: int, loss: float, report: dict | None) -> None:
        if step == steps // 2:
            raise _InterruptedError

    settings = tiny_settings(dataset_dir, tmp_path / "resumed", steps=steps)
    with pytest.raises(_InterruptedError):
        train_idm(settings, tiny_config(), on_progress=stop_at_half)
    assert load_checkpoint(settings.out / "last.safetensors")[2].step == steps // 2

    seen: list[int] = []
    resumed, history = train_idm(settings, tiny_config(), resume=True, on_progress=lambda s, *_: seen.append(s))
    assert seen == list(range(steps // 2 + 1, steps + 1))  # it continued, it did not start again
    assert_same_weights(resumed, uninterrupted)
    assert history == full_history


def test_resume_on_different_data_is_refused(dataset_dir: Path, tmp_path: Path) -> None:
    settings = tiny_settings(dataset_dir, tmp_path / "run", steps=4, eval_every=4)
    train_idm(settings, tiny_config())
    other = tmp_path / "other_data"
    write_synthetic_dataset(other, seed=5)
    with pytest.raises(ValueError, match="other data"):
        train_idm(tiny_settings(other, settings.out, steps=8, eval_every=4), tiny_config(), resume=True)


def test_training_needs_two_episodes(tmp_path: Path) -> None:
    write_synthetic_dataset(tmp_path / "data", episodes=1)
    with pytest.raises(ValueError, match="at least 2 episodes"):
        train_idm(tiny_settings(tmp_path / "data", tmp_path / "out"), tiny_config())
