"""The diffusers Wan backend on tiny real models: pipeline calls, our sampler's parity with the pipeline, LoRA
round trips, the WorldModel protocol, hash verification, and the flow-matching objective."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from eva_runtime.world_model.protocol import RolloutRequest
from eva_runtime.world_model.wan.backend import WanSettings, WanWorldModel, load_wan_world_model
from eva_runtime.world_model.wan.latents import decode_latents, encode_frames, latent_frames
from eva_runtime.world_model.wan.lora import add_lora, load_lora, save_lora
from eva_runtime.world_model.wan.model_files import HASH_FILE, ModelFilesError, verify_hashes
from eva_runtime.world_model.wan.sampling import Denoiser, euler_sample, flow_sigmas, token_timesteps
from tests.wan_helpers import INSTRUCTION, save_tiny_base, square_video, tiny_pipeline

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def pipeline():
    return tiny_pipeline()


def _settings(**overrides) -> WanSettings:
    values = {"base": "unused", "camera": "cam_high", "fps": 12.5, "image_size": (32, 32), "steps": 3}
    values.update(overrides)
    return WanSettings(**values)


def test_pipeline_call_produces_horizon_frames(pipeline) -> None:
    image = Image.fromarray(square_video(1, 32, 0)[0])
    frames = pipeline(
        image=image,
        prompt=[INSTRUCTION, INSTRUCTION],  # num_videos_per_prompt > 1 is a known crash: repeat the prompt
        height=32,
        width=32,
        num_frames=9,
        num_inference_steps=2,
        guidance_scale=1.0,
        max_sequence_length=32,
        output_type="np",
        generator=torch.Generator().manual_seed(0),
    ).frames
    assert np.asarray(frames).shape == (2, 9, 32, 32, 3)
    assert np.all(np.isfinite(frames))


def test_own_sampler_equals_the_pipeline(pipeline) -> None:
    image = square_video(1, 32, 3)[0]
    steps, seed = 3, 5
    reference = pipeline(
        image=Image.fromarray(image),
        prompt=INSTRUCTION,
        height=32,
        width=32,
        num_frames=9,
        num_inference_steps=steps,
        guidance_scale=1.0,
        max_sequence_length=32,
        output_type="latent",
        generator=torch.Generator().manual_seed(seed),
    ).frames
    embeds, _ = pipeline.encode_prompt(INSTRUCTION, do_classifier_free_guidance=False, max_sequence_length=32)
    condition = encode_frames(pipeline.vae, image[None, None])
    noise = torch.randn(reference.shape, generator=torch.Generator().manual_seed(seed))
    ours = euler_sample(Denoiser(pipeline.transformer, embeds, condition, 1), noise, flow_sigmas(pipeline.scheduler, 3))
    assert torch.allclose(ours, reference, atol=1e-5), float((ours - reference).abs().max())


def test_token_timesteps_are_zero_on_conditioning_frames() -> None:
    timesteps = token_timesteps(torch.tensor([0.5, 0.25]), (2, 4, 3, 8, 8), conditioned=2)
    assert timesteps.shape == (2, 3 * 16)
    assert torch.all(timesteps[:, :32] == 0)
    assert torch.allclose(timesteps[0, 32:], torch.full((16,), 500.0))
    assert torch.allclose(timesteps[1, 32:], torch.full((16,), 250.0))


def test_rollout_shape_determinism_and_conditioning(pipeline) -> None:
    model = WanWorldModel(pipeline, _settings())
    observed = square_video(3, 48, 2)  # a different size: the model resizes to its own
    request = RolloutRequest({"cam_high": observed}, INSTRUCTION, horizon=9, seed=11, samples=3)
    first = model.rollout(request)
    video = first.frames["cam_high"]
    assert video.shape == (3, 9, 32, 32, 3) and video.dtype == np.uint8
    assert first.fps == 12.5 and first.seconds > 0
    again = model.rollout(request).frames["cam_high"]
    np.testing.assert_array_equal(video, again)
    other = model.rollout(RolloutRequest({"cam_high": observed}, INSTRUCTION, 9, seed=12, samples=3))
    assert not np.array_equal(video, other.frames["cam_high"])
    # Frame 0 is the observation through the VAE: every sample starts from the same picture.
    assert all(np.array_equal(video[0, 0], video[g, 0]) for g in range(3))


def test_history_conditioning_keeps_the_observed_frames(pipeline) -> None:
    model = WanWorldModel(pipeline, _settings(history_frames=5))
    observed = square_video(5, 32, 0)
    history = model.history(observed)
    latents = model.sample_latents(history, INSTRUCTION, horizon=9, samples=2, seed=0)
    assert latents.shape[2] == latent_frames(5 - 1 + 9, 4)
    clean = encode_frames(pipeline.vae, history[None])
    assert torch.allclose(latents[:, :, :2], clean.expand(2, -1, -1, -1, -1))
    rollout = model.rollout(RolloutRequest({"cam_high": observed}, INSTRUCTION, horizon=9, seed=0, samples=2))
    assert rollout.frames["cam_high"].shape == (2, 9, 32, 32, 3)
    # Fewer observed frames than the history needs: the oldest is repeated, not an error.
    assert model.history(observed[-1:]).shape == (5, 32, 32, 3)


def test_rollout_rejects_bad_requests(pipeline) -> None:
    model = WanWorldModel(pipeline, _settings())
    good = square_video(1, 32, 0)
    with pytest.raises(ValueError, match="horizon"):
        model.rollout(RolloutRequest({"cam_high": good}, INSTRUCTION, horizon=8, seed=0))
    with pytest.raises(ValueError, match="camera"):
        model.rollout(RolloutRequest({"cam_left_wrist": good}, INSTRUCTION, horizon=9, seed=0))
    with pytest.raises(ValueError, match="uint8"):
        model.rollout(RolloutRequest({"cam_high": good.astype(np.float32)}, INSTRUCTION, horizon=9, seed=0))
    with pytest.raises(ValueError, match="history_frames"):
        WanWorldModel(pipeline, _settings(history_frames=3))


def test_lora_round_trip_is_exact_and_disabling_gives_the_base(tmp_path: Path) -> None:
    trained = tiny_pipeline(seed=1)
    add_lora(trained.transformer, "sft", rank=4, alpha=2.0)
    generator = torch.Generator().manual_seed(0)
    for name, parameter in trained.transformer.named_parameters():
        if "lora_B" in name:  # a trained adapter: B is no longer zero
            parameter.data = torch.randn(parameter.shape, generator=generator) * 0.1
    inputs = {
        "hidden_states": torch.randn(1, 4, 2, 8, 8, generator=generator),
        "timestep": torch.tensor([400.0]),
        "encoder_hidden_states": torch.randn(1, 32, 16, generator=generator),
        "return_dict": False,
    }
    with torch.no_grad():
        adapted = trained.transformer(**inputs)[0]
        trained.transformer.disable_adapters()
        base = trained.transformer(**inputs)[0]
    assert not torch.allclose(adapted, base)
    save_lora(trained.transformer, "sft", tmp_path / "lora")

    loaded = tiny_pipeline(seed=1)
    load_lora(loaded, tmp_path / "lora", "sft")
    assert loaded.transformer.peft_config["sft"].lora_alpha == 2.0  # metadata kept alpha != rank
    with torch.no_grad():
        assert torch.equal(loaded.transformer(**inputs)[0], adapted)
        loaded.disable_lora()
        assert torch.equal(loaded.transformer(**inputs)[0], base)


def test_corrupted_adapter_is_refused(tmp_path: Path) -> None:
    pipeline = tiny_pipeline()
    add_lora(pipeline.transformer, "a", rank=2)
    directory = save_lora(pipeline.transformer, "a", tmp_path / "lora")
    weights = directory / "pytorch_lora_weights.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(ModelFilesError, match="sha256"):
        load_lora(tiny_pipeline(), directory, "a")


def test_load_from_directory_verifies_hashes(tmp_path: Path) -> None:
    base = save_tiny_base(tmp_path / "base")
    model = load_wan_world_model({"base": str(base), "steps": 2, "model_id": "tiny"})
    assert model.cameras == ("cam_high",) and model.fps == 12.5 and model.model_id == "tiny"
    rollout = model.rollout(RolloutRequest({"cam_high": square_video(1, 32, 0)}, INSTRUCTION, 5, seed=0))
    assert rollout.frames["cam_high"].shape == (1, 5, 32, 32, 3)
    assert verify_hashes(base)
    (base / "transformer" / "config.json").write_text(json.dumps({"tampered": True}))
    with pytest.raises(ModelFilesError, match="sha256"):
        load_wan_world_model({"base": str(base)})
    (base / HASH_FILE).unlink()
    with pytest.raises(ModelFilesError, match="unverified"):
        load_wan_world_model({"base": str(base)})


def test_a_model_directory_sets_its_own_history_unless_the_spec_does(tmp_path: Path) -> None:
    base = save_tiny_base(tmp_path / "base", history_frames=5)
    assert load_wan_world_model({"base": str(base)}).settings.history_frames == 5
    assert load_wan_world_model({"base": str(base), "history_frames": 1}).settings.history_frames == 1
    plain = save_tiny_base(tmp_path / "plain")
    assert load_wan_world_model({"base": str(plain)}).settings.history_frames == 1


def test_vae_round_trip_shapes(pipeline) -> None:
    video = square_video(9, 32, 0)[None]
    latents = encode_frames(pipeline.vae, video)
    assert latents.shape == (1, 4, 3, 8, 8)
    decoded = decode_latents(pipeline.vae, latents)
    assert decoded.shape == video.shape and decoded.dtype == np.uint8


def test_flow_matching_objective_learns_a_fixed_batch() -> None:
    """A few optimiser steps on one batch lower the loss: the objective and its conditioning are wired right."""
    from eva_runtime.training.wm_sft import flow_matching_loss

    pipeline = tiny_pipeline(seed=2)
    latents = encode_frames(pipeline.vae, np.stack([square_video(9, 32, s) for s in range(4)]))
    embeds = pipeline.encode_prompt(INSTRUCTION, do_classifier_free_guidance=False, max_sequence_length=32)[0]
    embeds = embeds.detach().expand(4, -1, -1)
    transformer = pipeline.transformer.train()
    optimizer = torch.optim.Adam(transformer.parameters(), lr=3e-3)

    def loss_at(seed: int):
        return flow_matching_loss(transformer, latents, embeds, 1, torch.Generator().manual_seed(seed), 3.0)

    with torch.no_grad():
        before = float(np.mean([loss_at(s).item() for s in range(4)]))
    for step in range(40):
        loss = loss_at(100 + step)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        after = float(np.mean([loss_at(s).item() for s in range(4)]))
    assert after < 0.8 * before, (before, after)


def test_wan21_layout_with_a_clip_image_encoder_runs_through_the_pipeline() -> None:
    """Wan2.1 I2V: CLIP image embeddings + mask/condition channels; the backend calls the diffusers pipeline."""
    from diffusers import FlowMatchEulerDiscreteScheduler, WanImageToVideoPipeline, WanTransformer3DModel
    from transformers import CLIPImageProcessor, CLIPVisionConfig, CLIPVisionModel

    from eva_runtime.world_model.wan.components import build_text_encoder, build_tokenizer, build_vae
    from tests.wan_helpers import tiny_config

    config = tiny_config()
    torch.manual_seed(0)
    tokenizer = build_tokenizer(config.vocabulary)
    encoder = CLIPVisionModel(
        CLIPVisionConfig(
            hidden_size=16,
            intermediate_size=32,
            num_hidden_layers=2,
            num_attention_heads=2,
            image_size=32,
            patch_size=8,
        )
    ).eval()
    processor = CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    transformer = WanTransformer3DModel(
        patch_size=(1, 2, 2),
        num_attention_heads=2,
        attention_head_dim=12,
        in_channels=2 * config.vae_z_dim + 4,  # noisy latents + 4 mask channels + conditioning latents
        out_channels=config.vae_z_dim,
        text_dim=config.text_dim,
        freq_dim=16,
        ffn_dim=32,
        num_layers=1,
        image_dim=16,
        added_kv_proj_dim=24,
        rope_max_seq_len=64,
    )
    pipeline = WanImageToVideoPipeline(
        tokenizer=tokenizer,
        text_encoder=build_text_encoder(config, len(tokenizer)),
        vae=build_vae(config),
        scheduler=FlowMatchEulerDiscreteScheduler(shift=3.0),
        image_processor=processor,
        image_encoder=encoder,
        transformer=transformer,
    )
    with pytest.raises(ValueError, match="512"):
        WanWorldModel(pipeline, _settings(max_sequence_length=32))
    model = WanWorldModel(pipeline, _settings(max_sequence_length=512, steps=2))
    request = RolloutRequest({"cam_high": square_video(1, 32, 0)}, INSTRUCTION, horizon=9, seed=3, samples=2)
    video = model.rollout(request).frames["cam_high"]
    assert video.shape == (2, 9, 32, 32, 3) and video.dtype == np.uint8
    np.testing.assert_array_equal(video, model.rollout(request).frames["cam_high"])  # seeded per sample


def test_loaded_adapters_all_apply_fused_or_not_and_fusing_leaves_no_lora_layer(tmp_path: Path) -> None:
    import torch

    base_dir = save_tiny_base(tmp_path / "base")
    generator = torch.Generator().manual_seed(3)
    adapters = []
    for name in ("first", "second"):
        trained = tiny_pipeline()
        add_lora(trained.transformer, name, rank=2)
        for parameter_name, parameter in trained.transformer.named_parameters():
            if "lora_B" in parameter_name:  # a trained adapter: B is no longer zero
                parameter.data = torch.randn(parameter.shape, generator=generator) * 0.1
        directory = save_lora(trained.transformer, name, tmp_path / name)
        adapters.append({"name": name, "path": str(directory), "weight": 1.0 if name == "first" else 0.5})
    inputs = {
        "hidden_states": torch.randn(1, 4, 2, 8, 8, generator=generator),
        "timestep": torch.tensor([400.0]),
        "encoder_hidden_states": torch.randn(1, 32, 16, generator=generator),
        "return_dict": False,
    }
    reference = tiny_pipeline()  # both adapters active as LoRA layers, at their weights: what fusing must equal
    for adapter in adapters:
        reference.load_lora_weights(adapter["path"], adapter_name=adapter["name"])
    reference.set_adapters(["first", "second"], [1.0, 0.5])
    with torch.no_grad():
        expected = reference.transformer(**inputs)[0]
        reference.set_adapters(["second"], [0.5])
        only_last = reference.transformer(**inputs)[0]

    model = load_wan_world_model({"base": str(base_dir), "steps": 2, "model_id": "fused", "adapters": adapters})
    transformer = model.pipeline.transformer
    assert not any("lora" in name for name, _ in transformer.named_parameters())
    with torch.no_grad():
        fused = transformer(**inputs)[0]
    assert torch.allclose(fused, expected, atol=1e-5)
    assert not torch.allclose(fused, only_last, atol=1e-3)  # the first adapter counts too
    unfused = load_wan_world_model(
        {"base": str(base_dir), "steps": 2, "model_id": "unfused", "adapters": adapters}, fuse_adapters=False
    )
    with torch.no_grad():  # LoRA layers left in place: both adapters still apply, each at its weight
        assert torch.allclose(unfused.pipeline.transformer(**inputs)[0], expected, atol=1e-5)
