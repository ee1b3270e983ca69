"""The long transformer SFT run: a stopped run resumed ends exactly where an uninterrupted one does; a resumed run
with other settings, another VAE or a corrupted checkpoint is refused with the reason; the run assembles."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from tests.wan_helpers import save_scattered_cache, scattered_cube_video

INSTRUCTION = "pick up the red cube"


def _video(name: str, seed: int, length: int = 16, size: int = 32):
    return scattered_cube_video(name, seed, length, size, INSTRUCTION)


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    import torch

    from eva_runtime.training.vae_candidates import VaeCandidate, build_candidate_vae, save_candidate_vae

    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("run_files")
    save_scattered_cache(root / "cache.npz", episodes=4, length=16, size=32, instruction=INSTRUCTION)
    torch.manual_seed(0)
    for name, seed in (("vae", 0), ("other_vae", 1)):
        torch.manual_seed(seed)
        candidate = VaeCandidate("tiny", z_dim=4, base_dim=8)
        save_candidate_vae(build_candidate_vae(candidate).eval(), candidate, root / f"{name}.safetensors")
    return {"cache": root / "cache.npz", "vae": root / "vae.safetensors", "other_vae": root / "other_vae.safetensors"}


def _run(**changes):
    from eva_runtime.training.wm_transformer_run import TransformerRun, TransformerShape

    run = TransformerRun(
        steps=4,
        batch=2,
        warmup=2,
        horizon=9,
        end_padding=2,
        clip_stride=4,
        held_out=1,
        checkpoint_every=2,
        samples_every=4,
        sample_steps=2,
        transformer=TransformerShape(layers=1, heads=2, head_dim=16, ffn_dim=32, freq_dim=32),
    )
    return dataclasses.replace(run, **changes)


def _weights(path: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(path))


def test_a_stopped_and_resumed_run_ends_where_an_uninterrupted_one_does(files, tmp_path: Path) -> None:
    from eva_runtime.training.wm_transformer_run import train_transformer_run

    quiet = {"log": lambda _: None}
    whole = train_transformer_run(files["cache"], files["vae"], tmp_path / "whole", _run(), **quiet)
    partial = train_transformer_run(files["cache"], files["vae"], tmp_path / "cut", _run(), stop_after=3, **quiet)
    # Stopped after 3 steps: the checkpoint on disk is step 2's; the resumed run redoes step 3 from it.
    assert partial["sft"]["saved_step"] == 2
    resumed = train_transformer_run(files["cache"], files["vae"], tmp_path / "cut", _run(), resume=True, **quiet)
    assert resumed["sft"]["saved_step"] == whole["sft"]["saved_step"] == 4
    a, b = (
        _weights(tmp_path / "whole" / "transformer.safetensors"),
        _weights(tmp_path / "cut" / "transformer.safetensors"),
    )
    assert a.keys() == b.keys()
    for key in a:
        np.testing.assert_allclose(a[key].numpy(), b[key].numpy(), atol=1e-6, err_msg=key)
    curve = [point["step"] for point in resumed["sft"]["curve"]]
    assert curve == [2, 4]
    assert "samples" in resumed["sft"]["curve"][-1] and (tmp_path / "cut" / "samples_000004.gif").is_file()
    lines = (tmp_path / "cut" / "progress.jsonl").read_text().splitlines()
    assert len(lines) == 2  # step 2 (first session), step 4 (second): no lost or doubled line
    assert np.isfinite(resumed["sft"]["curve"][-1]["held_out_loss_ema"])


def test_resuming_with_other_settings_or_files_is_refused_naming_what_differs(files, tmp_path: Path) -> None:
    from eva_runtime.training.wm_transformer_run import train_transformer_run

    quiet = {"log": lambda _: None}
    out = tmp_path / "run"
    train_transformer_run(files["cache"], files["vae"], out, _run(), stop_after=2, **quiet)
    with pytest.raises(ValueError, match="'lr'"):
        train_transformer_run(files["cache"], files["vae"], out, _run(lr=1e-3), resume=True, **quiet)
    with pytest.raises(ValueError, match="'foreground_weight'"):
        train_transformer_run(files["cache"], files["vae"], out, _run(foreground_weight=4.0), resume=True, **quiet)
    with pytest.raises(ValueError, match="'seed'"):  # another seed draws other batches, noise and timesteps
        train_transformer_run(files["cache"], files["vae"], out, _run(seed=1), resume=True, **quiet)
    with pytest.raises(ValueError, match="'ema_decay'"):  # the saved weights would average differently
        train_transformer_run(files["cache"], files["vae"], out, _run(ema_decay=0.99), resume=True, **quiet)
    with pytest.raises(ValueError, match="vae_sha256"):
        train_transformer_run(files["cache"], files["other_vae"], out, _run(), resume=True, **quiet)
    with pytest.raises(ValueError, match="holds a run already"):
        train_transformer_run(files["cache"], files["vae"], out, _run(), **quiet)
    # Bookkeeping may change: a resumed run can checkpoint more often.
    train_transformer_run(files["cache"], files["vae"], out, _run(checkpoint_every=1), resume=True, **quiet)
    state = out / "last" / "state.safetensors"
    data = bytearray(state.read_bytes())
    data[-5] ^= 0xFF
    state.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="SHA-256"):
        train_transformer_run(files["cache"], files["vae"], out, _run(steps=4), resume=True, **quiet)


def test_a_foreground_weighted_run_trains_and_logs_its_share(files, tmp_path: Path) -> None:
    from eva_runtime.training.wm_transformer_run import train_transformer_run

    lines: list[str] = []
    report = train_transformer_run(
        files["cache"], files["vae"], tmp_path / "fg", _run(foreground_weight=4.0), log=lines.append
    )
    assert report["sft"]["saved_step"] == 4 and report["settings"]["foreground_weight"] == 4.0
    share = [line for line in lines if line.startswith("loss weights:")]
    assert share and 0.0 < float(share[0].split()[2].rstrip("%")) < 100.0  # the cube is some, not all, of it


def test_a_finished_run_assembles_into_a_verified_pipeline(files, tmp_path: Path) -> None:
    from eva_runtime.training.wm_assemble import assemble_world_model
    from eva_runtime.training.wm_transformer_run import train_transformer_run
    from eva_runtime.world_model.protocol import RolloutRequest
    from eva_runtime.world_model.wan.backend import load_wan_world_model

    train_transformer_run(files["cache"], files["vae"], tmp_path / "run", _run(steps=2), log=lambda _: None)
    description = assemble_world_model(tmp_path / "run", files["cache"], tmp_path / "model")
    assert description["horizon"] == 9 and description["recipe"]["selection"]["chosen"] == "tiny"
    model = load_wan_world_model({"base": str(tmp_path / "model"), "history_frames": 5})
    frames = _video("x", seed=9).frames[:5]
    rollout = model.rollout(RolloutRequest({"cam_high": frames}, INSTRUCTION, 9, seed=0))
    assert rollout.frames["cam_high"].shape == (1, 9, 32, 32, 3)


def test_a_warm_start_loads_the_saved_weights_and_is_part_of_the_run_identity(files, tmp_path: Path) -> None:
    import hashlib

    from eva_runtime.training.wm_transformer_run import train_transformer_run

    quiet = {"log": lambda _: None}
    first = tmp_path / "first"
    train_transformer_run(files["cache"], files["vae"], first, _run(steps=2), **quiet)
    saved = first / "transformer.safetensors"
    digest = hashlib.sha256(saved.read_bytes()).hexdigest()
    Path(str(saved) + ".sha256").write_text(digest + "\n")
    warm = tmp_path / "warm"
    train_transformer_run(files["cache"], files["vae"], warm, _run(steps=2), init=saved, stop_after=0, **quiet)
    import json

    from eva_runtime.file_hash import file_sha256

    assert json.loads((warm / "run.json").read_text())["settings"]["init_sha256"] == digest == file_sha256(saved)
    with pytest.raises(ValueError, match="init_sha256"):  # the same directory resumed without the warm start
        train_transformer_run(files["cache"], files["vae"], warm, _run(steps=2), resume=True, **quiet)
    report = train_transformer_run(files["cache"], files["vae"], warm, _run(steps=2), resume=True, init=saved, **quiet)
    assert report["sft"]["saved_step"] == 2
    frozen = tmp_path / "frozen"  # learning rate 0: what it saves is exactly what it started from
    train_transformer_run(files["cache"], files["vae"], frozen, _run(steps=2, lr=0.0), init=saved, **quiet)
    a, b = _weights(saved), _weights(frozen / "transformer.safetensors")
    assert a.keys() == b.keys() and all(np.array_equal(a[k].numpy(), b[k].numpy()) for k in a)
    Path(str(saved) + ".sha256").write_text("0" * 64 + "\n")
    with pytest.raises(ValueError, match="SHA-256"):
        train_transformer_run(files["cache"], files["vae"], tmp_path / "bad", _run(steps=2), init=saved, **quiet)
    bigger = _run(steps=2, transformer=dataclasses.replace(_run().transformer, layers=2))
    Path(str(saved) + ".sha256").unlink()
    with pytest.raises(ValueError, match="another shape"):
        train_transformer_run(files["cache"], files["vae"], tmp_path / "shape", bigger, init=saved, **quiet)


def _clip_set(path: Path, frames: int = 13, seed: int = 0, instruction: str = INSTRUCTION) -> Path:
    from eva_runtime.training.dagger_labels import ClipSet, save_clip_set

    video = _video("clips", seed, length=3 * frames).frames.reshape(3, frames, 32, 32, 3)
    count = np.zeros(3, np.int64)
    clips = ClipSet(video, np.zeros((3, 9, 14), np.float32), count, count, count, count, count, instruction, 5, 12.5)
    save_clip_set(path, clips)
    return path


def test_a_clip_set_is_mixed_in_encoded_once_and_part_of_the_run_identity(files, tmp_path: Path) -> None:
    from eva_runtime.file_hash import file_sha256
    from eva_runtime.training.wm_transformer_run import train_transformer_run

    lines: list[str] = []
    clips = _clip_set(tmp_path / "clips.npz")
    out = tmp_path / "mixed"
    run = _run(clips_fraction=0.5, foreground_weight=4.0)
    report = train_transformer_run(files["cache"], files["vae"], out, run, log=lines.append, clips=clips, stop_after=2)
    assert report["settings"]["clips_sha256"] == file_sha256(clips) and report["sft"]["saved_step"] == 2
    assert any(line.startswith("encoded 3 extra clips") for line in lines)
    resumed = train_transformer_run(files["cache"], files["vae"], out, run, log=lines.append, clips=clips, resume=True)
    assert resumed["sft"]["saved_step"] == 4 and any(line.startswith("clip latents reused") for line in lines)
    other = _clip_set(tmp_path / "other.npz", seed=1)
    with pytest.raises(ValueError, match="'clips_sha256'"):
        train_transformer_run(files["cache"], files["vae"], out, run, log=lines.append, clips=other, resume=True)


def test_a_clip_set_that_does_not_fit_the_run_is_refused(files, tmp_path: Path) -> None:
    from eva_runtime.training.wm_transformer_run import train_transformer_run

    quiet = {"log": lambda _: None}
    mixed = _run(clips_fraction=0.5)
    with pytest.raises(ValueError, match="13 frames per clip, the run's clips have 9"):  # 4 + horizon 5
        train_transformer_run(
            files["cache"], files["vae"], tmp_path / "a", _run(clips_fraction=0.5, horizon=5),
            clips=_clip_set(tmp_path / "long.npz"), **quiet,
        )  # fmt: skip
    with pytest.raises(ValueError, match="no text embedding"):
        clips = _clip_set(tmp_path / "other_task.npz", instruction="insert the peg")
        train_transformer_run(files["cache"], files["vae"], tmp_path / "b", mixed, clips=clips, **quiet)
    with pytest.raises(ValueError, match="clips_fraction"):
        train_transformer_run(files["cache"], files["vae"], tmp_path / "c", mixed, **quiet)


def test_an_assembled_world_model_warm_starts_a_run_and_a_tampered_one_is_refused(files, tmp_path: Path) -> None:
    import json

    from eva_runtime.file_hash import file_sha256
    from eva_runtime.training.wm_assemble import assemble_world_model
    from eva_runtime.training.wm_transformer_run import train_transformer_run

    quiet = {"log": lambda _: None}
    train_transformer_run(files["cache"], files["vae"], tmp_path / "first", _run(steps=2), **quiet)
    model = tmp_path / "model"
    assemble_world_model(tmp_path / "first", files["cache"], model)
    frozen = tmp_path / "frozen"  # learning rate 0: it saves exactly the assembled model's transformer
    train_transformer_run(files["cache"], files["vae"], frozen, _run(steps=2, lr=0.0), init=model, **quiet)
    a = _weights(model / "transformer" / "diffusion_pytorch_model.safetensors")
    b = _weights(frozen / "transformer.safetensors")
    assert a.keys() == b.keys() and all(np.array_equal(a[k].numpy(), b[k].numpy()) for k in a)
    settings = json.loads((frozen / "run.json").read_text())["settings"]
    assert settings["init_sha256"] == file_sha256(model / "eva_hashes.json")
    weights = model / "transformer" / "diffusion_pytorch_model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-3] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="sha256"):
        train_transformer_run(files["cache"], files["vae"], tmp_path / "bad", _run(steps=2), init=model, **quiet)


def test_end_padding_adds_clips_that_start_past_the_end_of_the_task(files) -> None:
    from eva_runtime.training.video_cache import load_video_cache
    from eva_runtime.training.wm_run_samples import padded_clips

    videos = load_video_cache(files["cache"]).videos
    run = _run()
    clip = run.history_frames - 1 + run.horizon
    for end_padding in (2, 12):
        padded, pairs = padded_clips(videos, run.history_frames, end_padding, clip, 1)
        last_now = max(start for _, start in pairs)  # the clip's newest observed frame, in episode frames
        assert last_now == len(videos[0].frames) + end_padding - run.horizon
        tail = padded[0][-end_padding:]
        assert np.array_equal(tail, np.repeat(videos[0].frames[-1:], end_padding, 0))  # the resting final pose
