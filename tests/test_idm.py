"""Inverse dynamics model (training side): the spatial-softmax network, frame windows, configuration validation,
augmentation, safetensors checkpoints, and training on a tiny synthetic dataset (learning, determinism, resume).

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
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from torch import nn

from eva_runtime.idm.augment import Augmentation, augment
from eva_runtime.idm.checkpoint import (
    CheckpointError,
    TrainingState,
    file_sha256,
    load_checkpoint,
    save_checkpoint,
)
from eva_runtime.idm.config import IdmConfig
from eva_runtime.idm.dataset import IdmDataset, load_episodes
from eva_runtime.idm.network import InverseDynamicsModel, ResNetBackbone, SmallBackbone, SpatialSoftmax
from eva_runtime.idm.train import TrainSettings, evaluate_idm, train_idm
from eva_runtime.idm.windows import stack_windows, window_indices
from eva_runtime.records.hdf5_episodes import list_episodes, read_episode
from tests.idm_helpers import IMAGE, tiny_config, tiny_settings, write_synthetic_dataset

# --------------------------------------------------------------------------------------------------- helpers


def assert_same_weights(a: nn.Module, b: nn.Module) -> None:
    first, second = a.state_dict(), b.state_dict()
    assert first.keys() == second.keys()
    for name in first:
        assert torch.equal(first[name], second[name]), f"{name} differs"


def pixels(batch: int, channels: int, height: int, width: int, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.rand(batch, channels, height, width, generator=generator) * 255


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
@given(st.data())
def test_spatial_softmax_finds_a_sharp_peak(data: st.DataObject) -> None:
    channels = data.draw(st.integers(1, 4), label="channels")
    height = data.draw(st.integers(2, 12), label="height")
    width = data.draw(st.integers(2, 12), label="width")
    peaks = data.draw(
        st.lists(
            st.tuples(st.integers(0, height - 1), st.integers(0, width - 1)), min_size=channels, max_size=channels
        ),
        label="peaks",
    )
    features = torch.zeros(1, channels, height, width)
    for channel, (row, column) in enumerate(peaks):
        features[0, channel, row, column] = 50.0
    with torch.no_grad():
        out = SpatialSoftmax(channels, height, width)(features)
    xs, ys = torch.linspace(-1, 1, width), torch.linspace(-1, 1, height)
    expected = torch.tensor([xs[c] for _, c in peaks] + [ys[r] for r, _ in peaks])
    assert out.shape == (1, 2 * channels)
    torch.testing.assert_close(out[0], expected, atol=1e-3, rtol=0)


def test_spatial_softmax_of_a_flat_map_is_the_centre() -> None:
    out = SpatialSoftmax(3, 5, 7)(torch.full((2, 3, 5, 7), 4.0))
    torch.testing.assert_close(out, torch.zeros(2, 6), atol=1e-6, rtol=0)


def test_spatial_softmax_temperature_is_learnable() -> None:
    layer = SpatialSoftmax(4, 6, 6)
    assert "log_temperature" in dict(layer.named_parameters())
    features = torch.randn(2, 4, 6, 6, generator=torch.Generator().manual_seed(1))
    (layer(features) * torch.linspace(-1, 2, 8)).sum().backward()
    gradient = layer.log_temperature.grad
    assert gradient is not None and torch.all(torch.isfinite(gradient)) and float(gradient.abs().sum()) > 0
    # A higher temperature flattens the softmax, pulling the keypoints towards the centre.
    with torch.no_grad():
        sharp = layer(features).abs().sum()
        layer.log_temperature.fill_(3.0)
        assert layer(features).abs().sum() < sharp


@pytest.mark.parametrize("window", [0, 1, 2])
@pytest.mark.parametrize("image_size", [(32, 32), (24, 40), (33, 17)])
def test_model_output_shape(window: int, image_size: tuple[int, int]) -> None:
    config = tiny_config(window=window, image_size=image_size)
    model = InverseDynamicsModel(config).eval()
    assert isinstance(model.backbone, SmallBackbone)
    assert config.input_channels == 3 * (2 * window + 1)
    out = model(pixels(3, config.input_channels, *image_size))
    assert out.shape == (3, 14) and out.dtype == torch.float32
    assert torch.all(torch.isfinite(out))


def test_model_forward_denormalises() -> None:
    mean = tuple(0.1 * i - 0.5 for i in range(14))
    std = tuple(0.2 + 0.05 * i for i in range(14))
    model = InverseDynamicsModel(tiny_config(action_mean=mean, action_std=std)).eval()
    assert torch.equal(model.action_mean, torch.tensor(mean, dtype=torch.float32))
    assert torch.equal(model.action_std, torch.tensor(std, dtype=torch.float32))
    inputs = pixels(4, 9, IMAGE, IMAGE)
    with torch.no_grad():
        normalised = model.normalized(inputs)
        actions = model(inputs)
    torch.testing.assert_close(actions, normalised * torch.tensor(std) + torch.tensor(mean), atol=1e-6, rtol=1e-6)
    assert not torch.allclose(actions, normalised, atol=1e-2)


def test_model_without_normalisation_is_identity_scaled() -> None:
    model = InverseDynamicsModel(tiny_config()).eval()
    inputs = pixels(2, 9, IMAGE, IMAGE)
    with torch.no_grad():
        assert torch.equal(model(inputs), model.normalized(inputs))


@pytest.mark.parametrize("backbone", ["resnet18", "resnet50"])
def test_resnet_backbones_build_and_run(backbone: str) -> None:
    config = tiny_config(backbone=backbone, image_size=(64, 64), window=0, hidden=(32,))
    torch.manual_seed(0)
    model = InverseDynamicsModel(config).eval()
    assert isinstance(model.backbone, ResNetBackbone)
    with torch.no_grad():
        out = model(pixels(1, config.input_channels, 64, 64))
    assert out.shape == (1, 14)
    assert torch.all(torch.isfinite(out))


def test_model_output_depends_on_the_image() -> None:
    torch.manual_seed(0)
    model = InverseDynamicsModel(tiny_config()).eval()
    with torch.no_grad():
        a, b = model(pixels(1, 9, IMAGE, IMAGE, seed=1)), model(pixels(1, 9, IMAGE, IMAGE, seed=2))
    assert not torch.allclose(a, b)


# --------------------------------------------------------------------------------------------------- windows


def test_window_indices_clamp_at_both_ends() -> None:
    expected = [[0, 0, 2], [0, 1, 3], [0, 2, 4], [1, 3, 4], [2, 4, 4]]
    assert window_indices(5, 1, 2).tolist() == expected
    assert window_indices(3, 0).tolist() == [[0], [1], [2]]
    assert window_indices(2, 2).tolist() == [[0, 0, 0, 1, 1], [0, 0, 1, 1, 1]]


def test_stack_windows_channel_order_is_camera_time_rgb() -> None:
    cameras, length, window, step = 2, 5, 1, 2
    video = np.zeros((cameras, length, 2, 3, 3), dtype=np.uint8)
    for camera in range(cameras):
        for t in range(length):
            for rgb in range(3):
                video[camera, t, :, :, rgb] = 100 * camera + 10 * t + rgb
    stacked = stack_windows(video, window, step)
    assert stacked.shape == (length, cameras * 3 * 3, 2, 3) and stacked.dtype == np.float32
    indices = window_indices(length, window, step)
    for centre in range(length):
        for camera in range(cameras):
            for offset in range(2 * window + 1):
                for rgb in range(3):
                    channel = camera * (2 * window + 1) * 3 + offset * 3 + rgb
                    value = 100 * camera + 10 * indices[centre, offset] + rgb
                    assert np.all(stacked[centre, channel] == value), (centre, channel)
    subset = stack_windows(video, window, step, centres=np.array([4, 0]))
    assert np.array_equal(subset, stacked[[4, 0]])


def test_dataset_windows_use_the_recording_to_idm_frame_step(tmp_path: Path) -> None:
    # Recorded at 25 fps, decoded at 12.5 fps: the window around frame t is frames t-2, t, t+2 (clamped).
    write_synthetic_dataset(tmp_path, episodes=1, frames=6, fps=25.0)
    config = tiny_config()
    (episode,) = load_episodes(list_episodes(tmp_path), config)
    assert episode.step == 2
    dataset = IdmDataset([episode], config)
    batch, actions = dataset.batch(np.arange(6))
    video = read_episode(list_episodes(tmp_path)[0]).images["cam_high"]
    for t in range(6):
        for offset, source in enumerate((max(t - 2, 0), t, min(t + 2, 5))):
            assert np.array_equal(batch[t, 3 * offset : 3 * offset + 3], np.moveaxis(video[source], -1, 0))
    assert np.array_equal(actions, episode.actions.astype(np.float32))
    with pytest.raises(ValueError, match="not a multiple"):
        load_episodes(list_episodes(tmp_path), tiny_config(fps=10.0))


# --------------------------------------------------------------------------------------------------- config


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"action_mean": (0.0,) * 3, "action_std": (1.0,) * 14}, "needs 14 values"),
        ({"action_mean": (0.0,) * 14, "action_std": (1.0,) * 13}, "needs 14 values"),
        ({"action_mean": (0.0,) * 14, "action_std": ()}, "come together"),
        ({"action_mean": (0.0,) * 14, "action_std": (1.0,) * 13 + (0.0,)}, "positive"),
        ({"action_mean": (0.0,) * 14, "action_std": (-1.0,) + (1.0,) * 13}, "positive"),
        ({"gripper_indices": (6, 14)}, "outside"),
        ({"gripper_indices": (-1,)}, "outside"),
        ({"image_size": (15, 64)}, "too small"),
        ({"image_size": (64, 8)}, "too small"),
        ({"window": 9}, "less than or equal"),
        ({"fps": 0.0}, "greater than"),
        ({"cameras": ()}, "at least 1"),
        ({"backbone": "vgg"}, "small"),
        ({"unknown_field": 1}, "Extra inputs"),
    ],
)
def test_config_validation_errors(overrides: dict[str, object], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        tiny_config(**overrides)


def test_config_std_without_mean_is_checked() -> None:
    """std without mean, or of the wrong length, is refused at validation (it once passed and then either failed at
    forward or, with one value, silently scaled every joint by it)."""
    with pytest.raises(ValidationError, match="needs 14 values"):
        tiny_config(action_std=(1.0, 2.0))


def test_config_json_round_trip() -> None:
    config = tiny_config(
        cameras=("cam_high", "cam_left_wrist"),
        image_size=(48, 40),
        window=2,
        fps=6.25,
        backbone="resnet18",
        dropout=0.25,
        action_mean=tuple(0.1 * i for i in range(14)),
        action_std=tuple(1.0 / (i + 1) for i in range(14)),
    )
    text = config.to_json()
    assert json.loads(text)["image_size"] == [48, 40]
    restored = IdmConfig.from_json(text)
    assert restored == config
    assert restored.input_channels == 2 * 5 * 3 and restored.frames_per_sample == 5 and restored.dof == 14
    with pytest.raises(ValidationError):
        IdmConfig.from_json(json.dumps({**json.loads(text), "window": -1}))


# --------------------------------------------------------------------------------------------------- augmentation


def test_augment_shape_range_and_input_untouched() -> None:
    inputs = pixels(4, 9, 16, 16)
    inputs[0] = 255.0  # brightness and gain push above 255: must be clamped
    inputs[1] = 0.0
    copy = inputs.clone()
    out = augment(inputs, Augmentation(brightness=0.5, noise_std=10.0), torch.Generator().manual_seed(0))
    assert out.shape == inputs.shape and out.dtype == torch.float32
    assert float(out.min()) >= 0.0 and float(out.max()) <= 255.0
    assert torch.equal(inputs, copy)
    assert not torch.allclose(out, inputs)


def test_augment_is_deterministic_for_a_generator_seed() -> None:
    inputs = pixels(3, 9, 16, 16)
    spec = Augmentation()
    first = augment(inputs, spec, torch.Generator().manual_seed(7))
    second = augment(inputs, spec, torch.Generator().manual_seed(7))
    other = augment(inputs, spec, torch.Generator().manual_seed(8))
    assert torch.equal(first, second)
    assert not torch.equal(first, other)


@pytest.mark.parametrize("seed", range(4))
def test_augment_applies_the_same_change_to_every_frame_of_a_window(seed: int) -> None:
    frame = pixels(5, 3, 16, 16, seed=seed)
    window = frame.repeat(1, 3, 1, 1)  # three identical frames per sample
    spec = Augmentation(brightness=0.3, contrast=0.3, channel_gain=0.1, shift_px=3, blur_prob=0.5, noise_std=0.0)
    out = augment(window, spec, torch.Generator().manual_seed(seed))
    assert torch.equal(out[:, 0:3], out[:, 3:6]) and torch.equal(out[:, 3:6], out[:, 6:9])
    assert not torch.allclose(out, window, atol=1.0)


def test_augment_shift_is_a_pure_translation() -> None:
    inputs = pixels(6, 6, 12, 12)
    spec = Augmentation(brightness=0, contrast=0, channel_gain=0, shift_px=2, blur_prob=0, noise_std=0)
    out = augment(inputs, spec, torch.Generator().manual_seed(3))
    padded = torch.nn.functional.pad(inputs, (2, 2, 2, 2), mode="replicate")
    shifts = set()  # zero colour ranges still compute (x - mean) + mean: equal up to float rounding
    for sample in range(len(inputs)):
        matches = [
            (y, x)
            for y in range(5)
            for x in range(5)
            if torch.allclose(out[sample], padded[sample, :, y : y + 12, x : x + 12], atol=1e-3, rtol=0)
        ]
        assert matches, f"sample {sample} is not a translated copy"
        shifts.add(matches[0])
    assert len(shifts) > 1  # each sample draws its own shift


# --------------------------------------------------------------------------------------------------- checkpoints


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
