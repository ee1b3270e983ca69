"""The CPU fast paths give the stock kernels' results, take the oneDNN route, and leave training untouched."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from eva_runtime.world_model.protocol import RolloutRequest
from eva_runtime.world_model.wan.backend import WanSettings, WanWorldModel
from eva_runtime.world_model.wan.cpu_fast_paths import install_cpu_fast_paths
from eva_runtime.world_model.wan.latents import decode_latents
from tests.wan_helpers import INSTRUCTION, tiny_pipeline


def _world_model(fast: bool) -> WanWorldModel:
    settings = WanSettings(
        base="tiny",
        camera="cam_high",
        fps=12.5,
        image_size=(32, 32),
        history_frames=5,
        steps=3,
        device="cpu",
        cpu_fast_paths=fast,
    )
    return WanWorldModel(tiny_pipeline(seed=3), settings)


def _ops(call) -> set[str]:
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as profile:
        call()
    return {event.key for event in profile.key_averages()}


def test_rollout_matches_the_stock_kernels_to_one_grey_level() -> None:
    frames = np.random.default_rng(0).integers(0, 256, (5, 32, 32, 3), dtype=np.uint8)
    request = RolloutRequest({"cam_high": frames}, INSTRUCTION, 9, seed=7)
    stock = _world_model(False).rollout(request).frames["cam_high"].astype(int)
    fast = _world_model(True).rollout(request).frames["cam_high"].astype(int)
    assert stock.shape == fast.shape == (1, 9, 32, 32, 3)
    assert np.abs(stock - fast).max() <= 1
    assert (stock != fast).mean() < 0.01


def test_batch_one_convolutions_take_onednn_instead_of_the_native_path() -> None:
    latents = torch.randn(1, 4, 3, 8, 8)
    stock_vae = tiny_pipeline(seed=1).vae
    fast_vae = tiny_pipeline(seed=1).vae
    assert install_cpu_fast_paths(fast_vae) > 0
    stock_ops = _ops(lambda: decode_latents(stock_vae, latents))
    fast_ops = _ops(lambda: decode_latents(fast_vae, latents))
    assert "aten::slow_conv3d_forward" in stock_ops
    assert "aten::slow_conv3d_forward" not in fast_ops
    assert "aten::mkldnn_convolution" in fast_ops
    assert "aten::linalg_vector_norm" in stock_ops
    assert "aten::linalg_vector_norm" not in fast_ops


def test_with_gradients_enabled_the_stock_path_runs_and_gradients_match() -> None:
    stock_vae = tiny_pipeline(seed=2).vae
    fast_vae = tiny_pipeline(seed=2).vae
    install_cpu_fast_paths(fast_vae)
    video = torch.rand(1, 3, 5, 32, 32) * 2 - 1
    losses = []
    for vae in (stock_vae, fast_vae):
        vae.zero_grad()
        loss = vae.encode(video).latent_dist.mode().square().mean()
        loss.backward()
        losses.append((float(loss.detach()), next(vae.encoder.parameters()).grad.clone()))
    assert losses[0][0] == pytest.approx(losses[1][0], rel=1e-6)
    assert torch.allclose(losses[0][1], losses[1][1], rtol=1e-5, atol=1e-8)


def test_world_model_on_the_cpu_installs_the_paths_only_when_asked() -> None:
    fast_ops = _ops(lambda: decode_latents(_world_model(True).pipeline.vae, torch.randn(1, 4, 2, 8, 8)))
    stock_ops = _ops(lambda: decode_latents(_world_model(False).pipeline.vae, torch.randn(1, 4, 2, 8, 8)))
    assert "aten::slow_conv3d_forward" in stock_ops
    assert "aten::slow_conv3d_forward" not in fast_ops


@settings(max_examples=25, deadline=None)
@given(
    channels=st.integers(1, 6),
    frames=st.integers(1, 4),
    side=st.integers(1, 9),
    scale=st.floats(1e-6, 1e3),
    zero=st.booleans(),
)
def test_channel_rms_norm_equals_diffusers_normalize(channels, frames, side, scale, zero) -> None:
    from diffusers.models.autoencoders.autoencoder_kl_wan import WanRMS_norm

    stock = WanRMS_norm(channels, images=False)
    fast = WanRMS_norm(channels, images=False)
    with torch.no_grad():
        stock.gamma.copy_(torch.linspace(0.5, 2.0, channels).view(-1, 1, 1, 1))
        fast.gamma.copy_(stock.gamma)
    install_cpu_fast_paths(fast)
    x = torch.randn(2, channels, frames, side, side) * scale
    if zero:
        x[:, :, 0] = 0.0  # an all-zero pixel: both divide by the 1e-12 floor, not by zero
    with torch.no_grad():
        expected, actual = stock(x), fast(x)
    assert torch.all(torch.isfinite(actual))
    assert torch.allclose(expected, actual, rtol=1e-5, atol=1e-6)
