"""Inverse dynamics model (network side): the spatial-softmax network, backbones, frame windows, configuration
validation and augmentation."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from eva_runtime.idm.augment import Augmentation, augment
from eva_runtime.idm.config import IdmConfig
from eva_runtime.idm.dataset import IdmDataset, load_episodes
from eva_runtime.idm.network import InverseDynamicsModel, ResNetBackbone, SmallBackbone, SpatialSoftmax
from eva_runtime.idm.windows import stack_windows, window_indices
from eva_runtime.records.hdf5_episodes import list_episodes, read_episode
from tests.idm_helpers import IMAGE, pixels, tiny_config, write_synthetic_dataset


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
