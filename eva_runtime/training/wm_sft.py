"""World-model SFT: flow-matching fine-tuning of the Wan transformer on recorded episodes.

Each training example is a clip of the robot's video at the IDM's fps: `history_frames` observed frames (the
conditioning, kept clean with timestep 0, as at inference) followed by the future, `horizon` frames from the last
observed one. Latents (VAE means, normalised) and the instruction's text embeddings are computed once before
training, because the VAE, not the transformer, dominates the cost on CPU (docs/references.md §3). The loss is the
rectified-flow velocity error on the noisy latent frames only: x_s = (1 - s) x0 + s e, target e - x0, with s drawn
logit-normal and shifted like the sampler's schedule.

Full fine-tuning (the tiny model: there is no pretrained transformer to adapt) or LoRA via peft (large models).
accelerate runs it on one process, several CPU ranks under torchrun (gloo), or several GPUs.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from eva_runtime.training.wm_data import EpisodeVideo, clip_starts

__all__ = ["SftSettings", "encode_clips", "flow_matching_loss", "train_world_model"]


@dataclass(frozen=True)
class SftSettings:
    steps: int = 6000
    batch: int = 8
    lr: float = 3e-4
    warmup: int = 200
    horizon: int = 17  # frames from the last observed one, that one included
    history_frames: int = 1
    clip_stride: int = 4  # start every n-th frame (clips overlap heavily; the VAE encode is the cost)
    lora_rank: int = 0  # 0: full fine-tune
    lora_alpha: float | None = None
    gradient_checkpointing: bool = False
    sample_every: int = 1000
    checkpoint_every: int = 2000
    held_out: int = 10
    sample_steps: int = 10
    max_sequence_length: int = 32
    seed: int = 0


def encode_clips(vae, videos: list[EpisodeVideo], clip: int, stride: int, progress=None):
    """Normalised latents of every clip (episode, start): (N, z, t, h, w) float32 and the (N, 2) index."""
    import torch

    from eva_runtime.world_model.wan.latents import encode_frames

    pairs = clip_starts([len(v.frames) for v in videos], clip, stride)
    chunks = []
    for begin in range(0, len(pairs), 8):
        chosen = pairs[begin : begin + 8]
        chunks.append(encode_frames(vae, np.stack([videos[e].frames[s : s + clip] for e, s in chosen])))
        if progress is not None:
            progress(min(begin + 8, len(pairs)), len(pairs))
    return torch.cat(chunks), pairs


def shifted_sigmas(uniform, shift: float):
    return shift * uniform / (1 + (shift - 1) * uniform)


def flow_matching_loss(transformer, latents, prompt_embeds, conditioned: int, generator, shift: float, weights=None):
    """Velocity MSE on the noisy frames; the first `conditioned` latent frames stay clean (timestep 0). `weights`
    (batch, t, h, w): per latent cell, normalised by their sum (wm_loss_weights.py); None: the plain mean."""
    import torch

    from eva_runtime.world_model.wan.sampling import token_timesteps

    batch = latents.shape[0]
    # Noise comes from the generator's device (a CUDA generator keeps the draw on the GPU), then meets the latents.
    sigma = shifted_sigmas(torch.sigmoid(torch.randn(batch, generator=generator, device=generator.device)), shift)
    noise = torch.randn(latents.shape, generator=generator, device=generator.device).to(latents.device)
    s = sigma.to(latents.device).view(-1, 1, 1, 1, 1)
    noisy = (1 - s) * latents + s * noise
    noisy[:, :, :conditioned] = latents[:, :, :conditioned]
    timestep = token_timesteps(sigma.cpu(), tuple(latents.shape), conditioned).to(latents.device)
    prediction = transformer(
        hidden_states=noisy, timestep=timestep, encoder_hidden_states=prompt_embeds, return_dict=False
    )[0]
    target = noise - latents
    if weights is None:
        return torch.nn.functional.mse_loss(prediction[:, :, conditioned:].float(), target[:, :, conditioned:])
    squared = (prediction[:, :, conditioned:].float() - target[:, :, conditioned:]) ** 2
    cells = weights[:, None, conditioned:].expand_as(squared)
    return (squared * cells).sum() / cells.sum()


def train_world_model(
    base: Path,
    videos: list[EpisodeVideo],
    out: Path,
    settings: SftSettings,
    log: Callable[[str], None] = print,
) -> dict:
    """Fine-tune the base pipeline's transformer; writes OUT/model (a verified pipeline dir, or OUT/lora)."""
    import torch
    from accelerate import Accelerator
    from diffusers import WanImageToVideoPipeline

    from eva_runtime.world_model.wan.model_files import verify_hashes

    accelerator = Accelerator(cpu=not torch.cuda.is_available())
    main = accelerator.is_main_process
    verify_hashes(base)
    pipeline = WanImageToVideoPipeline.from_pretrained(str(base), dtype=torch.float32)
    described = json.loads((base / "eva_world_model.json").read_text())
    clip, conditioned = _clip_geometry(pipeline, settings)
    if len(videos) <= settings.held_out:
        raise ValueError(f"{len(videos)} episodes: need more than the {settings.held_out} held out")
    train, validation = videos[: len(videos) - settings.held_out], videos[len(videos) - settings.held_out :]

    began = time.perf_counter()
    clips = _encode_training_clips(pipeline, train, videos, settings, clip, conditioned, main)
    encode_seconds = time.perf_counter() - began

    optimisation = _prepare_optimisation(accelerator, pipeline.transformer, settings)
    fps = float(described.get("fps", 12.5))
    history, train_began = _run_steps(accelerator, optimisation, pipeline, clips, validation, settings, out, fps)
    accelerator.wait_for_everyone()
    summary = {
        "settings": asdict(settings),
        "world_size": accelerator.num_processes,
        "clips": len(clips.latents),
        "encode_seconds": round(encode_seconds, 1),
        "train_seconds": round(time.perf_counter() - train_began, 1),
        "final_loss": float(np.mean(history[-100:])),
        "base": str(base),
        "train_episodes": [v.name for v in train],
        "heldout_episodes": [v.name for v in validation],
    }
    if main:
        _save_trained(accelerator.unwrap_model(optimisation.model), pipeline, described, summary, settings, out)
    accelerator.wait_for_everyone()
    log(f"SFT done: loss {summary['final_loss']:.4f}, {summary['train_seconds']} s on {summary['world_size']} rank(s)")
    return summary


@dataclass(frozen=True)
class _Clips:
    """The training data, encoded once: clip latents, each clip's text embedding, and every instruction's."""

    latents: Any  # (N, z, t, h, w) normalised VAE means
    clip_embeds: Any  # (N, tokens, dim)
    embeds: dict[str, Any]  # instruction -> (tokens, dim)
    conditioned: int  # latent frames kept clean (the observed history)


@dataclass(frozen=True)
class _Optimisation:
    """What the training steps update."""

    model: Any  # the transformer as accelerate prepared it (possibly a DDP wrapper)
    optimizer: Any
    schedule: Any
    parameters: list


def _clip_geometry(pipeline, settings: SftSettings) -> tuple[int, int]:
    """Frames per clip and the latent frames its history encodes to; refuses lengths the VAE cannot encode."""
    temporal = int(pipeline.vae.config.scale_factor_temporal)
    clip = settings.history_frames - 1 + settings.horizon
    if (clip - 1) % temporal or (settings.history_frames - 1) % temporal:
        raise ValueError(f"history_frames - 1 and horizon - 1 must be multiples of {temporal}")
    return clip, (settings.history_frames - 1) // temporal + 1


def _encode_training_clips(
    pipeline,
    train: list[EpisodeVideo],
    videos: list[EpisodeVideo],
    settings: SftSettings,
    clip: int,
    conditioned: int,
    main: bool,
) -> _Clips:
    """Latents of every training clip and the text embedding of every instruction (held-out ones too)."""
    import torch
    from tqdm.auto import tqdm

    bar = tqdm(total=1, desc="encoding clips", disable=not main)

    def encoding(done: int, total: int) -> None:
        bar.total = total
        bar.n = done
        bar.refresh()

    latents, pairs = encode_clips(pipeline.vae, train, clip, settings.clip_stride, encoding)
    bar.close()
    instructions = sorted({v.instruction for v in videos})
    with torch.no_grad():
        embeds = {
            text: pipeline.encode_prompt(
                text, do_classifier_free_guidance=False, max_sequence_length=settings.max_sequence_length
            )[0][0]
            for text in instructions
        }
    clip_embeds = torch.stack([embeds[train[e].instruction] for e, _ in pairs])
    return _Clips(latents, clip_embeds, embeds, conditioned)


def _prepare_optimisation(accelerator, transformer, settings: SftSettings) -> _Optimisation:
    """The transformer made trainable (in full, or a LoRA adapter), AdamW with warm-up + cosine, via accelerate."""
    import torch

    from eva_runtime.world_model.wan.lora import add_lora

    transformer.requires_grad_(settings.lora_rank == 0)
    if settings.lora_rank > 0:
        add_lora(transformer, "sft", settings.lora_rank, settings.lora_alpha)
    if settings.gradient_checkpointing:
        transformer.enable_gradient_checkpointing()
    transformer.train()
    parameters = [p for p in transformer.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(parameters, lr=settings.lr, weight_decay=0.0)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer,
        lambda s: min(1.0, (s + 1) / settings.warmup) * 0.5 * (1 + math.cos(math.pi * min(1.0, s / settings.steps))),
    )
    model, optimizer = accelerator.prepare(transformer, optimizer)
    return _Optimisation(model, optimizer, schedule, parameters)


def _run_steps(
    accelerator,
    optimisation: _Optimisation,
    pipeline,
    clips: _Clips,
    validation: list[EpisodeVideo],
    settings: SftSettings,
    out: Path,
    fps: float,
) -> tuple[list[float], float]:
    """The training steps; the main rank writes metrics and held-out samples. Returns the losses and the start time."""
    import torch
    from tqdm.auto import tqdm

    main, schedule = accelerator.is_main_process, optimisation.schedule
    # Each rank draws its own batches and noise, reproducibly for a seed and a world size.
    rank_seed = settings.seed * 1000 + accelerator.process_index
    generator = torch.Generator().manual_seed(rank_seed)
    rng = np.random.default_rng(rank_seed)
    out.mkdir(parents=True, exist_ok=True)
    metrics_path = out / "metrics.jsonl"
    if main:
        metrics_path.write_text("")
    shift = float(pipeline.scheduler.config.shift)
    history: list[float] = []
    train_began = time.perf_counter()
    progress = tqdm(range(settings.steps), desc="world-model SFT", disable=not main)
    for step in progress:
        history.append(_sft_step(accelerator, optimisation, clips, rng, generator, shift, settings.batch))
        if main:
            progress.set_postfix(loss=f"{np.mean(history[-50:]):.4f}")
            if step % 50 == 0 or step == settings.steps - 1:
                record = {"step": step, "loss": float(np.mean(history[-50:])), "lr": schedule.get_last_lr()[0]}
                record["seconds"] = round(time.perf_counter() - train_began, 1)
                with metrics_path.open("a") as handle:
                    handle.write(json.dumps(record) + "\n")
        last = step == settings.steps - 1
        if main and (last or (settings.sample_every and (step + 1) % settings.sample_every == 0)):
            path = out / "samples" / f"step_{step + 1:06d}.gif"
            _write_step_samples(accelerator, optimisation.model, pipeline, validation, clips, settings, path, fps)
    return history, train_began


def _sft_step(
    accelerator,
    optimisation: _Optimisation,
    clips: _Clips,
    rng: np.random.Generator,
    generator,
    shift: float,
    batch: int,
) -> float:
    """One optimiser step on a random batch of clips; returns the loss averaged over the ranks."""
    chosen = rng.integers(0, len(clips.latents), batch)
    loss = flow_matching_loss(
        optimisation.model, clips.latents[chosen], clips.clip_embeds[chosen], clips.conditioned, generator, shift
    )
    optimisation.optimizer.zero_grad(set_to_none=True)
    accelerator.backward(loss)
    accelerator.clip_grad_norm_(optimisation.parameters, 1.0)
    optimisation.optimizer.step()
    optimisation.schedule.step()
    return accelerator.reduce(loss.detach(), reduction="mean").item()


def _write_step_samples(
    accelerator,
    model,
    pipeline,
    validation: list[EpisodeVideo],
    clips: _Clips,
    settings: SftSettings,
    path: Path,
    fps: float,
) -> None:
    """Held-out samples with the current weights, then the model back in training mode."""
    from eva_runtime.world_model.wan.latents import decode_latents
    from eva_runtime.world_model.wan.sampling import Denoiser, euler_sample, flow_sigmas

    _write_samples(
        accelerator.unwrap_model(model),
        pipeline,
        validation,
        clips.embeds,
        settings,
        clips.conditioned,
        path,
        Denoiser,
        euler_sample,
        flow_sigmas,
        decode_latents,
        fps,
    )
    model.train()


def _save_trained(unwrapped, pipeline, described: dict, summary: dict, settings: SftSettings, out: Path) -> None:
    """OUT/lora, or OUT/model (a hashed pipeline whose description records this run); then OUT/summary.json."""
    from eva_runtime.world_model.wan.lora import save_lora
    from eva_runtime.world_model.wan.model_files import write_hashes

    unwrapped.eval()
    if settings.lora_rank > 0:
        save_lora(unwrapped, "sft", out / "lora")
    else:
        pipeline.transformer = unwrapped
        target = out / "model"
        pipeline.save_pretrained(target, safe_serialization=True)
        description = dict(described)
        description.update({"sft": summary})
        (target / "eva_world_model.json").write_text(json.dumps(description, indent=2))
        write_hashes(target)
    (out / "summary.json").write_text(json.dumps(summary, indent=2))


def _write_samples(
    model, pipeline, validation, embeds, settings, conditioned, path, denoiser_type, sample, sigmas, decode, fps
) -> None:
    """Two held-out conditions: ground truth | generated, one GIF."""
    import torch

    from eva_runtime.training.wm_samples import side_by_side, write_gif
    from eva_runtime.world_model.wan.latents import encode_frames

    model.eval()
    clip = settings.history_frames - 1 + settings.horizon
    rows = []
    for index, video in enumerate(validation[:2]):
        truth = video.frames[:clip]
        clean = encode_frames(pipeline.vae, truth[None])
        generator = torch.Generator().manual_seed(index)
        noise = torch.randn(clean.shape, generator=generator)
        condition = torch.zeros_like(clean)
        condition[:, :, :conditioned] = clean[:, :, :conditioned]
        denoiser = denoiser_type(model, embeds[video.instruction][None], condition, conditioned)
        generated = decode(pipeline.vae, sample(denoiser, noise, sigmas(pipeline.scheduler, settings.sample_steps)))
        rows.append(side_by_side(truth, generated[0]))
    write_gif(path, np.concatenate(rows, axis=1), fps)
