"""`eva train world-model-cache|world-model-recipe|world-model-vae|world-model-sft-run|world-model-assemble` and
`eva train vae-roundtrip`: the world-model recipe that runs from one compact video cache, step by step."""

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
    VideoCacheOption,
    VideoFpsOption,
    set_torch_threads,
)


@train_app.command("world-model-cache")
def train_world_model_cache_command(
    data: Annotated[list[Path], typer.Option(help="Directories of recorded episode_{i}.hdf5 files (repeatable).")],
    out: Annotated[Path, typer.Option(help="The cache file (.npz).")],
    camera: str = "cam_high",
    fps: VideoFpsOption = 12.5,
    image_size: FrameSizeOption = SQUARE_64,
) -> None:
    """Recorded episodes -> one compact .npz (video, actions, instructions, fixed text embeddings) for the recipe."""
    from eva_runtime.training.wm_assemble import make_video_cache

    console.print_json(json.dumps(make_video_cache(data, out, camera, fps, image_size.hw)))


@train_app.command("world-model-recipe")
def train_world_model_recipe_command(
    cache: VideoCacheOption,
    out: Annotated[Path, typer.Option(help="Run directory: vae_*.safetensors, transformer.safetensors, recipe.json.")],
    vae_seconds: Annotated[float, typer.Option(help="Budget per VAE candidate (ignored with --vae-steps).")] = 55.0,
    vae_steps: Annotated[int | None, typer.Option(help="Exact steps per VAE candidate.")] = None,
    sft_seconds: Annotated[float, typer.Option(help="Transformer SFT budget (ignored with --sft-steps).")] = 240.0,
    sft_steps: Annotated[int | None, typer.Option(help="Exact transformer SFT steps.")] = None,
    candidates: Annotated[
        str, typer.Option(help="Comma-separated VAE candidates.")
    ] = "z8_t4_l1,z16_t4_fg,z32_t4_fg,z16_t2_fg",
    threads: PositiveIntOption = 2,
) -> None:
    """VAE candidates measured, one picked by the stated rule, transformer SFT on it (any torch device)."""
    from eva_runtime.training.wm_recipe import main

    set_torch_threads(threads)
    arguments = ["--cache", str(cache), "--out", str(out), "--candidates", candidates]
    arguments += ["--vae-steps", str(vae_steps)] if vae_steps else ["--vae-seconds", str(vae_seconds)]
    arguments += ["--sft-steps", str(sft_steps)] if sft_steps else ["--sft-seconds", str(sft_seconds)]
    main(arguments)


@train_app.command("world-model-sft-run")
def train_world_model_sft_run_command(
    cache: VideoCacheOption,
    vae: Annotated[Path, typer.Option(help="A trained VAE candidate file (`eva train world-model-vae`).")],
    out: Annotated[Path, typer.Option(help="Run directory (checkpoints, progress.jsonl, samples, recipe.json).")],
    steps: PositiveIntOption = 20000,
    batch: PositiveIntOption = 32,
    lr: Annotated[float, typer.Option(min=0.0)] = 5e-4,
    checkpoint_every: PositiveIntOption = 200,
    samples_every: PositiveIntOption = 2000,
    clip_stride: Annotated[int, typer.Option(min=1, help="Start a training clip every N frames.")] = 2,
    resume: Annotated[
        bool, typer.Option(help="Continue OUT from its last checkpoint (same settings and files).")
    ] = False,
    threads: PositiveIntOption = 2,
    init: Annotated[
        Path | None,
        typer.Option(
            help="Warm start (fresh optimizer) from a saved transformer of the same shape, or from an assembled"
            " world-model directory (hash-verified; its transformer)."
        ),
    ] = None,
    device: Annotated[str, typer.Option(help="cpu, or cuda on a GPU machine.")] = "cpu",
    warmup: Annotated[int, typer.Option(min=1, help="Learning-rate warm-up steps.")] = 300,
    foreground_weight: Annotated[
        float, typer.Option(min=0.0, help="Extra loss weight of latent cells showing the cube or a moving arm.")
    ] = 0.0,
    clips: Annotated[
        Path | None, typer.Option(help="A clip set (`eva train dagger-label`, `executed-label`) mixed into batches.")
    ] = None,
    clips_fraction: Annotated[
        float, typer.Option(min=0.0, max=0.9, help="With --clips: the share of each batch drawn from it.")
    ] = 0.0,
    seed: Annotated[
        int, typer.Option(min=0, help="Seeds batches, noise and timesteps (a warm start wants a new one).")
    ] = 0,
    end_padding: Annotated[
        int,
        typer.Option(
            min=0,
            help="Frames of the final (resting) pose appended to each episode: clips then start from states up to"
            " end + padding - horizon, so the model learns what follows the end of the task (holding still).",
        ),
    ] = 16,
    ema_decay: Annotated[
        float,
        typer.Option(
            min=0.0, max=0.9999, help="EMA of the weights (what is saved); its memory is about 1/(1 - decay) steps."
        ),
    ] = 0.999,
    history_frames: Annotated[
        int,
        typer.Option(
            min=1,
            help="Observed frames kept clean before each clip's future (1 + k x the VAE's time factor); 17 = 5"
            " observed + the 12 a plan commits to while the next is made (docs/world_model.md).",
        ),
    ] = 5,
) -> None:
    """Long, resumable transformer SFT on a cache and a VAE; `world-model-assemble --recipe OUT` packages it."""
    from eva_runtime.training.wm_transformer_run import TransformerRun, train_transformer_run

    set_torch_threads(threads)
    run = TransformerRun(
        steps=steps,
        batch=batch,
        lr=lr,
        checkpoint_every=checkpoint_every,
        samples_every=samples_every,
        clip_stride=clip_stride,
        device=device,
        warmup=warmup,
        foreground_weight=foreground_weight,
        clips_fraction=clips_fraction,
        seed=seed,
        ema_decay=ema_decay,
        end_padding=end_padding,
        history_frames=history_frames,
    )
    try:
        train_transformer_run(
            cache, vae, out, run, resume=resume, log=lambda line: console.print(line), init=init, clips=clips
        )
    except ValueError as error:
        console.print(f"[red]error:[/red] {error}")
        raise typer.Exit(2) from None


@train_app.command("world-model-assemble")
def train_world_model_assemble_command(
    recipe: Annotated[Path, typer.Option(help="A world-model-recipe run directory.")],
    cache: Annotated[Path, typer.Option(help="The video cache the recipe ran on (its SHA-256 is checked).")],
    out: Annotated[Path, typer.Option(help="New diffusers pipeline directory (hash-verified).")],
    vae: Annotated[str | None, typer.Option(help="A candidate other than the recipe's selection.")] = None,
) -> None:
    """The recipe's VAE + transformer + the tiny tokenizer and text encoder -> a verified pipeline directory."""
    from eva_runtime.training.wm_assemble import assemble_world_model

    description = assemble_world_model(recipe, cache, out, vae)
    console.print(f"world model written to {out} (VAE {description['recipe']['selection']['chosen']})")


@train_app.command("world-model-vae")
def train_world_model_vae_command(
    cache: VideoCacheOption,
    candidate: Annotated[str, typer.Option(help="A recipe candidate name (its architecture and loss weights).")],
    out: Annotated[Path, typer.Option(help="Candidate file (.safetensors); its measurement goes next to it (.json).")],
    steps: PositiveIntOption = 300,
    init: Annotated[Path | None, typer.Option(help="Start from this candidate file (same architecture).")] = None,
    short_share: Annotated[float, typer.Option(min=0.0, max=1.0, help="Share of steps on 9-frame clips.")] = 1.0,
    short_batch: PositiveIntOption = 8,
    long_batch: PositiveIntOption = 4,
    lr: float = 3e-4,
    held_out: PositiveIntOption = 10,
    threads: PositiveIntOption = 2,
    checkpoint_every: PositiveIntOption = 100,
    resume: Annotated[bool, typer.Option(help="Continue the run kept beside OUT (same cache and settings).")] = False,
) -> None:
    """Train (or fine-tune) one VAE candidate from a cache and measure it on the held-out episodes (cube included).
    The run's state is kept beside OUT every --checkpoint-every steps; --resume continues it."""
    from eva_runtime.training.vae_candidates import VaeTraining
    from eva_runtime.training.vae_run import VaeRun, train_vae_run

    set_torch_threads(threads)
    settings = VaeTraining(short_share=short_share, short_batch=short_batch, long_batch=long_batch, lr=lr)
    run = VaeRun(cache, candidate, out, steps, settings, init, held_out, checkpoint_every)
    try:
        result = train_vae_run(run, resume, console.print)
    except (ValueError, FileNotFoundError) as error:
        console.print(f"[red]error:[/red] {error}")
        raise typer.Exit(2) from None
    console.print_json(json.dumps(result))


@train_app.command("vae-roundtrip")
def train_vae_roundtrip_command(
    data: EpisodeDirOption,
    model: Annotated[
        Path, typer.Option(help="World-model pipeline directory, or a VAE candidate file with its .sha256 sidecar.")
    ],
    out: Annotated[Path, typer.Option(help="New episode directory (same joints and actions, camera re-rendered).")],
    camera: str = "cam_high",
    clip: Annotated[int, typer.Option(help="Frames per VAE clip (the world model's clip).")] = 41,
    limit: Annotated[int | None, typer.Option(min=1, help="Only the first N episodes.")] = None,
    image_size: FrameSizeOption = SQUARE_64,
    threads: PositiveIntOption = 2,
) -> None:
    """Episodes whose camera went through the world model's VAE: training data for an IDM that reads its frames.
    A rerun into the same OUT skips the episodes already written (same VAE and settings; others are refused)."""
    from eva_runtime.training.vae_roundtrip import roundtrip_episodes

    set_torch_threads(threads)
    try:
        written = roundtrip_episodes(data, model, out, camera, clip, limit, log=print, image_size=image_size.hw)
    except ValueError as error:
        console.print(f"[red]error:[/red] {error}")
        raise typer.Exit(2) from None
    console.print(f"{len(written)} episodes written to {out}")
