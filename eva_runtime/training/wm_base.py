"""Make the tiny Wan base model for the simulated robot: tokenizer + fixed text encoder + trained VAE + a fresh
transformer, saved as a diffusers `WanImageToVideoPipeline` directory that SFT then fine-tunes.

Reproducible: the episode files, the seed and the settings determine every weight (one torch thread count
changes only float summation order).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path

from eva_runtime.training.wm_data import load_videos
from eva_runtime.training.wm_vae import VaeSettings, latent_statistics, reconstruction_psnr, train_vae
from eva_runtime.world_model.wan.model_files import write_hashes

__all__ = ["make_base_model"]


def make_base_model(
    data: Path,
    out: Path,
    config,
    vae_settings: VaeSettings,
    camera: str = "cam_high",
    fps: float = 12.5,
    held_out: int = 10,
    progress: Callable[[int, float], None] | None = None,
    phase_one_vae=None,
) -> dict:
    """Train the VAE on all but the last `held_out` episodes, save the pipeline to `out`, return the metrics.

    `phase_one_vae`: a VAE that already went through the first (short-clip) phase with these settings; only the
    long-clip phase runs then (how the shipped base was finished after its first phase had been saved).
    """
    import dataclasses

    import torch

    from eva_runtime.sim.tasks import TASKS
    from eva_runtime.world_model.wan.components import build_pipeline, build_vae, instruction_vocabulary

    videos = load_videos(data, camera, fps, config.image_size)
    if len(videos) <= held_out:
        raise ValueError(f"{data}: {len(videos)} episodes, need more than the {held_out} held out")
    train, validation = videos[:-held_out], videos[-held_out:]
    instructions = [spec.instruction for spec in TASKS.values()] + [v.instruction for v in videos]
    config = dataclasses.replace(config, vocabulary=instruction_vocabulary(instructions))
    began = time.perf_counter()
    if phase_one_vae is None:
        torch.manual_seed(vae_settings.seed)
        vae = build_vae(config)
        losses = train_vae(vae, train, vae_settings, progress)
    else:
        vae, losses = phase_one_vae, []
    if vae_settings.finetune_steps:
        losses += train_vae(vae, train, vae_settings.finetune(), progress)
    seconds = time.perf_counter() - began
    mean, std = latent_statistics(vae, train, vae_settings.clip)
    vae.register_to_config(latents_mean=mean, latents_std=std)
    pipeline = build_pipeline(config, vae=vae, seed=vae_settings.seed)
    out.mkdir(parents=True, exist_ok=True)
    pipeline.save_pretrained(out, safe_serialization=True)
    metrics = {
        "config": config.as_dict(),
        "camera": camera,
        "fps": fps,
        "vae_steps": vae_settings.steps,
        "vae_finetune_steps": vae_settings.finetune_steps,
        "vae_seconds": round(seconds, 1),
        "vae_final_loss": float(sum(losses[-50:]) / len(losses[-50:])),
        "vae_psnr_train_db": reconstruction_psnr(vae, train, 17),
        "vae_psnr_heldout_db": reconstruction_psnr(vae, validation, 17),
        "train_episodes": [v.name for v in train],
        "heldout_episodes": [v.name for v in validation],
    }
    (out / "eva_world_model.json").write_text(json.dumps(metrics, indent=2))
    write_hashes(out)
    return metrics
