"""`eva train world-model-base`, `eva train world-model` (SFT) and `eva train align` (Flow-GRPO): the Wan world
model trained straight from recorded episode directories."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from eva_runtime.cli.common import console
from eva_runtime.cli.models import train_app
from eva_runtime.cli.options import (
    SQUARE_64,
    EpisodeDirOption,
    FrameSizeOption,
    PositiveIntOption,
    VideoFpsOption,
    set_torch_threads,
)


@train_app.command("world-model-base")
def train_world_model_base_command(
    data: EpisodeDirOption,
    out: Annotated[Path, typer.Option(help="New diffusers pipeline directory.")],
    vae_steps: Annotated[int, typer.Option(min=1, help="VAE steps on 5-frame clips (batch 8).")] = 700,
    vae_finetune_steps: Annotated[int, typer.Option(min=0, help="Then VAE steps on 17-frame clips (batch 4).")] = 250,
    camera: str = "cam_high",
    fps: VideoFpsOption = 12.5,
    image_size: FrameSizeOption = SQUARE_64,
    seed: int = 0,
    threads: PositiveIntOption = 2,
) -> None:
    """The tiny Wan base model: word-level tokenizer, fixed tiny UMT5, VAE trained on DATA, fresh transformer."""
    from eva_runtime.training.wm_base import make_base_model
    from eva_runtime.training.wm_vae import VaeSettings
    from eva_runtime.world_model.wan.components import TinyWanConfig

    set_torch_threads(threads)
    from tqdm.auto import tqdm

    bar = tqdm(total=vae_steps + vae_finetune_steps, desc="VAE")

    def progress(step: int, loss: float) -> None:
        bar.update(1)
        bar.set_postfix(loss=f"{loss:.4f}")

    metrics = make_base_model(
        data,
        out,
        TinyWanConfig(image_size=image_size.hw),
        VaeSettings(steps=vae_steps, seed=seed, finetune_steps=vae_finetune_steps),
        camera=camera,
        fps=fps,
        progress=progress,
    )
    bar.close()
    console.print(
        f"base model written to {out}: VAE reconstruction PSNR {metrics['vae_psnr_train_db']:.2f} dB (train), "
        f"{metrics['vae_psnr_heldout_db']:.2f} dB (held-out episodes), {metrics['vae_seconds']:.0f} s"
    )


@train_app.command("world-model")
def train_world_model_command(
    base: Annotated[Path, typer.Option(help="Base diffusers pipeline directory (with eva_hashes.json).")],
    data: EpisodeDirOption,
    out: Annotated[Path, typer.Option(help="Run directory: model/ (or lora/), samples/, metrics.jsonl.")],
    steps: PositiveIntOption = 6000,
    batch_size: PositiveIntOption = 8,
    learning_rate: float = 3e-4,
    horizon: Annotated[int, typer.Option(help="Frames from the observed one, that one included.")] = 17,
    history_frames: Annotated[int, typer.Option(help="Observed frames kept clean (1 + k * 4).")] = 1,
    clip_stride: PositiveIntOption = 4,
    lora_rank: Annotated[int, typer.Option(min=0, help="0: full fine-tune (tiny models); > 0: LoRA via peft.")] = 0,
    gradient_checkpointing: bool = False,
    sample_every: Annotated[int, typer.Option(min=0, help="Steps between sample GIFs (0: only at the end).")] = 1000,
    held_out: Annotated[int, typer.Option(min=1, help="Last episodes kept for sample videos.")] = 10,
    seed: int = 0,
    threads: PositiveIntOption = 2,
) -> None:
    """Flow-matching SFT of the Wan transformer on recorded episodes (run under torchrun for several ranks)."""
    from eva_runtime.training.wm_data import load_videos
    from eva_runtime.training.wm_sft import SftSettings, train_world_model

    set_torch_threads(threads)
    described = json.loads((base / "eva_world_model.json").read_text())
    size = tuple(described["config"]["image_size"])
    videos = load_videos(data, described["camera"], described["fps"], size)
    settings = SftSettings(
        steps=steps,
        batch=batch_size,
        lr=learning_rate,
        horizon=horizon,
        history_frames=history_frames,
        clip_stride=clip_stride,
        lora_rank=lora_rank,
        gradient_checkpointing=gradient_checkpointing,
        sample_every=sample_every,
        held_out=held_out,
        seed=seed,
    )
    train_world_model(base, videos, out, settings, log=console.print)


@train_app.command("align")
def train_align_command(
    config: Annotated[Path, typer.Option(help="Alignment YAML (configs/align_tiny.yaml, configs/align_wan14b.yaml).")],
    out: Annotated[Path, typer.Option(help="Run directory: telemetry.jsonl, samples/, best_lora/, last/.")],
    resume: Annotated[bool, typer.Option(help="Continue from OUT/last/.")] = False,
    iterations: Annotated[int | None, typer.Option(min=1, help="Override the config's iterations.")] = None,
    base: Annotated[Path | None, typer.Option(help="Override the config's base (SFT model).")] = None,
    data: Annotated[Path | None, typer.Option(help="Override the config's episode directory.")] = None,
    bundle: Annotated[Path | None, typer.Option(help="Override the config's bundle.")] = None,
    threads: PositiveIntOption = 1,
) -> None:
    """Flow-GRPO with the frozen IDM's executability reward; LoRA on the SFT weights; KL to the SFT model."""
    from eva_runtime.training.align import train_align
    from eva_runtime.training.align_config import AlignConfigError, load_align_config

    set_torch_threads(threads)
    overrides = {"iterations": iterations, "base": base, "data": data, "bundle": bundle}
    try:
        settings = load_align_config(config, **{k: str(v) if isinstance(v, Path) else v for k, v in overrides.items()})
    except AlignConfigError as error:
        console.print(f"[red]error:[/red] {error}", soft_wrap=True)
        raise typer.Exit(2) from None
    try:
        summary = train_align(settings, out, resume=resume, log=console.print)
    except ValueError as error:  # a mismatched resumption, a capture that does not fit the model, bad episodes
        console.print(f"[red]error:[/red] {error}", soft_wrap=True)
        raise typer.Exit(2) from None
    console.print(f"alignment finished: {summary['iterations']} iterations; best held-out check {summary['best']}")
