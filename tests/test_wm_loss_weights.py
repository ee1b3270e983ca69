"""The transformer's loss weights: which pixels count as foreground, how they land on the latent grid, and that
the weighted loss is the plain one when every weight is equal."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from eva_runtime.training.wm_loss_weights import clip_weights, foreground_mask, latent_weights


def scene(length: int = 9, size: int = 16) -> np.ndarray:
    """A grey table, a still red cube at (2, 2) and a grey arm block sliding right one pixel a frame."""
    frames = np.full((length, size, size, 3), 90, np.uint8)
    frames[:, 2, 2] = (200, 40, 40)
    for t in range(length):
        frames[t, 10:12, t : t + 3] = 200
    return frames


def test_the_cube_and_what_moves_are_foreground_the_still_table_is_not() -> None:
    frames = scene()
    mask = foreground_mask(frames)
    assert mask[:, 2, 2].all()  # saturated, though it never moves
    assert mask[0, 10, 0] and not mask[8, 10, 0]  # the arm's pixels are foreground only where the arm is
    assert not mask[:, 5, 5].any() and not mask[:, 14, 14].any()
    assert mask.mean() < 0.1


@settings(max_examples=200, deadline=None)
@given(mask=arrays(np.bool_, (9, 8, 8), elements=st.sampled_from([False] * 9 + [True])))
def test_a_latent_cell_is_weighted_exactly_when_its_pixels_and_frames_hold_foreground(mask: np.ndarray) -> None:
    weights = latent_weights(mask, spatial=4, temporal=4, foreground_weight=3.0)
    assert weights.shape == (3, 2, 2) and weights.dtype == np.float32
    groups = [[0], [1, 2, 3, 4], [5, 6, 7, 8]]  # the causal VAE: the first frame alone, then groups of four
    for t, frames in enumerate(groups):
        for i in range(2):
            for j in range(2):
                block = mask[frames, 4 * i : 4 * i + 4, 4 * j : 4 * j + 4]
                assert weights[t, i, j] == (4.0 if block.any() else 1.0)


def test_clips_follow_the_latents_order_and_a_clip_that_does_not_fit_is_refused() -> None:
    videos = [scene(13), scene(17)]
    pairs = [(e, s) for e, video in enumerate(videos) for s in range(0, len(video) - 8, 4)]
    weights = clip_weights(videos, pairs, clip=9, spatial=4, temporal=4, foreground_weight=2.0)
    assert weights.shape == (2 + 3, 3, 4, 4)  # starts 0, 4 of the first video; 0, 4, 8 of the second
    assert set(np.unique(weights)) <= {1.0, 3.0}
    with pytest.raises(ValueError, match="factors"):
        latent_weights(np.zeros((8, 8, 8), bool), 4, 4, 1.0)  # 8 frames do not fit a time factor of 4


def test_equal_weights_give_the_plain_loss_and_uneven_ones_change_it() -> None:
    import torch

    from eva_runtime.training.wm_sft import flow_matching_loss

    from .wan_helpers import tiny_pipeline

    pipeline = tiny_pipeline(seed=2)
    torch.manual_seed(0)
    latents = torch.randn(2, pipeline.vae.config.z_dim, 3, 4, 4)
    embeds = torch.randn(2, 8, pipeline.transformer.config.text_dim)

    def loss(weights):
        with torch.no_grad():
            return float(
                flow_matching_loss(
                    pipeline.transformer, latents, embeds, 1, torch.Generator().manual_seed(5), 3.0, weights
                )
            )

    plain = loss(None)
    assert np.isclose(loss(torch.full((2, 3, 4, 4), 2.5)), plain, rtol=1e-5)
    uneven = torch.ones(2, 3, 4, 4)
    uneven[:, :, :2] = 10.0
    assert not np.isclose(loss(uneven), plain, rtol=1e-3)
