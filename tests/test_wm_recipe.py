"""The world-model recipe: cube fidelity, the VAE selection rule, the video cache, candidate VAE files, padding,
and one tiny end-to-end run (cache -> candidates -> selection -> SFT -> assembled, verified, loadable model)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from eva_runtime.training.wm_data import EpisodeVideo
from eva_runtime.training.wm_recipe import pad_video, select_candidate
from eva_runtime.world_model.fidelity import cube_fidelity, cube_mask

GREY = (80, 80, 80)
RED = (202, 54, 54)


def scene(cube_at: tuple[int, int] | None, size: int = 32, colour=RED) -> np.ndarray:
    frame = np.full((size, size, 3), GREY, np.uint8)
    if cube_at is not None:
        row, col = cube_at
        frame[row : row + 3, col : col + 3] = colour
    return frame


# --- cube fidelity -------------------------------------------------------------------------------------------


def test_cube_mask_finds_red_and_nothing_in_grey() -> None:
    frame = scene((10, 12))
    mask = cube_mask(frame)
    assert mask.sum() == 9 and mask[10:13, 12:15].all()
    assert not cube_mask(scene(None)).any()


def test_a_perfect_copy_keeps_the_cube_and_a_grey_cube_is_lost() -> None:
    truth = np.stack([scene((5 + i, 8)) for i in range(6)])
    perfect = cube_fidelity(truth, truth)
    assert perfect.cube_visible == 1.0 and perfect.cube_colour_error == 0.0 and perfect.cube_frames == 6
    assert perfect.cube_psnr_db > 90
    greyed = np.stack([scene((5 + i, 8), colour=(97, 97, 96)) for i in range(6)])
    lost = cube_fidelity(truth, greyed)
    assert lost.cube_visible == 0.0
    assert lost.cube_colour_error > 50
    assert lost.cube_psnr_db < 25
    # Whole-frame PSNR barely notices: the reason the cube is measured on its own.
    assert lost.frame_psnr_db > lost.cube_psnr_db + 10


def test_frames_without_a_cube_do_not_count() -> None:
    truth = np.stack([scene(None), scene((4, 4))])
    result = cube_fidelity(truth, truth)
    assert result.cube_frames == 1
    empty = cube_fidelity(truth[:1], truth[:1])
    assert empty.cube_frames == 0 and math.isnan(empty.cube_psnr_db) and math.isnan(empty.cube_visible)


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 28), st.integers(0, 28), st.integers(1, 60))
def test_cube_psnr_falls_as_the_cube_fades(row: int, col: int, fade: int) -> None:
    truth = scene((row, col))[None]
    faded_colour = tuple(int(c + (g - c) * fade / 60) for c, g in zip(RED, GREY, strict=True))
    faded = scene((row, col), colour=faded_colour)[None]
    lighter = tuple(int(c + (g - c) * (fade - 1) / 60) for c, g in zip(RED, GREY, strict=True))
    less_faded = scene((row, col), colour=lighter)[None]
    assert cube_fidelity(truth, faded).cube_psnr_db <= cube_fidelity(truth, less_faded).cube_psnr_db


# --- the selection rule --------------------------------------------------------------------------------------


def row(cube: float, frame: float, temporal: int) -> dict:
    return {"cube_psnr_db": cube, "frame_psnr_db": frame, "temporal_factor": temporal}


def test_selection_takes_the_best_cube_psnr() -> None:
    chosen, reason = select_candidate({"a": row(20.0, 25.0, 4), "b": row(23.0, 24.0, 4)}, tie_db=0.5)
    assert chosen == "b" and "23.00" in reason


def test_a_tie_goes_to_fewer_latent_frames_then_frame_psnr() -> None:
    results = {"t2": row(23.0, 30.0, 2), "t4": row(22.8, 26.0, 4), "t4b": row(22.7, 27.0, 4), "far": row(10, 40, 8)}
    assert select_candidate(results, tie_db=0.5)[0] == "t4b"
    assert select_candidate(results, tie_db=0.1)[0] == "t2"  # no longer tied


def test_failed_candidates_are_skipped_and_none_usable_is_an_error() -> None:
    results = {"broken": {"error": "RuntimeError: x"}, "ok": row(15.0, 20.0, 4)}
    assert select_candidate(results, 0.5)[0] == "ok"
    with pytest.raises(ValueError, match="no candidate"):
        select_candidate({"broken": {"error": "x"}, "nan": row(float("nan"), 20.0, 4)}, 0.5)


# --- padding, cache ------------------------------------------------------------------------------------------


def video(name: str, length: int = 20, size: int = 32, seed: int = 0, instruction: str = "pick up the red cube"):
    rng = np.random.default_rng(seed)
    frames = np.stack(
        [scene((int(rng.integers(0, size - 3)), int(rng.integers(0, size - 3))), size) for _ in range(length)]
    )
    return EpisodeVideo(name, frames, rng.normal(size=(length, 14)).astype(np.float32), instruction, seed)


def test_padding_repeats_the_first_and_last_frames() -> None:
    clip = video("e", length=6)
    padded = pad_video(clip, 4, 3)
    assert len(padded) == 13
    assert all((padded[i] == clip.frames[0]).all() for i in range(5))
    assert all((padded[-1 - i] == clip.frames[-1]).all() for i in range(4))
    assert (padded[4:10] == clip.frames).all()


def test_video_cache_round_trips_and_refuses_what_it_cannot_store(tmp_path: Path) -> None:
    from eva_runtime.training.video_cache import load_video_cache, save_video_cache

    videos = [video("episode_0000", seed=1), video("episode_0001", seed=2)]
    embeds = np.random.default_rng(0).normal(size=(1, 4, 8)).astype(np.float32)
    digest = save_video_cache(tmp_path / "c.npz", videos, 12.5, "cam_high", ("pick up the red cube",), embeds, ("a",))
    cache = load_video_cache(tmp_path / "c.npz")
    assert cache.sha256 == digest and cache.fps == 12.5 and cache.camera == "cam_high" and cache.vocabulary == ("a",)
    for original, loaded in zip(videos, cache.videos, strict=True):
        assert loaded.name == original.name and loaded.seed == original.seed
        assert loaded.instruction == original.instruction
        np.testing.assert_array_equal(loaded.frames, original.frames)
        np.testing.assert_array_equal(loaded.actions, original.actions)
    np.testing.assert_array_equal(cache.text_embeds, embeds)
    # The same data cached again, elsewhere and later, has the same SHA-256: the hash names the content.
    again = save_video_cache(
        tmp_path / "b" / "c.npz", videos, 12.5, "cam_high", ("pick up the red cube",), embeds, ("a",)
    )
    assert again == digest
    with pytest.raises(ValueError, match="one length"):
        save_video_cache(
            tmp_path / "d.npz", [videos[0], video("x", length=9)], 12.5, "c", ("pick up the red cube",), embeds, ()
        )
    with pytest.raises(ValueError, match="without a text embedding"):
        save_video_cache(tmp_path / "e.npz", videos, 12.5, "cam_high", ("other",), embeds, ())


# --- candidate VAE files -------------------------------------------------------------------------------------


def test_candidate_vae_files_load_strictly_and_reproduce_the_network(tmp_path: Path) -> None:
    import torch
    from safetensors.torch import load_file, save_file

    from eva_runtime.training.vae_candidates import (
        VaeCandidate,
        build_candidate_vae,
        load_candidate_vae,
        save_candidate_vae,
    )

    candidate = VaeCandidate("tiny", z_dim=4, base_dim=8)
    torch.manual_seed(0)
    vae = build_candidate_vae(candidate, [0.1] * 4, [2.0] * 4).eval()
    path = save_candidate_vae(vae, candidate, tmp_path / "vae.safetensors", {"note": "x"})
    loaded, loaded_candidate, extra = load_candidate_vae(path)
    assert loaded_candidate == candidate and extra == {"note": "x"}
    assert list(loaded.config.latents_std) == [2.0] * 4
    clip = torch.rand(1, 3, 5, 16, 16) * 2 - 1
    with torch.no_grad():
        np.testing.assert_allclose(
            loaded.encode(clip).latent_dist.mode().numpy(), vae.encode(clip).latent_dist.mode().numpy(), atol=1e-6
        )
    state = load_file(str(path))
    state.pop(next(iter(state)))
    save_file(
        state,
        str(tmp_path / "short.safetensors"),
        metadata={
            "candidate": json.dumps(candidate.as_dict()),
            "latents_mean": "[0,0,0,0]",
            "latents_std": "[1,1,1,1]",
        },
    )
    with pytest.raises(RuntimeError, match="Missing key"):
        load_candidate_vae(tmp_path / "short.safetensors")
    save_file(load_file(str(path)), str(tmp_path / "bare.safetensors"))
    with pytest.raises(ValueError, match="not a VAE candidate"):
        load_candidate_vae(tmp_path / "bare.safetensors")


# --- one tiny end-to-end run ---------------------------------------------------------------------------------


def test_tiny_recipe_runs_end_to_end_and_assembles_a_verified_loadable_model(tmp_path: Path) -> None:
    import torch

    from eva_runtime.training.video_cache import save_video_cache
    from eva_runtime.training.wm_assemble import _text_embeds, assemble_world_model
    from eva_runtime.training.wm_recipe import CANDIDATES, RecipeSettings, TransformerShape, run_recipe
    from eva_runtime.world_model.protocol import RolloutRequest
    from eva_runtime.world_model.wan.backend import load_wan_world_model
    from eva_runtime.world_model.wan.components import TinyWanConfig, instruction_vocabulary

    torch.set_num_threads(1)
    instruction = "pick up the red cube"
    vocabulary = instruction_vocabulary([instruction])
    config = TinyWanConfig(image_size=(32, 32), vocabulary=vocabulary)
    embeds = _text_embeds(config, [instruction])
    videos = [video(f"episode_{i:04d}", length=16, seed=i, instruction=instruction) for i in range(4)]
    cache = tmp_path / "cache.npz"
    save_video_cache(cache, videos, 12.5, "cam_high", (instruction,), embeds, vocabulary)
    recipe = RecipeSettings(
        candidates=("z8_t4_l1", "z16_t4_fg"),
        vae_steps=1,
        vae_short_batch=2,
        vae_long_batch=2,
        horizon=9,
        end_padding=2,
        clip_stride=4,
        sft_steps=2,
        sft_batch=2,
        held_out=1,
        sample_steps=2,
        transformer=TransformerShape(layers=1, heads=2, head_dim=16, ffn_dim=32, freq_dim=32),
    )
    report = run_recipe(cache, tmp_path / "run", recipe, log=lambda _: None)
    assert set(report["vae"]) == {"z8_t4_l1", "z16_t4_fg"}
    assert report["selection"]["chosen"] in CANDIDATES
    assert report["sft"]["saved_step"] == 2 and (tmp_path / "run" / "samples.gif").is_file()
    model_dir = tmp_path / "model"
    description = assemble_world_model(tmp_path / "run", cache, model_dir)
    assert description["history_frames"] == 5 and description["horizon"] == 9
    world_model = load_wan_world_model({"base": str(model_dir), "history_frames": 5})
    rollout = world_model.rollout(RolloutRequest({"cam_high": videos[0].frames[:5]}, instruction, 9, seed=0))
    assert rollout.frames["cam_high"].shape == (1, 9, 32, 32, 3)
    # A cache that is not the recipe's is refused at assembly.
    other = tmp_path / "other.npz"
    save_video_cache(other, videos[:3], 12.5, "cam_high", (instruction,), embeds, vocabulary)
    with pytest.raises(ValueError, match="not the recipe's cache"):
        assemble_world_model(tmp_path / "run", other, tmp_path / "model2")


def test_vae_roundtrip_keeps_every_frame_and_pads_only_inside() -> None:
    import torch

    from eva_runtime.training.vae_candidates import VaeCandidate, build_candidate_vae
    from eva_runtime.training.vae_roundtrip import roundtrip_video
    from eva_runtime.world_model.wan.latents import decode_latents, encode_frames

    torch.manual_seed(0)
    vae = build_candidate_vae(VaeCandidate("tiny", z_dim=4, base_dim=8)).eval()
    frames = video("e", length=11, size=16).frames
    out = roundtrip_video(vae, frames, clip=5)
    assert out.shape == frames.shape and out.dtype == np.uint8
    # The first clip is exactly the VAE's reconstruction of frames 0-4; the last (1 frame) was padded to 5.
    np.testing.assert_array_equal(out[:5], decode_latents(vae, encode_frames(vae, frames[None, :5]))[0])
    padded = np.repeat(frames[10:11], 5, 0)
    np.testing.assert_array_equal(out[10], decode_latents(vae, encode_frames(vae, padded[None]))[0][0])


def test_a_vae_file_is_read_through_only_when_its_hash_sidecar_matches(tmp_path: Path) -> None:
    import torch

    from eva_runtime.training.vae_candidates import (
        VaeCandidate,
        build_candidate_vae,
        load_verified_vae,
        save_candidate_vae,
    )

    candidate = VaeCandidate("tiny", z_dim=4, base_dim=8)
    torch.manual_seed(0)
    path = save_candidate_vae(build_candidate_vae(candidate).eval(), candidate, tmp_path / "vae.safetensors")
    assert load_verified_vae(path).config.z_dim == 4
    data = bytearray(path.read_bytes())
    data[-3] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="SHA-256 does not match"):
        load_verified_vae(path)
    Path(str(path) + ".sha256").unlink()
    with pytest.raises(ValueError, match="unverified"):
        load_verified_vae(path)
    with pytest.raises(FileNotFoundError):
        load_verified_vae(tmp_path / "absent.safetensors")


def test_a_stopped_round_trip_continues_where_it_stopped_and_refuses_another_vae(tmp_path: Path) -> None:
    import torch

    from eva_runtime.records.hdf5_episodes import read_episode
    from eva_runtime.training.vae_candidates import VaeCandidate, build_candidate_vae, save_candidate_vae
    from eva_runtime.training.vae_roundtrip import roundtrip_episodes
    from tests.wan_helpers import write_square_episodes

    data = write_square_episodes(tmp_path / "data", count=3, frames=10, size=16)
    candidate = VaeCandidate("tiny", z_dim=4, base_dim=8)
    vaes = []
    for seed in (0, 1):
        torch.manual_seed(seed)
        vae = build_candidate_vae(candidate).eval()
        vaes.append(save_candidate_vae(vae, candidate, tmp_path / f"vae{seed}.safetensors"))
    out, logged = tmp_path / "rt", []
    first = roundtrip_episodes(data, vaes[0], out, clip=5, limit=1, image_size=(16, 16), log=logged.append)
    before = first[0].stat().st_mtime_ns
    every = roundtrip_episodes(data, vaes[0], out, clip=5, image_size=(16, 16), log=logged.append)
    assert [p.name for p in every] == [p.name for p in sorted(data.glob("episode_*.hdf5"))]
    assert first[0].stat().st_mtime_ns == before and logged[1] == f"{first[0].name}: already written"
    assert read_episode(every[2]).images["cam_high"].shape[1:] == (16, 16, 3)
    with pytest.raises(ValueError, match="holds a round trip with vae_sha256"):
        roundtrip_episodes(data, vaes[1], out, clip=5, image_size=(16, 16))
    with pytest.raises(ValueError, match="holds a round trip with clip 5, not 9"):
        roundtrip_episodes(data, vaes[0], out, clip=9, image_size=(16, 16))
