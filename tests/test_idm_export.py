"""IDM deployment side: ONNX export (single file, parity check, metadata), the ONNX Runtime decoder (equality with
torch, batching, input validation, refusing wrong files) and the replay policy's interpolation to the control rate.
"""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper

from eva_runtime.file_hash import file_sha256
from eva_runtime.idm.checkpoint import load_checkpoint
from eva_runtime.idm.config import IdmConfig
from eva_runtime.idm.decoder import DecoderError, IdmDecoder
from eva_runtime.idm.export import ExportReport, ParityError, export_idm, read_metadata
from eva_runtime.idm.network import InverseDynamicsModel
from eva_runtime.idm.replay import ReplayPolicy
from eva_runtime.idm.train import train_idm
from eva_runtime.idm.windows import stack_windows
from eva_runtime.records.hdf5_episodes import dataset_digest, list_episodes, read_episode
from tests.idm_helpers import IMAGE, tiny_config, tiny_settings, write_synthetic_dataset


class Exported(NamedTuple):
    data: Path
    checkpoint: Path
    report: ExportReport
    model: InverseDynamicsModel  # the checkpoint's model, in eval mode
    videos: list[np.ndarray]  # (T, H, W, 3) uint8 per episode


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> Exported:
    data = tmp_path_factory.mktemp("idm_export_data")
    write_synthetic_dataset(data)
    settings = tiny_settings(data, tmp_path_factory.mktemp("idm_export_run"), steps=4, eval_every=4)
    train_idm(settings, tiny_config())
    checkpoint = settings.out / "last.safetensors"
    report = export_idm(checkpoint, tmp_path_factory.mktemp("idm_onnx") / "idm.onnx")
    model = load_checkpoint(checkpoint)[0].eval()
    videos = [read_episode(path).images["cam_high"] for path in list_episodes(data)]
    return Exported(data, checkpoint, report, model, videos)


@pytest.fixture(scope="module")
def decoder(exported: Exported) -> IdmDecoder:
    return IdmDecoder(exported.report.path, expected_sha256=exported.report.sha256)


def torch_actions(model: InverseDynamicsModel, video: np.ndarray) -> np.ndarray:
    """The torch model on the clamped windows of one camera's (T, H, W, 3) video."""
    with torch.no_grad():
        return model(torch.from_numpy(stack_windows(video[None], model.config.window))).numpy()


# --------------------------------------------------------------------------------------------------- export


def test_export_writes_one_self_contained_file(exported: Exported) -> None:
    report = exported.report
    assert report.path.is_file()
    assert sorted(p.name for p in report.path.parent.iterdir()) == [report.path.name]  # no .onnx.data, no temp file
    assert report.sha256 == file_sha256(report.path)
    assert report.samples == 4 and report.provider == "CPUExecutionProvider"
    assert 0.0 <= report.max_abs_difference <= 1e-4
    graph = onnx.load(str(report.path))
    onnx.checker.check_model(graph)
    assert [i.name for i in graph.graph.input] == ["pixels"] and [o.name for o in graph.graph.output] == ["actions"]


def test_export_metadata(exported: Exported) -> None:
    metadata = read_metadata(exported.report.path)
    assert metadata["format"] == "eva-runtime/idm-onnx-v1"
    assert IdmConfig.from_json(metadata["config"]) == exported.model.config
    assert metadata["data_digest"] == dataset_digest(list_episodes(exported.data))
    assert metadata["checkpoint_sha256"] == file_sha256(exported.checkpoint)
    assert metadata["training_step"] == "4"


def test_export_parity_failure_writes_nothing(exported: Exported, tmp_path: Path) -> None:
    out = tmp_path / "refused.onnx"
    with pytest.raises(ParityError, match="differs from torch"):
        export_idm(exported.checkpoint, out, tolerance=-1.0)  # no difference can be <= -1
    assert list(tmp_path.iterdir()) == []


# --------------------------------------------------------------------------------------------------- decoder


def test_decoder_reads_config_and_provider(decoder: IdmDecoder, exported: Exported) -> None:
    assert decoder.provider == "CPUExecutionProvider"
    assert decoder.config == exported.model.config
    assert decoder.fps == 12.5
    assert decoder.metadata["checkpoint_sha256"] == file_sha256(exported.checkpoint)


def test_decoder_matches_torch(decoder: IdmDecoder, exported: Exported) -> None:
    for video in exported.videos[:2]:
        decoded = decoder.decode({"cam_high": video})
        assert decoded.shape == (len(video), 14) and decoded.dtype == np.float64
        np.testing.assert_allclose(decoded, torch_actions(exported.model, video), atol=1e-4, rtol=0)
    short = exported.videos[0][:1]  # a single frame: the whole window is that frame repeated
    np.testing.assert_allclose(
        decoder.decode({"cam_high": short}), torch_actions(exported.model, short), atol=1e-4, rtol=0
    )


def test_decoder_ignores_extra_cameras(decoder: IdmDecoder, exported: Exported) -> None:
    video = exported.videos[0]
    extra = np.zeros((3, 8, 8, 3), dtype=np.uint8)
    assert np.array_equal(decoder.decode({"cam_high": video, "cam_other": extra}), decoder.decode({"cam_high": video}))


def test_decode_batch_equals_separate_decodes(decoder: IdmDecoder, exported: Exported) -> None:
    rollouts = np.stack(exported.videos[:3])  # (G, T, H, W, 3)
    batched = decoder.decode_batch({"cam_high": rollouts})
    assert batched.shape == (3, rollouts.shape[1], 14)
    for g in range(3):
        np.testing.assert_allclose(batched[g], decoder.decode({"cam_high": rollouts[g]}), atol=1e-5, rtol=0)
    assert not np.allclose(batched[0], batched[1])
    with pytest.raises(DecoderError, match=r"\(G, T, H, W, 3\)"):
        decoder.decode_batch({"cam_high": rollouts[0]})


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_float_frames_decode_like_uint8(decoder: IdmDecoder, exported: Exported, dtype: type) -> None:
    video = exported.videos[1]
    assert np.array_equal(decoder.decode({"cam_high": video.astype(dtype)}), decoder.decode({"cam_high": video}))


def _bad_frames(case: str, video: np.ndarray) -> dict[str, np.ndarray]:
    if case == "missing camera":
        return {"cam_low": video}
    if case == "wrong image size":
        return {"cam_high": np.zeros((4, IMAGE, IMAGE + 8, 3), dtype=np.uint8)}
    if case == "wrong ndim":
        return {"cam_high": video[0]}
    if case == "four channels":
        return {"cam_high": np.zeros((4, IMAGE, IMAGE, 4), dtype=np.uint8)}
    if case == "nan":
        frames = video.astype(np.float32)
        frames[2, 3, 4, 1] = np.nan
        return {"cam_high": frames}
    if case == "infinite":
        frames = video.astype(np.float64)
        frames[0, 0, 0, 0] = np.inf
        return {"cam_high": frames}
    if case == "above 255":
        frames = video.astype(np.float32)
        frames[1, 1, 1, 1] = 255.5
        return {"cam_high": frames}
    if case == "negative":
        frames = video.astype(np.float32)
        frames[1, 1, 1, 1] = -0.5
        return {"cam_high": frames}
    if case == "uint16":
        return {"cam_high": video.astype(np.uint16)}
    if case == "int64":
        return {"cam_high": video.astype(np.int64)}
    if case == "no frames":
        return {"cam_high": video[:0]}
    raise AssertionError(case)


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("missing camera", r"missing camera\(s\) \['cam_high'\]"),
        ("wrong image size", r"cam_high: frames must be \(T, 32, 32, 3\)"),
        ("wrong ndim", r"cam_high: frames must be \(T, 32, 32, 3\)"),
        ("four channels", r"cam_high: frames must be \(T, 32, 32, 3\)"),
        ("nan", "NaN or infinite"),
        ("infinite", "NaN or infinite"),
        ("above 255", r"must lie in 0\.\.255"),
        ("negative", r"must lie in 0\.\.255"),
        ("uint16", "uint8 or float"),
        ("int64", "uint8 or float"),
        ("no frames", "no frames to decode"),
    ],
)
def test_decoder_refuses_bad_frames(decoder: IdmDecoder, exported: Exported, case: str, message: str) -> None:
    with pytest.raises(DecoderError, match=message):
        decoder.decode(_bad_frames(case, exported.videos[0]))


def test_decoder_refuses_empty_float_frames(decoder: IdmDecoder) -> None:
    """Zero float frames get the same DecoderError as zero uint8 frames (not numpy's error from an empty min())."""
    with pytest.raises(DecoderError, match="no frames to decode"):
        decoder.decode({"cam_high": np.zeros((0, IMAGE, IMAGE, 3), dtype=np.float32)})


def test_decode_batch_validates_each_rollout(decoder: IdmDecoder, exported: Exported) -> None:
    rollouts = np.stack(exported.videos[:2]).astype(np.float32)
    rollouts[1, 0, 0, 0, 0] = np.nan
    with pytest.raises(DecoderError, match="NaN"):
        decoder.decode_batch({"cam_high": rollouts})


def test_decoder_sha256_mismatch(exported: Exported) -> None:
    with pytest.raises(DecoderError, match="SHA-256"):
        IdmDecoder(exported.report.path, expected_sha256="0" * 64)


def test_decoder_refuses_missing_and_garbage_files(exported: Exported, tmp_path: Path) -> None:
    with pytest.raises(DecoderError, match="no such IDM file"):
        IdmDecoder(tmp_path / "absent.onnx")
    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(b"\x08\x07definitely not a protobuf model\xff\xfe" * 10)
    with pytest.raises(DecoderError, match="not a loadable ONNX model"):
        IdmDecoder(garbage)
    truncated = tmp_path / "truncated.onnx"
    data = exported.report.path.read_bytes()
    truncated.write_bytes(data[: len(data) // 2])
    with pytest.raises(DecoderError, match="not a loadable ONNX model"):
        IdmDecoder(truncated)


def test_decoder_refuses_onnx_without_idm_metadata(tmp_path: Path) -> None:
    node = helper.make_node("Identity", ["pixels"], ["actions"])
    graph = helper.make_graph(
        [node],
        "not_an_idm",
        [helper.make_tensor_value_info("pixels", TensorProto.FLOAT, ["batch", 9, IMAGE, IMAGE])],
        [helper.make_tensor_value_info("actions", TensorProto.FLOAT, ["batch", 9, IMAGE, IMAGE])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model)
    path = tmp_path / "plain.onnx"
    onnx.save(model, str(path))
    with pytest.raises(DecoderError, match="format None"):
        IdmDecoder(path)


# --------------------------------------------------------------------------------------------------- replay


def test_replay_policy_interpolates_to_the_control_rate() -> None:
    rng = np.random.default_rng(0)
    actions = rng.normal(size=(5, 14))
    policy = ReplayPolicy(actions, fps=12.5, control_rate_hz=50.0)
    commands = np.array([policy.act(None) for _ in range(4 * len(actions) + 6)])
    for k in range(len(actions)):
        assert np.array_equal(commands[4 * k], actions[k])
    for k in range(len(actions) - 1):
        np.testing.assert_allclose(commands[4 * k + 2], (actions[k] + actions[k + 1]) / 2, rtol=0, atol=1e-12)
        np.testing.assert_allclose(commands[4 * k + 1], 0.75 * actions[k] + 0.25 * actions[k + 1], rtol=0, atol=1e-12)
    for step in range(4 * (len(actions) - 1), len(commands)):
        assert np.array_equal(commands[step], actions[-1])  # holds the last action after the end


def test_replay_policy_reset_starts_again() -> None:
    actions = np.arange(3 * 14, dtype=np.float64).reshape(3, 14)
    policy = ReplayPolicy(actions, fps=12.5, control_rate_hz=50.0)
    for _ in range(7):
        policy.act(None)
    policy.reset(None, seed=0)
    assert np.array_equal(policy.act(None), actions[0])


def test_moving_average_keeps_length_levels_and_removes_alternating_jitter() -> None:
    from eva_runtime.idm.smoothing import moving_average

    ramp = np.linspace(0.0, 1.0, 9)[:, None] * np.ones((1, 3))
    assert np.allclose(moving_average(ramp, 3)[1:-1], ramp[1:-1])  # a straight line is unchanged inside
    jitter = ramp + 0.1 * (-1.0) ** np.arange(9)[:, None]
    smoothed = moving_average(jitter, 3)
    assert smoothed.shape == jitter.shape
    assert np.abs(smoothed - ramp)[1:-1].max() < np.abs(jitter - ramp)[1:-1].max() / 2
    assert np.array_equal(moving_average(jitter, 1), jitter)
    with pytest.raises(ValueError, match="odd"):
        moving_average(jitter, 2)
