"""`eva train dagger-collect` and `eva train dagger-label`: world-model training clips from the states a learned
model's own plans lead to (capture in closed loop, then label with the scripted expert from each state)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from eva_runtime.cli.common import TaskOption, console
from eva_runtime.cli.models import eval_app, train_app
from eva_runtime.cli.options import AdapterDirsOption, ResultsFileOption, ScoringBundleOption, WorldModelDirOption


@train_app.command("dagger-collect")
def dagger_collect_command(
    bundle: Annotated[Path, typer.Option(help="The learned model's deployment bundle.")],
    out: Annotated[Path, typer.Option(help="Plan states file to write (.safetensors).")],
    task: TaskOption = "transfer_cube",
    episodes: Annotated[int, typer.Option(min=1)] = 20,
    first_seed: Annotated[int, typer.Option(help="Episode i: seed first_seed + i (not 1000-1049).")] = 3000,
    episode_steps: Annotated[int, typer.Option(min=1, help="Control ticks per episode (600: the ladder's).")] = 600,
) -> None:
    """Run the model in closed loop on the simulated robot (real time, as `eva run`) and keep, at every plan
    request, the frames it was given and the simulator's and filter's state; the outcomes go to OUT's .db."""
    from eva_runtime.bundle import BundleError, load_bundle
    from eva_runtime.control.plan_states import PlanStateCapture
    from eva_runtime.control.sim_session import run_sim_episodes
    from eva_runtime.sim.tasks import task_spec

    try:
        loaded = load_bundle(bundle)
    except BundleError as error:
        console.print(f"[red]error:[/red] {error}")
        raise typer.Exit(2) from None
    idm = loaded.manifest.idm
    meta = {
        "task": task,
        "instruction": task_spec(task).instruction,
        "fps": idm.fps,
        "model_id": loaded.manifest.world_model.id,
        "bundle": str(bundle),
        "first_seed": first_seed,
        "episodes": episodes,
    }
    capture = PlanStateCapture("cam_high", tuple(idm.image_size), meta)
    log = out.with_suffix(".db")
    result = run_sim_episodes(bundle, task, episodes, first_seed, log, max_steps=episode_steps, capture=capture)
    sha = capture.save(out)
    summary = {"states": len(capture), "successes": result.successes, "episodes": episodes, "sha256": sha}
    typer.echo(json.dumps({**summary, "stages_reached": result.stages_reached, "log": str(log)}))


@train_app.command("dagger-label")
def dagger_label_command(
    states: Annotated[Path, typer.Option(help="Plan states from `eva train dagger-collect`.")],
    out: Annotated[Path, typer.Option(help="Clip set to write (.npz), for `world-model-sft-run --clips`.")],
    horizon: Annotated[int, typer.Option(min=1, help="Future frames per clip (the model's horizon).")] = 37,
    embodiment: Annotated[Path | None, typer.Option(help="Embodiment YAML (default: the simulated robot's).")] = None,
    include: Annotated[
        list[Path] | None, typer.Option(help="Earlier clip sets to add to these labels (DAgger aggregates).")
    ] = None,
) -> None:
    """Continue every captured state with the scripted expert (rejoining its script where the state is) and write
    each request's history followed by the expert's future as a training clip."""
    from rich.progress import Progress

    from eva_runtime.cli.common import embodiment_path
    from eva_runtime.control.plan_states import load_captured_states
    from eva_runtime.embodiment import load_embodiment
    from eva_runtime.training.dagger_labels import label_states, load_clip_set, merge_clip_sets, save_clip_set

    earlier = [load_clip_set(path) for path in include or []]  # read first: a bad file fails before the labelling
    captured = load_captured_states(states)
    task = captured.metadata["task"]
    with Progress(console=console, transient=True) as bar:
        job = bar.add_task("labelling", total=len(captured))
        clips = label_states(
            captured, task, load_embodiment(embodiment_path(embodiment)), horizon,
            lambda done, total: bar.update(job, completed=done),
        )  # fmt: skip
    try:
        clips = merge_clip_sets([clips, *earlier])
    except ValueError as error:
        console.print(f"[red]error:[/red] --include: {error}")
        raise typer.Exit(2) from None
    sha = save_clip_set(out, clips)
    typer.echo(json.dumps({**clips.summary(), "sha256": sha, "out": str(out)}))


@train_app.command("executed-label")
def executed_label_command(
    states: Annotated[Path, typer.Option(help="Plan states from `eva train dagger-collect`.")],
    model: WorldModelDirOption,
    bundle: ScoringBundleOption,
    out: Annotated[Path, typer.Option(help="Clip set to write (.npz), for `world-model-sft-run --clips`.")],
    adapter: AdapterDirsOption = None,
    samples: Annotated[int, typer.Option(min=1, help="Rollouts per state; the furthest-reaching is the label.")] = 4,
    horizon: Annotated[int, typer.Option(min=2, help="Future frames per clip (the model's horizon).")] = 37,
    steps: Annotated[int, typer.Option(min=1, help="Sampling steps.")] = 5,
    seed: int = 0,
    threads: Annotated[int, typer.Option(min=1)] = 2,
    include: Annotated[list[Path] | None, typer.Option(help="Earlier clip sets to add to these labels.")] = None,
) -> None:
    """Label every captured state with the model's own best plan from it, executed in simulation and rendered; keep
    the clips whose plan advanced the task (training/executed_labels.py). OUT gets the clips, OUT.json every
    state's outcome."""
    from rich.progress import Progress

    from eva_runtime.bundle import load_bundle
    from eva_runtime.cli.options import set_torch_threads
    from eva_runtime.cli.world_model_eval import idm_and_reward
    from eva_runtime.control.plan_states import load_captured_states
    from eva_runtime.file_hash import file_sha256
    from eva_runtime.training.dagger_labels import load_clip_set
    from eva_runtime.training.executed_labels import label_with_own_plans
    from eva_runtime.training.task_progress import TaskProgress
    from eva_runtime.world_model.wan.backend import load_wan_world_model

    set_torch_threads(threads)
    earlier = [load_clip_set(path) for path in include or []]  # read first: a bad file fails before the labelling
    decoder, config, _ = idm_and_reward(bundle)
    captured = load_captured_states(states)
    adapters = [{"name": f"adapter{i}", "path": str(p)} for i, p in enumerate(adapter or [])]
    spec = {"base": str(model), "adapters": adapters, "steps": steps, "model_id": model.name}
    world_model = load_wan_world_model(spec | {"history_frames": captured.frames.shape[1]})
    progress = TaskProgress(captured.metadata["task"], load_bundle(bundle).embodiment)
    try:
        with Progress(console=console, transient=True) as bar:
            job = bar.add_task("labelling", total=len(captured))
            clips, outcomes = label_with_own_plans(
                captured, world_model, decoder, config, progress, horizon, samples, seed,
                report=lambda done, total: bar.update(job, completed=done),
            )  # fmt: skip
    except ValueError as error:
        console.print(f"[red]error:[/red] {error}")
        raise typer.Exit(2) from None
    finally:
        progress.close()
    report = {"states_sha256": file_sha256(states), "model_dir": str(model), "samples": samples, "seed": seed}
    _write_executed_labels(out, report, clips, earlier, outcomes)


def _write_executed_labels(out: Path, report: dict, clips, earlier: list, outcomes: list) -> None:
    """OUT.json with every state's outcome (written first, so a run that keeps nothing still says why), then the
    clips merged with the earlier sets; exit 1 when there is nothing to write, 2 when the sets do not fit."""
    from eva_runtime.training.dagger_labels import merge_clip_sets, save_clip_set

    report |= {"states": len(outcomes), "kept": sum(o.kept for o in outcomes)}
    rows = [o.row() for o in outcomes]
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps({"summary": report, "states": rows}, indent=1))
    sets = [c for c in (clips, *earlier) if c is not None]
    if not sets:
        console.print(f"[red]error:[/red] no plan worth keeping; no clips written (see {out.with_suffix('.json')})")
        raise typer.Exit(1)
    try:
        merged = merge_clip_sets(sets)
    except ValueError as error:
        console.print(f"[red]error:[/red] --include: {error}")
        raise typer.Exit(2) from None
    report |= {**merged.summary(), "sha256": save_clip_set(out, merged)}
    out.with_suffix(".json").write_text(json.dumps({"summary": report, "states": rows}, indent=1))
    typer.echo(json.dumps(report))


@eval_app.command("world-model-states")
def eval_world_model_states_command(
    model: WorldModelDirOption,
    bundle: ScoringBundleOption,
    states: Annotated[Path, typer.Option(help="Plan states captured in closed loop (`eva train dagger-collect`).")],
    clips: Annotated[Path, typer.Option(help="Their labels (`eva train dagger-label` of exactly these states).")],
    out: ResultsFileOption,
    adapter: AdapterDirsOption = None,
    steps: Annotated[int, typer.Option(min=1, help="Sampling steps.")] = 5,
    seed: int = 0,
    threads: Annotated[int, typer.Option(min=1)] = 2,
) -> None:
    """Open loop from the states a model's own plans led to: each captured request's frames -> rollout -> IDM ->
    plan played from the captured state (task progress), beside the expert's labelled future scored the same way."""
    from eva_runtime.bundle import load_bundle
    from eva_runtime.cli.options import set_torch_threads
    from eva_runtime.cli.world_model_eval import idm_and_reward, write_results
    from eva_runtime.control.plan_states import load_captured_states
    from eva_runtime.file_hash import file_sha256
    from eva_runtime.training.dagger_labels import load_clip_set
    from eva_runtime.training.task_progress import TaskProgress
    from eva_runtime.world_model.evaluation import evaluate_on_states, summarise
    from eva_runtime.world_model.wan.backend import load_wan_world_model

    set_torch_threads(threads)
    decoder, config, _ = idm_and_reward(bundle)
    captured, labels = load_captured_states(states), load_clip_set(clips)
    adapters = [{"name": f"adapter{i}", "path": str(p)} for i, p in enumerate(adapter or [])]
    spec = {"base": str(model), "adapters": adapters, "steps": steps, "model_id": model.name}
    world_model = load_wan_world_model(spec | {"history_frames": labels.history_frames})
    progress = TaskProgress(captured.metadata["task"], load_bundle(bundle).embodiment)
    try:
        results = evaluate_on_states(world_model, decoder, config, labels, captured, progress, seed)
    except ValueError as error:
        console.print(f"[red]error:[/red] {error}")
        raise typer.Exit(2) from None
    finally:
        progress.close()
    summary = summarise(results)
    summary.update({"model_dir": str(model), "adapters": [str(p) for p in adapter or []], "steps": steps})
    summary.update({"states_sha256": file_sha256(states), "clips_sha256": labels.sha256})
    write_results(out, summary, results)
