"""How a transformer SFT run is watched: the held-out flow-matching loss with a fixed noise draw (comparable across
checkpoints) and deterministic sample rollouts of held-out episodes (GIF, PSNR, cube fidelity), on clips padded
the way inference pads a fresh episode."""

from __future__ import annotations

import numpy as np

from eva_runtime.training.wm_data import EpisodeVideo

__all__ = ["held_out_loss", "pad_video", "padded_clips", "sample_rollouts"]


def pad_video(video: EpisodeVideo, front: int, back: int) -> np.ndarray:
    """Frames with the first one repeated `front` times before (a fresh episode has no history: inference repeats
    the oldest frame the same way) and the last one `back` times after."""
    frames = video.frames
    return np.concatenate([np.repeat(frames[:1], front, 0), frames, np.repeat(frames[-1:], back, 0)])


def padded_clips(videos, history_frames: int, end_padding: int, clip: int, stride: int):
    """Every training clip of the videos as (padded videos, [(episode, start frame)]): episode by episode, starts
    0, stride, 2 * stride, ... The one cut the latents and the loss weights share."""
    padded = [pad_video(v, history_frames - 1, end_padding) for v in videos]
    return padded, [(e, s) for e, f in enumerate(padded) for s in range(0, len(f) - clip + 1, stride)]


def held_out_loss(model, latents, embeds, conditioned, shift, device, repeats: int = 4) -> float:
    """Flow-matching loss on held-out clips with a fixed noise draw (comparable across checkpoints)."""
    import torch

    from eva_runtime.training.wm_sft import flow_matching_loss

    generator = torch.Generator(device=device).manual_seed(1234)
    values = []
    with torch.no_grad():
        for _ in range(repeats):
            for begin in range(0, len(latents), 64):
                part = slice(begin, begin + 64)
                values.append(
                    float(flow_matching_loss(model, latents[part], embeds[part], conditioned, generator, shift))
                )
    return float(np.mean(values))


def sample_rollouts(model, vae, held, cache, config, history_frames, horizon, end_padding, sample_steps, path):
    """Deterministic rollouts of the first held-out episodes at three points of the task: PSNR, cube, GIF."""
    import torch

    from eva_runtime.training.wm_samples import side_by_side, write_gif
    from eva_runtime.world_model.fidelity import cube_fidelity
    from eva_runtime.world_model.wan.components import build_scheduler
    from eva_runtime.world_model.wan.latents import decode_latents, encode_frames
    from eva_runtime.world_model.wan.sampling import Denoiser, euler_sample, flow_sigmas

    clip = history_frames - 1 + horizon
    conditioned = (history_frames - 1) // config.temporal_factor + 1
    index = {text: i for i, text in enumerate(cache.instructions)}
    scheduler = build_scheduler(config)
    rows, truths, generated = [], [], []
    for number, video in enumerate(held[:4]):
        padded = pad_video(video, history_frames - 1, end_padding)
        for start in (0, 24, 48):
            if start + clip > len(padded):
                continue
            truth = padded[start : start + clip]
            clean = encode_frames(vae, truth[None])
            noise = torch.randn(clean.shape, generator=torch.Generator().manual_seed(number * 100 + start))
            condition = torch.zeros_like(clean)
            condition[:, :, :conditioned] = clean[:, :, :conditioned]
            embeds = torch.from_numpy(cache.text_embeds[index[video.instruction]][None]).to(clean.device)
            denoiser = Denoiser(model, embeds, condition, conditioned)
            with torch.no_grad():
                final = euler_sample(denoiser, noise.to(clean.device), flow_sigmas(scheduler, sample_steps))
            video_out = decode_latents(vae, final)[0]
            future = slice(history_frames - 1, clip)
            truths.append(truth[future])
            generated.append(video_out[future])
            if number < 2:
                rows.append(side_by_side(truth, video_out))
    write_gif(path, np.concatenate(rows, axis=1), cache.fps)
    return cube_fidelity(np.stack(truths), np.stack(generated)).as_dict()
