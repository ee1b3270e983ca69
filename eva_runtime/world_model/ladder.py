"""The closed-loop ladder: where between the oracle and the learned world model is the task lost?

Every rung runs the full runtime (`run_sim_episodes`: planner process, IDM, gate, executor, safety filter, real
time) on the same seeds; rungs differ only in the world model's spec (a bundle, plus a degradation of the
oracle's frames from `degraded.py`) and the planner's sampling (best-of-N: G rollouts, the executability gate
executes the best). One YAML file lists the rungs; the result is a Markdown table with Wilson intervals, a JSON
file and the outcome log every episode went into.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from eva_runtime.config_files import ConfigFileError, load_model
from eva_runtime.control.gripper_latch import checked_band
from eva_runtime.control.loop_settings import LoopSettings
from eva_runtime.control.planner import MAX_SAMPLING_DRAW
from eva_runtime.records.success_rate import wilson_interval
from eva_runtime.world_model.ladder_open_loop import render_open_loop

__all__ = ["LadderConfig", "LadderConfigError", "load_ladder", "render_ladder", "run_ladder"]


class LadderConfigError(ConfigFileError):
    """The ladder file is unreadable or invalid; the message names the file and the key."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Rung(_Strict):
    name: str
    bundle: str  # relative to the YAML file's directory's parent (the repository root) or absolute
    degrade: dict = Field(default_factory=dict)  # `Degradation` fields
    samples: int = Field(1, ge=1, le=32)  # best-of-N
    # Another draw of the sampler's noise for every plan (PlannerSettings.sampling_draw): the same model resampled,
    # the spread a difference between two rungs is read against.
    sampling_draw: int = Field(0, ge=0, le=MAX_SAMPLING_DRAW)
    interpolation: Literal["bspline", "linear"] = "bspline"  # the executor's curve through plan actions
    blend_s: float | None = Field(None, ge=0.0, le=2.0)  # the executor's junction (None: the loop's default)
    execute_fraction: float | None = Field(None, gt=0.0, le=1.0)  # share of each plan executed (None: the loop's)
    # Plan only when the executed share ran out, the robot holding meanwhile: plans start from the observed state
    # with no latency to bridge, at the cost of held ticks (the episode's tick budget is the same).
    synchronous: bool = False
    # Synchronous only: drop each plan's first seconds as an asynchronous loop does (LoopSettings.synchronous_skip_s).
    synchronous_skip_s: float | None = Field(None, ge=0.0, le=10.0)
    # Asynchronous: condition each plan on this many frames the robot is committed to (LoopSettings.committed_frames);
    # the world model must have been trained on that much history.
    committed_frames: int | None = Field(None, ge=1, le=64)
    # Retime plans to this share of the joints' caps (control/retiming.py); None: the loop's default, 0: off.
    retime_headroom: float | None = Field(None, ge=0.0, le=1.0)
    # Follow the curve within this share of the caps before the safety filter (control/cap_tracker.py); None: the
    # loop's default, 0: no tracker (the filter shapes what exceeds the caps).
    track_headroom: float | None = Field(None, ge=0.0, le=1.0)
    # Open-or-closed grippers with hysteresis (control/gripper_latch.py): [close_below, open_above] of the range.
    gripper_latch: tuple[float, float] | None = None
    # Observed frames per plan request (control/frame_history.py); None: the world model's own.
    history_frames: int | None = Field(None, ge=1)
    # The Wan sampler's Euler steps (None: the bundle's): fewer steps, shorter plans' latency.
    sampling_steps: int | None = Field(None, ge=1, le=100)
    note: str = ""

    @model_validator(mode="after")
    def _loop_options_make_loop_settings(self) -> Rung:
        # The loop's own checks (e.g. a commitment only for asynchronous planning), at load, with the file's name
        LoopSettings(**loop_overrides(self))
        return self

    @field_validator("gripper_latch")
    @classmethod
    def _a_band_inside_the_range(cls, band: tuple[float, float] | None) -> tuple[float, float] | None:
        return None if band is None else checked_band(band)


class LadderConfig(_Strict):
    task: str = "transfer_cube"
    first_seed: int = 1000
    episodes: int = Field(50, ge=1)
    # Control ticks per episode. 400 (8 s) is the expert's own script length: the handover ends at tick ~330, so a
    # planner that holds the robot for more than ~70 ticks (slow plans) cannot finish in time however good its
    # frames are. A longer episode separates "too slow to finish in 8 s" from "never does the task".
    episode_steps: int = Field(400, ge=1)
    rungs: tuple[Rung, ...]


def load_ladder(path: Path) -> LadderConfig:
    from eva_runtime.world_model.degraded import Degradation

    config = load_model(path, LadderConfig, what="ladder file", error=LadderConfigError)
    for index, rung in enumerate(config.rungs):
        try:
            Degradation(**rung.degrade)
        except (TypeError, ValueError) as error:
            raise LadderConfigError(f"{path}: rungs[{index}]({rung.name}).degrade: {error}") from None
    names = [r.name for r in config.rungs]
    if any("," in name for name in names):
        raise LadderConfigError(f"{path}: rungs: names must not contain commas (they select rungs), got {names}")
    if len(set(names)) != len(names):
        raise LadderConfigError(f"{path}: rungs: names must be unique, got {names}")
    return config


def _resolve(root: Path, value: str) -> str:
    path = Path(value)
    return str(path if path.is_absolute() else root / path)


def run_ladder(
    config: LadderConfig,
    root: Path,
    out: Path,
    episodes: int | None = None,
    only: tuple[str, ...] = (),
    episode_steps: int | None = None,
    log: Callable[[str], None] = print,
    open_loop: Callable[[Path, Rung], dict | None] | None = None,
) -> list[dict]:
    """Run every rung (or those named in `only`), appending each result to OUT/ladder.json as it finishes.
    `open_loop(bundle, rung)`: each rung's open-loop cells, measured before its closed loop (never beside it: both
    want the cores), e.g. `ladder_open_loop.RungOpenLoop`."""
    from eva_runtime.control.sim_session import run_sim_episodes
    from eva_runtime.world_model.machine_probe import probe_machine

    out.mkdir(parents=True, exist_ok=True)
    results_path = out / "ladder.json"
    results = json.loads(results_path.read_text()) if results_path.is_file() else []
    count = episodes or config.episodes
    steps = episode_steps or config.episode_steps
    for rung in config.rungs:
        if only and rung.name not in only:
            continue
        bundle = Path(_resolve(root, rung.bundle))
        imagined = None if open_loop is None else open_loop(bundle, rung)
        probe = probe_machine()  # just before the episodes, with nothing else of ours running
        result = run_sim_episodes(
            bundle,
            config.task,
            count,
            config.first_seed,
            out / "ladder.db",
            world_model=world_model_overrides(rung, root) or None,
            planner=planner_overrides(rung),
            max_steps=steps,
            loop=loop_overrides(rung),
        )
        low, high = wilson_interval(result.successes, result.episodes)
        row = {"rung": rung.name, "note": rung.note, **result.summary(), "wilson95": [low, high]}
        row["episode_steps"] = steps
        row["machine_probe_ms"] = probe["milliseconds"]
        row["first_seed"] = config.first_seed  # the seeds are first_seed + i: what `eva eval paired` pairs by
        row["per_episode"] = list(result.per_episode)
        row["per_episode_stage"] = list(result.per_episode_stage)
        row["per_episode_reach_m"] = list(result.per_episode_reach_m)
        row["per_episode_plan_score"] = list(result.per_episode_plan_score)
        if imagined is not None:
            row["open_loop"] = imagined
        results = [r for r in results if r["rung"] != rung.name] + [row]
        results_path.write_text(json.dumps(results, indent=2))
        log(f"{rung.name}: {result.successes}/{result.episodes} [{low:.2f}, {high:.2f}]")
    (out / "ladder.md").write_text(render_ladder(results, config))
    return results


def render_ladder(results: list[dict], config: LadderConfig) -> str:
    order = {r.name: i for i, r in enumerate(config.rungs)}
    lines = [
        "| rung | success | Wilson 95 % | plan latency p50 | machine probe | hold ticks / episode "
        "| executability: plans / executed | plans "
        "| nominal interventions / joint-tick | closest reach p50 | episodes reaching each stage |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    ordered = sorted(results, key=lambda r: order.get(r["rung"], len(order)))
    for row in ordered:
        low, high = row["wilson95"]
        latency = row.get("planning_latency_p50_s")
        probe = row.get("machine_probe_ms")  # absent in rows written before it was measured
        score = row.get("mean_score")
        executed = row.get("executed_mean_score")  # absent in rows written before it was measured
        share = row.get("nominal_intervention_share")  # absent in rows written before it was measured
        tracked = row.get("tracker_change_share")  # present where the rung had a cap tracker
        tracked_cell = "" if tracked is None else f" (tracker {100 * tracked:.1f} %)"
        lines.append(
            f"| {row['rung']} | {row['successes']}/{row['episodes']} | [{low:.2f}, {high:.2f}] | "
            f"{'-' if latency is None else f'{latency:.2f} s'} | {'-' if probe is None else f'{probe:.0f} ms'} | "
            f"{row['hold_ticks_per_episode']:.0f} | "
            f"{'-' if score is None else f'{score:.2f}'} / {'-' if executed is None else f'{executed:.2f}'} | "
            f"{row['plans']} | "
            f"{'-' if share is None else f'{100 * share:.2f} %'}{tracked_cell} | "
            f"{_centimetres(row.get('closest_reach_p50_m'))} | "
            f"{_funnel(row.get('stages_reached'))} |"
        )
    return "\n".join(lines + render_open_loop(ordered)) + "\n"


def _funnel(stages_reached: dict[str, int] | None) -> str:
    """'touched 12, lifted 7, ...': how far the episodes got (rows written before stages were kept: '-')."""
    return ", ".join(f"{name} {count}" for name, count in stages_reached.items()) if stages_reached else "-"


def _centimetres(metres: float | None) -> str:
    return "-" if metres is None else f"{100 * metres:.1f} cm"


def world_model_overrides(rung: Rung, root: Path) -> dict:
    """The rung's changes to its bundle's world-model spec: the degradation (a VAE path resolved against `root`)
    and the sampler's steps."""
    overrides: dict = {}
    if rung.degrade:
        degrade = dict(rung.degrade)
        if "vae" in degrade:
            degrade["vae"] = _resolve(root, degrade["vae"])
        overrides["degrade"] = degrade
    if rung.sampling_steps is not None:
        overrides["steps"] = rung.sampling_steps
    return overrides


def planner_overrides(rung: Rung) -> dict | None:
    """The rung's `PlannerSettings` changes: best-of-N in one attempt; whole imagined videos for a commitment; another
    draw of the sampler's noise."""
    overrides = {"samples": rung.samples, "attempts": 1} if rung.samples > 1 else {}
    if rung.committed_frames:
        overrides["keep_imagined"] = True
    if rung.sampling_draw:
        overrides["sampling_draw"] = rung.sampling_draw
    return overrides or None


def loop_overrides(rung: Rung) -> dict:
    """The rung's `LoopSettings` changes (fields it leaves unset keep the loop's defaults); retime_headroom 0
    switches retiming off, track_headroom 0 the cap tracker."""
    fields = {
        "interpolation": rung.interpolation,
        "blend_s": rung.blend_s,
        "execute_fraction": rung.execute_fraction,
        "gripper_latch": rung.gripper_latch,
        "history_frames": rung.history_frames,
        "committed_frames": rung.committed_frames,
    }
    overrides = {key: value for key, value in fields.items() if value is not None}
    if rung.synchronous:
        overrides["synchronous"] = True
    if rung.synchronous_skip_s is not None:
        overrides["synchronous_skip_s"] = rung.synchronous_skip_s
    if rung.retime_headroom is not None:
        overrides["retime_headroom"] = rung.retime_headroom or None
    if rung.track_headroom is not None:
        overrides["track_headroom"] = rung.track_headroom or None
    return overrides
