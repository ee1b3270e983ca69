"""`eva eval world-model` (open loop on held-out episodes) and `eva eval compare` (bundles side by side): scoring
trained world models with the IDM and reward a bundle deploys."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from eva_runtime.cli.common import console
from eva_runtime.cli.models import eval_app
from eva_runtime.cli.options import (
    AdapterDirsOption,
    PositiveIntOption,
    ResultsFileOption,
    ScoringBundleOption,
    WorldModelDirOption,
    set_torch_threads,
)

if TYPE_CHECKING:
    from eva_runtime.bundle import Bundle
    from eva_runtime.idm.decoder import IdmDecoder
    from eva_runtime.reward import RewardConfig


@eval_app.command("world-model")
def eval_world_model_command(
    model: WorldModelDirOption,
    bundle: ScoringBundleOption,
    data: Annotated[Path, typer.Option(help="Held-out episode directory.")],
    out: ResultsFileOption,
    adapter: AdapterDirsOption = None,
    episodes: PositiveIntOption = 50,
    starts: Annotated[str, typer.Option(help="Comma-separated start frames (at the model's fps).")] = "0,16,32,48",
    horizon: int = 17,
    steps: Annotated[int, typer.Option(min=1, help="Sampling steps.")] = 10,
    samples: Annotated[int, typer.Option(min=1, help="Rollouts per condition.")] = 1,
    history_frames: Annotated[
        int | None, typer.Option(min=1, help="Observed frames conditioning a rollout (default: the model's own).")
    ] = None,
    seed: int = 0,
    threads: PositiveIntOption = 2,
    reference_vae: Annotated[
        Path | None,
        typer.Option(help="Also score the recorded future through this VAE (pipeline dir or verified file)."),
    ] = None,
    save_actions: Annotated[
        Path | None, typer.Option(help="Write the decoded rollout actions (G, T, J) as .npy, for eva calibrate reward.")
    ] = None,
    task_progress: Annotated[
        str | None,
        typer.Option(help="Also play each decoded plan in simulation from the replayed start (a task name)."),
    ] = None,
) -> None:
    """Frame PSNR against the recorded future and executability of IDM-decoded rollouts vs the recorded video."""
    from eva_runtime.training.wm_data import load_videos
    from eva_runtime.world_model.evaluation import evaluate_world_model, summarise
    from eva_runtime.world_model.wan.backend import load_wan_world_model

    set_torch_threads(threads)
    decoder, config, bundled = idm_and_reward(bundle)
    if bundled and not adapter:  # else an aligned bundle would be scored with its base model's rollouts
        console.print(
            f"[red]error:[/red] {bundle} carries LoRA adapters {list(bundled)}; this command samples --model with "
            "the --adapter directories given: pass them, or score with the SFT bundle"
        )
        raise typer.Exit(2)
    adapters = [{"name": f"adapter{i}", "path": str(p)} for i, p in enumerate(adapter or [])]
    world_model = load_wan_world_model(
        {"base": str(model), "adapters": adapters, "steps": steps, "model_id": model.name}
        | ({} if history_frames is None else {"history_frames": history_frames})
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
        history_frames=world_model.settings.history_frames,
        keep_actions=kept,
        reference=_vae_reference(reference_vae),
        **_task_progress(task_progress, bundle, world_model.fps),
    )
    if save_actions is not None:
        import numpy as np

        np.save(save_actions, np.stack(kept), allow_pickle=False)
    summary = summarise(results)
    summary.update({"model_dir": str(model), "adapters": [str(p) for p in adapter or []], "steps": steps})
    write_results(out, summary, results)


def _task_progress(task: str | None, bundle: Path, fps: float) -> dict:
    """evaluate_world_model's task-progress arguments: the measure on the bundle's embodiment (none without a task)."""
    if task is None:
        return {}
    from eva_runtime.bundle import load_bundle
    from eva_runtime.training.task_progress import TaskProgress

    embodiment = load_bundle(bundle).embodiment
    return {"progress": TaskProgress(task, embodiment), "steps_per_frame": round(embodiment.control_rate_hz / fps)}


def _vae_reference(source: Path | None):
    """truth video -> its VAE round trip, or None: what the VAE alone costs, beside what the model costs."""
    if source is None:
        return None
    from eva_runtime.world_model.degraded import load_serving_vae, vae_round_trip

    vae = load_serving_vae(str(source))
    return lambda video: vae_round_trip(vae, video)


def idm_and_reward(bundle: Path) -> tuple[IdmDecoder, RewardConfig, tuple[str, ...]]:
    """The bundle's hash-verified IDM decoder, its reward constants at the IDM's fps, its world model's adapters."""
    from eva_runtime.bundle import load_bundle
    from eva_runtime.idm.decoder import IdmDecoder
    from eva_runtime.reward import RewardConfig

    deployed = load_bundle(bundle)
    decoder = IdmDecoder(deployed.idm_path, deployed.hashes()["idm"])
    reward = deployed.manifest.reward
    config = RewardConfig.from_embodiment(
        deployed.embodiment, decoder.fps, p0=reward.p0, form=reward.form, gamma=reward.gamma
    )
    return decoder, config, deployed.manifest.world_model.adapters


def write_results(out: Path, summary: dict, results: list[Any]) -> None:
    """OUT as JSON (summary and every condition), the Markdown table next to it, the table on the console."""
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
        "| video | reward | kinematically plausible | jerk penalty | motion (rad) | arm error (rad) | gripper error |",
        "|---|---|---|---|---|---|---|",
    ]
    for source in [name for name in ("model", "reference", "truth") if name in summary]:
        row = summary[source]
        lines.append(
            f"| {source} | {cell(row['reward'])} | {cell(row['plausible'])} | {cell(row['p_jerk'])} "
            f"| {cell(row['motion_rad'])} | {cell(row['arm_error_rad'])} | {cell(row['gripper_error'])} |"
        )
    if "task_progress" in summary["model"]:
        lines += [
            "",
            "| video | task progress | final stage | furthest stage held | closest reach (m) |",
            "|---|---|---|---|---|",
        ]
        for source in [name for name in ("model", "reference", "truth") if "task_progress" in summary.get(name, {})]:
            row = summary[source]
            lines.append(
                f"| {source} | {cell(row['task_progress'])} | {cell(row['task_final_stage'])} "
                f"| {cell(row['task_furthest_held'])} | {cell(row['task_closest_reach_m'])} |"
            )
    return "\n".join([*lines, "", *_by_start_table(summary["by_start"])]) + "\n"


def _by_start_table(by_start: dict) -> list[str]:
    """Per start frame (phase of the task): the model's errors, and the reference's where one was scored."""
    with_reference = all("reference_arm_error_rad" in row for row in by_start.values())
    extra = " reference arm error | reference gripper error |" if with_reference else ""
    lines = [
        "| start frame | conditions | frame PSNR (dB) | arm error (rad) | gripper error | motion / truth | reward |"
        + extra,
        "|---:|---:|---:|---:|---:|---:|---:|" + ("---:|---:|" if with_reference else ""),
    ]
    for start, row in by_start.items():
        line = (
            f"| {start} | {row['conditions']} | {row['psnr_db']:.1f} | {row['arm_error_rad']:.3f} "
            f"| {row['gripper_error']:.3f} | {row['motion_ratio']:.2f} | {row['reward']:.2f} |"
        )
        if with_reference:
            line += f" {row['reference_arm_error_rad']:.3f} | {row['reference_gripper_error']:.3f} |"
        lines.append(line)
    return lines


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
    threads: PositiveIntOption = 2,
) -> None:
    """Oracle / SFT / aligned side by side: open-loop executability and PSNR, closed-loop success (Wilson 95 %)."""
    from eva_runtime.bundle import load_bundle
    from eva_runtime.world_model.comparison import (
        closed_loop,
        held_out_videos,
        open_loop,
        plot,
        render_table,
        reward_config_of,
    )

    set_torch_threads(threads)
    pairs = _name_directory_pairs(bundles)
    out.mkdir(parents=True, exist_ok=True)
    start_frames = [int(s) for s in starts.split(",")]
    rows: dict[str, dict] = {}
    videos_cache: dict = {}
    loaded = {name: load_bundle(Path(directory)) for name, directory in pairs}
    scorer = _scoring_bundle(loaded, reward_from, pairs[0][0])
    reward_config = reward_config_of(loaded[scorer])
    console.print(f"every row scored with the reward of {scorer!r} (P0 {reward_config.p0:g})")
    for name, directory in pairs:
        deployed = loaded[name]
        videos = held_out_videos(deployed, data, episodes, videos_cache)
        console.print(f"[bold]{name}[/bold]: open loop on {len(videos)} held-out episodes")
        summary = open_loop(deployed, videos, start_frames, horizon, reward_config=reward_config)
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


def _name_directory_pairs(bundles: str) -> list[list[str]]:
    """`--bundles a=dir,b=dir` as [name, directory] pairs in table order; anything else exits 2."""
    pairs = [item.split("=", 1) for item in bundles.split(",")]
    if any(len(pair) != 2 for pair in pairs):
        console.print("[red]error:[/red] --bundles takes name=directory pairs separated by commas")
        raise typer.Exit(2)
    return pairs


def _scoring_bundle(loaded: dict[str, Bundle], reward_from: str | None, first: str) -> str:
    """The bundle whose reward scores every row: --reward-from, else the first wan bundle, else the first one."""
    wan = [name for name, bundle in loaded.items() if bundle.manifest.world_model.kind == "wan"]
    scorer = reward_from or (wan[0] if wan else first)
    if scorer not in loaded:
        console.print(f"[red]error:[/red] --reward-from {scorer!r} is not one of {', '.join(loaded)}")
        raise typer.Exit(2)
    return scorer
