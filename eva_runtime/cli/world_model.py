"""`eva train world-model-base`, `eva train world-model` (SFT), `eva eval world-model` (open loop, held out)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from eva_runtime.cli.common import console
from eva_runtime.cli.models import eval_app, train_app


def _threads(threads: int) -> None:
    import torch

    torch.set_num_threads(threads)


@train_app.command("world-model-base")
def train_world_model_base_command(
    data: Annotated[Path, typer.Option(help="Directory of recorded episode_XXXX.hdf5 files.")],
    out: Annotated[Path, typer.Option(help="New diffusers pipeline directory.")],
    vae_steps: Annotated[int, typer.Option(min=1, help="VAE steps on 5-frame clips (batch 8).")] = 700,
    vae_finetune_steps: Annotated[int, typer.Option(min=0, help="Then VAE steps on 17-frame clips (batch 4).")] = 250,
    camera: str = "cam_high",
    fps: Annotated[float, typer.Option(help="Video rate: the IDM's fps.")] = 12.5,
    image_size: Annotated[int, typer.Option(help="Square frame size in pixels.")] = 64,
    seed: int = 0,
    threads: Annotated[int, typer.Option(min=1)] = 2,
) -> None:
    """The tiny Wan base model: word-level tokenizer, fixed tiny UMT5, VAE trained on DATA, fresh transformer."""
    from eva_runtime.training.wm_base import make_base_model
    from eva_runtime.training.wm_vae import VaeSettings
    from eva_runtime.world_model.wan.components import TinyWanConfig

    _threads(threads)
    from tqdm.auto import tqdm

    bar = tqdm(total=vae_steps + vae_finetune_steps, desc="VAE")

    def progress(step: int, loss: float) -> None:
        bar.update(1)
        bar.set_postfix(loss=f"{loss:.4f}")

    metrics = make_base_model(
        data,
        out,
        TinyWanConfig(image_size=(image_size, image_size)),
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
    data: Annotated[Path, typer.Option(help="Directory of recorded episode_XXXX.hdf5 files.")],
    out: Annotated[Path, typer.Option(help="Run directory: model/ (or lora/), samples/, metrics.jsonl.")],
    steps: Annotated[int, typer.Option(min=1)] = 6000,
    batch_size: Annotated[int, typer.Option(min=1)] = 8,
    learning_rate: float = 3e-4,
    horizon: Annotated[int, typer.Option(help="Frames from the observed one, that one included.")] = 17,
    history_frames: Annotated[int, typer.Option(help="Observed frames kept clean (1 + k * 4).")] = 1,
    clip_stride: Annotated[int, typer.Option(min=1)] = 4,
    lora_rank: Annotated[int, typer.Option(min=0, help="0: full fine-tune (tiny models); > 0: LoRA via peft.")] = 0,
    gradient_checkpointing: bool = False,
    sample_every: Annotated[int, typer.Option(min=0, help="Steps between sample GIFs (0: only at the end).")] = 1000,
    held_out: Annotated[int, typer.Option(min=1, help="Last episodes kept for sample videos.")] = 10,
    seed: int = 0,
    threads: Annotated[int, typer.Option(min=1)] = 2,
) -> None:
    """Flow-matching SFT of the Wan transformer on recorded episodes (run under torchrun for several ranks)."""
    from eva_runtime.training.wm_data import load_videos
    from eva_runtime.training.wm_sft import SftSettings, train_world_model

    _threads(threads)
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


@eval_app.command("world-model")
def eval_world_model_command(
    model: Annotated[Path, typer.Option(help="World-model pipeline directory (verified by eva_hashes.json).")],
    bundle: Annotated[Path, typer.Option(help="Bundle whose IDM and reward score the rollouts.")],
    data: Annotated[Path, typer.Option(help="Held-out episode directory.")],
    out: Annotated[Path, typer.Option(help="JSON results file (a Markdown table is written next to it).")],
    adapter: Annotated[list[Path] | None, typer.Option(help="LoRA adapter directories to load.")] = None,
    episodes: Annotated[int, typer.Option(min=1)] = 50,
    starts: Annotated[str, typer.Option(help="Comma-separated start frames (at the model's fps).")] = "0,16,32,48",
    horizon: int = 17,
    steps: Annotated[int, typer.Option(min=1, help="Sampling steps.")] = 10,
    samples: Annotated[int, typer.Option(min=1, help="Rollouts per condition.")] = 1,
    seed: int = 0,
    threads: Annotated[int, typer.Option(min=1)] = 2,
    save_actions: Annotated[
        Path | None, typer.Option(help="Write the decoded rollout actions (G, T, J) as .npy, for eva calibrate reward.")
    ] = None,
) -> None:
    """Frame PSNR against the recorded future and executability of IDM-decoded rollouts vs the recorded video."""
    from eva_runtime.bundle import load_bundle
    from eva_runtime.idm.decoder import IdmDecoder
    from eva_runtime.reward import RewardConfig
    from eva_runtime.training.wm_data import load_videos
    from eva_runtime.world_model.evaluation import evaluate_world_model, summarise
    from eva_runtime.world_model.wan.backend import load_wan_world_model

    _threads(threads)
    deployed = load_bundle(bundle)
    decoder = IdmDecoder(deployed.idm_path, deployed.hashes()["idm"])
    reward = deployed.manifest.reward
    config = RewardConfig.from_embodiment(
        deployed.embodiment, decoder.fps, p0=reward.p0, form=reward.form, gamma=reward.gamma
    )
    adapters = [{"name": f"adapter{i}", "path": str(p)} for i, p in enumerate(adapter or [])]
    world_model = load_wan_world_model(
        {"base": str(model), "adapters": adapters, "steps": steps, "model_id": model.name}
    )
    size = world_model.settings.image_size
    videos = load_videos(data, world_model.settings.camera, world_model.fps, size)[:episodes]
    kept: list = []
    results = evaluate_world_model(
        world_model,
        decoder,
        config,
        videos,
        [int(s) for s in starts.split(",")],
        horizon,
        samples,
        seed,
        keep_actions=kept,
    )
    if save_actions is not None:
        import numpy as np

        np.save(save_actions, np.stack(kept), allow_pickle=False)
    summary = summarise(results)
    summary.update({"model_dir": str(model), "adapters": [str(p) for p in adapter or []], "steps": steps})
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"summary": summary, "conditions": [r.__dict__ for r in results]}, indent=2))
    table = _markdown(summary)
    out.with_suffix(".md").write_text(table)
    console.print(table)


def _markdown(summary: dict) -> str:
    def cell(triple) -> str:
        mean, low, high = triple
        return f"{mean:.3f} [{low:.3f}, {high:.3f}]"

    lines = [
        f"Conditions: {summary['conditions']}; frame PSNR {cell(summary['psnr_db'])} dB; "
        f"median rollout {summary['rollout_seconds_median']:.2f} s",
        "",
        "| video | reward | kinematically plausible | jerk penalty | motion (rad) |",
        "|---|---|---|---|---|",
    ]
    for source in ("model", "truth"):
        row = summary[source]
        lines.append(
            f"| {source} | {cell(row['reward'])} | {cell(row['plausible'])} | {cell(row['p_jerk'])} "
            f"| {cell(row['motion_rad'])} |"
        )
    return "\n".join(lines) + "\n"


@train_app.command("align")
def train_align_command(
    config: Annotated[Path, typer.Option(help="Alignment YAML (configs/align_tiny.yaml, configs/align_wan14b.yaml).")],
    out: Annotated[Path, typer.Option(help="Run directory: telemetry.jsonl, samples/, best_lora/, last/.")],
    resume: Annotated[bool, typer.Option(help="Continue from OUT/last/.")] = False,
    iterations: Annotated[int | None, typer.Option(min=1, help="Override the config's iterations.")] = None,
    base: Annotated[Path | None, typer.Option(help="Override the config's base (SFT model).")] = None,
    data: Annotated[Path | None, typer.Option(help="Override the config's episode directory.")] = None,
    bundle: Annotated[Path | None, typer.Option(help="Override the config's bundle.")] = None,
    threads: Annotated[int, typer.Option(min=1)] = 1,
) -> None:
    """Flow-GRPO with the frozen IDM's executability reward; LoRA on the SFT weights; KL to the SFT model."""
    from eva_runtime.training.align import train_align
    from eva_runtime.training.align_config import AlignConfigError, load_align_config

    _threads(threads)
    overrides = {"iterations": iterations, "base": base, "data": data, "bundle": bundle}
    try:
        settings = load_align_config(config, **{k: str(v) if isinstance(v, Path) else v for k, v in overrides.items()})
    except AlignConfigError as error:
        console.print(f"[red]error:[/red] {error}", soft_wrap=True)
        raise typer.Exit(2) from None
    summary = train_align(settings, out, resume=resume, log=console.print)
    console.print(f"alignment finished: {summary['iterations']} iterations; best held-out check {summary['best']}")


@eval_app.command("compare")
def eval_compare_command(
    bundles: Annotated[str, typer.Option(help="name=bundle_dir pairs, comma-separated, in table order.")],
    data: Annotated[Path, typer.Option(help="Held-out episode directory (open-loop conditions).")],
    out: Annotated[Path, typer.Option(help="Directory for compare.md, compare.json, compare.png, run logs.")],
    task: str = "transfer_cube",
    episodes: Annotated[int, typer.Option(min=1, help="Held-out episodes for the open-loop conditions.")] = 50,
    starts: Annotated[str, typer.Option(help="Comma-separated start frames (model fps).")] = "0,16,32,48",
    horizon: int = 17,
    closed_loop_episodes: Annotated[int, typer.Option(min=0, help="eva run episodes per bundle (0: skip).")] = 50,
    first_seed: Annotated[int, typer.Option(help="Closed-loop episode i uses seed first_seed + i.")] = 1000,
    sync: Annotated[bool, typer.Option(help="Closed loop in synchronous mode.")] = False,
    reward_from: Annotated[
        str | None, typer.Option(help="Bundle name whose reward constants (P0) score every row (default: first wan).")
    ] = None,
    threads: Annotated[int, typer.Option(min=1)] = 2,
) -> None:
    """Oracle / SFT / aligned side by side: open-loop executability and PSNR, closed-loop success (Wilson 95 %)."""
    from eva_runtime.bundle import load_bundle
    from eva_runtime.training.wm_data import load_videos
    from eva_runtime.world_model.comparison import closed_loop, open_loop, plot, render_table, reward_config_of

    _threads(threads)
    pairs = [item.split("=", 1) for item in bundles.split(",")]
    if any(len(pair) != 2 for pair in pairs):
        console.print("[red]error:[/red] --bundles takes name=directory pairs separated by commas")
        raise typer.Exit(2)
    out.mkdir(parents=True, exist_ok=True)
    start_frames = [int(s) for s in starts.split(",")]
    rows: dict[str, dict] = {}
    videos_cache: dict = {}
    loaded = {name: load_bundle(Path(directory)) for name, directory in pairs}
    wan = [name for name, bundle in loaded.items() if bundle.manifest.world_model.kind == "wan"]
    scorer = reward_from or (wan[0] if wan else pairs[0][0])
    if scorer not in loaded:
        console.print(f"[red]error:[/red] --reward-from {scorer!r} is not one of {', '.join(loaded)}")
        raise typer.Exit(2)
    reward_config = reward_config_of(loaded[scorer])
    console.print(f"every row scored with the reward of {scorer!r} (P0 {reward_config.p0:g})")
    for name, directory in pairs:
        deployed = loaded[name]
        fps = deployed.manifest.world_model.fps
        size = tuple(deployed.manifest.idm.image_size)
        camera = deployed.manifest.idm.cameras[0]
        key = (camera, fps, size)
        if key not in videos_cache:
            videos_cache[key] = load_videos(data, camera, fps, size)[:episodes]
        console.print(f"[bold]{name}[/bold]: open loop on {len(videos_cache[key])} held-out episodes")
        summary = open_loop(deployed, videos_cache[key], start_frames, horizon, reward_config=reward_config)
        rows[name] = {"bundle": directory, "reward_from": scorer, "open_loop": summary}
        if closed_loop_episodes:
            console.print(f"[bold]{name}[/bold]: closed loop, {closed_loop_episodes} episodes through eva run")
            result = closed_loop(Path(directory), task, closed_loop_episodes, first_seed, out / f"{name}.db", sync)
            rows[name]["closed_loop"] = {
                "successes": result.successes,
                "episodes": result.episodes,
                "planning_latency_p50_s": result.latency_p50_s,
            }
        (out / "compare.json").write_text(json.dumps(rows, indent=2))
    table = render_table(rows)
    (out / "compare.md").write_text(table)
    plot(rows, out / "compare.png")
    console.print(table)


@train_app.command("world-model-cache")
def train_world_model_cache_command(
    data: Annotated[list[Path], typer.Option(help="Directories of recorded episode_XXXX.hdf5 files (repeatable).")],
    out: Annotated[Path, typer.Option(help="The cache file (.npz).")],
    camera: str = "cam_high",
    fps: Annotated[float, typer.Option(help="Video rate: the IDM's fps.")] = 12.5,
    image_size: Annotated[int, typer.Option(help="Square frame size in pixels.")] = 64,
) -> None:
    """Recorded episodes -> one compact .npz (video, actions, instructions, fixed text embeddings) for the recipe."""
    from eva_runtime.training.wm_assemble import make_video_cache

    console.print_json(json.dumps(make_video_cache(data, out, camera, fps, image_size)))


@train_app.command("world-model-recipe")
def train_world_model_recipe_command(
    cache: Annotated[Path, typer.Option(help="Video cache from `eva train world-model-cache`.")],
    out: Annotated[Path, typer.Option(help="Run directory: vae_*.safetensors, transformer.safetensors, recipe.json.")],
    vae_seconds: Annotated[float, typer.Option(help="Budget per VAE candidate (ignored with --vae-steps).")] = 55.0,
    vae_steps: Annotated[int | None, typer.Option(help="Exact steps per VAE candidate.")] = None,
    sft_seconds: Annotated[float, typer.Option(help="Transformer SFT budget (ignored with --sft-steps).")] = 240.0,
    sft_steps: Annotated[int | None, typer.Option(help="Exact transformer SFT steps.")] = None,
    candidates: Annotated[
        str, typer.Option(help="Comma-separated VAE candidates.")
    ] = "z8_t4_l1,z16_t4_fg,z32_t4_fg,z16_t2_fg",
    threads: Annotated[int, typer.Option(min=1)] = 2,
) -> None:
    """VAE candidates measured, one picked by the stated rule, transformer SFT on it (any torch device)."""
    from eva_runtime.training.wm_recipe import main

    _threads(threads)
    arguments = ["--cache", str(cache), "--out", str(out), "--candidates", candidates]
    arguments += ["--vae-steps", str(vae_steps)] if vae_steps else ["--vae-seconds", str(vae_seconds)]
    arguments += ["--sft-steps", str(sft_steps)] if sft_steps else ["--sft-seconds", str(sft_seconds)]
    main(arguments)


@train_app.command("world-model-sft-run")
def train_world_model_sft_run_command(
    cache: Annotated[Path, typer.Option(help="Video cache from `eva train world-model-cache`.")],
    vae: Annotated[Path, typer.Option(help="A trained VAE candidate file (`eva train world-model-vae`).")],
    out: Annotated[Path, typer.Option(help="Run directory (checkpoints, progress.jsonl, samples, recipe.json).")],
    steps: Annotated[int, typer.Option(min=1)] = 20000,
    batch: Annotated[int, typer.Option(min=1)] = 32,
    lr: Annotated[float, typer.Option(min=0.0)] = 5e-4,
    checkpoint_every: Annotated[int, typer.Option(min=1)] = 200,
    samples_every: Annotated[int, typer.Option(min=1)] = 2000,
    clip_stride: Annotated[int, typer.Option(min=1, help="Start a training clip every N frames.")] = 2,
    resume: Annotated[
        bool, typer.Option(help="Continue OUT from its last checkpoint (same settings and files).")
    ] = False,
    threads: Annotated[int, typer.Option(min=1)] = 2,
) -> None:
    """Long, resumable transformer SFT on a cache and a VAE; `world-model-assemble --recipe OUT` packages it."""
    from eva_runtime.training.wm_transformer_run import TransformerRun, train_transformer_run

    _threads(threads)
    run = TransformerRun(
        steps=steps,
        batch=batch,
        lr=lr,
        checkpoint_every=checkpoint_every,
        samples_every=samples_every,
        clip_stride=clip_stride,
    )
    try:
        train_transformer_run(cache, vae, out, run, resume=resume, log=lambda line: console.print(line))
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
    cache: Annotated[Path, typer.Option(help="Video cache from `eva train world-model-cache`.")],
    candidate: Annotated[str, typer.Option(help="A recipe candidate name (its architecture and loss weights).")],
    out: Annotated[Path, typer.Option(help="Candidate file (.safetensors); its measurement goes next to it (.json).")],
    steps: Annotated[int, typer.Option(min=1)] = 300,
    init: Annotated[Path | None, typer.Option(help="Start from this candidate file (same architecture).")] = None,
    short_share: Annotated[float, typer.Option(min=0.0, max=1.0, help="Share of steps on 9-frame clips.")] = 1.0,
    short_batch: Annotated[int, typer.Option(min=1)] = 8,
    long_batch: Annotated[int, typer.Option(min=1)] = 4,
    lr: float = 3e-4,
    held_out: Annotated[int, typer.Option(min=1)] = 10,
    threads: Annotated[int, typer.Option(min=1)] = 2,
) -> None:
    """Train (or fine-tune) one VAE candidate from a cache and measure it on the held-out episodes (cube included)."""
    import torch

    from eva_runtime.training.vae_candidates import (
        VaeTraining,
        build_candidate_vae,
        latent_statistics,
        load_candidate_vae,
        measure_vae,
        save_candidate_vae,
        train_candidate_vae,
    )
    from eva_runtime.training.video_cache import load_video_cache
    from eva_runtime.training.wm_recipe import CANDIDATES

    _threads(threads)
    if candidate not in CANDIDATES:
        console.print(f"[red]error:[/red] --candidate {candidate!r}: known {sorted(CANDIDATES)}")
        raise typer.Exit(2)
    spec = CANDIDATES[candidate]
    loaded = load_video_cache(cache)
    train, held = loaded.videos[:-held_out], loaded.videos[-held_out:]
    torch.manual_seed(0)
    vae = build_candidate_vae(spec)
    if init is not None:
        start, start_spec, _ = load_candidate_vae(init)
        shape = ("z_dim", "base_dim", "dim_mult", "res_blocks", "temporal_downsample")
        if any(getattr(start_spec, key) != getattr(spec, key) for key in shape):
            console.print(f"[red]error:[/red] {init} has another architecture than {candidate}")
            raise typer.Exit(2)
        vae.load_state_dict(start.state_dict(), strict=True)
    settings = VaeTraining(short_share=short_share, short_batch=short_batch, long_batch=long_batch, lr=lr)
    device = torch.device("cpu")
    losses = train_candidate_vae(vae, spec, train, steps, settings, device, console.print)
    mean, std = latent_statistics(vae, train, settings.long_clip, device)
    vae.register_to_config(latents_mean=mean, latents_std=std)
    measured = measure_vae(vae, held, settings.long_clip, device)
    result = {
        **measured,
        "steps": steps,
        "init": str(init) if init else None,
        "final_loss": sum(losses[-20:]) / len(losses[-20:]),
    }
    save_candidate_vae(vae, spec, out, {"measured": result})
    out.with_suffix(".json").write_text(json.dumps(result, indent=2))
    console.print_json(json.dumps(result))


@train_app.command("vae-roundtrip")
def train_vae_roundtrip_command(
    data: Annotated[Path, typer.Option(help="Directory of recorded episode_XXXX.hdf5 files.")],
    model: Annotated[
        Path, typer.Option(help="World-model pipeline directory, or a VAE candidate file with its .sha256 sidecar.")
    ],
    out: Annotated[Path, typer.Option(help="New episode directory (same joints and actions, camera re-rendered).")],
    camera: str = "cam_high",
    clip: Annotated[int, typer.Option(help="Frames per VAE clip (the world model's clip).")] = 41,
    limit: Annotated[int | None, typer.Option(min=1, help="Only the first N episodes.")] = None,
    image_size: Annotated[int, typer.Option(min=8, help="Frame size for a VAE candidate file.")] = 64,
    threads: Annotated[int, typer.Option(min=1)] = 2,
) -> None:
    """Episodes whose camera went through the world model's VAE: training data for an IDM that reads its frames."""
    from eva_runtime.training.vae_roundtrip import roundtrip_episodes

    _threads(threads)
    written = roundtrip_episodes(
        data, model, out, camera, clip, limit, log=lambda _: None, image_size=(image_size, image_size)
    )
    console.print(f"{len(written)} episodes written to {out}")
