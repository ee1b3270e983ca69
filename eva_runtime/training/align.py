"""`eva train align`: Flow-GRPO post-training of the SFT world model with the frozen IDM's executability reward
(plus, with `task_reward` in the config, the task progress of the decoded plans played in simulation); with a
`ranked` section, reward-ranked fine-tuning on the same conditions and reward instead (`reward_ranked.py`).

Per iteration: draw conditions (observed frame(s) + instruction) from the training episodes, sample G rollouts of
each with the SDE sampler, decode them with the frozen IDM, score them with the batched torch reward, normalise
within each condition's group and update a LoRA adapter on the SFT weights with the clipped objective and a KL to
the reference (the same network with the adapter disabled). See `flow_grpo.py` for the update itself.

Guard against the trivial optimum (a motionless video scores the maximal reward): every `guard.eval_every`
iterations a fixed set of held-out conditions is sampled deterministically and scored for reward, decoded-motion
magnitude and frame PSNR against the recorded future; training stops early when motion falls below
`min_motion_ratio` of the SFT model's or PSNR drops by more than `max_psnr_drop_db`, and the adapter kept is the
best held-out reward among the checks that passed. Everything is logged to `telemetry.jsonl` and plotted.
Resumable from `OUT/last/` (adapter weights, optimiser state, iteration). accelerate: one process, CPU ranks under
torchrun, or GPUs. This module runs the iterations and the guard; the data they draw from is `align_data.py`, the
checkpoints `align_state.py`, the plots and samples `align_plots.py`.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from eva_runtime.training.align_config import AlignConfig
from eva_runtime.training.align_data import AlignData, load_align_data
from eva_runtime.training.align_plots import plot_curves, write_samples
from eva_runtime.training.align_state import claim_run, load_state, save_state

__all__ = ["train_align"]


# Kept here, private or not: bench/align.py times the update on batches built by this very function.
def _batch(conditions, group: int, vae, embeds: dict, latent_count: int):
    """Condition latents (clean frames first, zeros after), text embeddings and group keys for G each."""
    import torch

    from eva_runtime.world_model.wan.latents import encode_frames

    latents, texts, keys = [], [], []
    conditioned = 0
    for condition in conditions:
        clean = encode_frames(vae, condition.frames[None])
        conditioned = clean.shape[2]
        full = torch.zeros(1, clean.shape[1], latent_count, *clean.shape[-2:])
        full[:, :, :conditioned] = clean
        latents.append(full.expand(group, -1, -1, -1, -1))
        texts.append(embeds[condition.instruction].expand(group, -1, -1))
        keys += [condition.key] * group
    return torch.cat(latents), torch.cat(texts), keys, conditioned


def _heldout_check(transformer, pipeline, conditions, embeds, reward_fn, config: AlignConfig, latent_count: int):
    """Deterministic (ODE) rollouts of the held-out conditions: reward, plausibility, motion, frame PSNR."""
    import torch

    from eva_runtime.world_model.evaluation import frame_psnr
    from eva_runtime.world_model.wan.sampling import Denoiser, euler_sample, flow_sigmas

    condition_latents, texts, _, conditioned = _batch(conditions, 1, pipeline.vae, embeds, latent_count)
    noise = torch.randn(condition_latents.shape, generator=torch.Generator().manual_seed(config.seed + 7))
    denoiser = Denoiser(transformer, texts, condition_latents, conditioned)
    transformer.eval()
    with torch.no_grad():
        final = euler_sample(denoiser, noise, flow_sigmas(pipeline.scheduler, config.sampling_steps))
    rewards, stats = reward_fn.for_conditions(conditions, 1)(final)
    frames = reward_fn.last_frames
    psnr = [float(frame_psnr(c.truth[1:], f[1 : len(c.truth)]).mean()) for c, f in zip(conditions, frames, strict=True)]
    check = {
        "reward": float(rewards.mean()),
        "plausible": stats["plausible_fraction"],
        "motion_rad": stats["motion_rad"],
        "psnr_db": float(np.mean(psnr)),
    }
    task = {name: stats[name] for name in ("task_progress", "task_final_stage") if name in stats}
    return {**check, **task}


def train_align(config: AlignConfig, out: Path, resume: bool = False, log: Callable[[str], None] = print) -> dict:
    """Flow-GRPO post-training into OUT (adapter, telemetry, samples, plots, summary.json); see the module."""
    import torch
    from accelerate import Accelerator

    accelerator = Accelerator(cpu=not torch.cuda.is_available())
    main = accelerator.is_main_process
    if main:
        claim_run(out, config, resume)  # before the expensive loading: a mismatched resumption fails at once
    data = load_align_data(config)
    adapter, state = _prepare_adapter(accelerator, data.pipeline.transformer, config, out, resume, log)
    telemetry_path = out / "telemetry.jsonl"
    if main and not resume:
        telemetry_path.write_text("")
    update = _update_inputs(data.pipeline, config)
    if not state["checks"]:
        reference = _reference_check(adapter.unwrapped, data, config)
        state["checks"].append({"iteration": 0, **reference, "passed": True})
        if main:
            log(f"SFT model on held-out conditions: {reference}")
    reference = state["checks"][0]
    records: list[dict] = []
    if telemetry_path.is_file():
        records = [json.loads(line) for line in telemetry_path.read_text().splitlines() if line.strip()]
    _iterate(accelerator, data, adapter, update, state, records, reference, config, out, log)
    accelerator.wait_for_everyone()
    summary = {
        "iterations": state["iteration"],
        "world_size": accelerator.num_processes,
        "stopped": state["stopped"],
        "reference": reference,
        "best": state["best"],
        "checks": state["checks"],
        "config": config.model_dump(mode="json"),
    }
    if main:
        plot_curves(records, state["checks"], out / "training_curves.png")
        (out / "summary.json").write_text(json.dumps(summary, indent=2))
    return summary


@dataclass(frozen=True)
class _Adapter:
    """The trained LoRA adapter's network (as accelerate prepared it, and unwrapped) and its optimiser."""

    model: Any
    unwrapped: Any
    optimizer: Any
    parameters: list

    def trainee(self, backward) -> Any:
        """What an update trains (`training/update_batch.py:Trainee`), its gradients through `backward`."""
        from eva_runtime.training.update_batch import Trainee

        return Trainee(self.model, self.unwrapped, self.optimizer, backward, self.parameters)


@dataclass(frozen=True)
class _UpdateInputs:
    """The sampler's sigmas and noise schedule and the GRPO settings, the same for every iteration."""

    sigmas: Any
    schedule: Any
    settings: Any


def _prepare_adapter(
    accelerator, transformer, config: AlignConfig, out: Path, resume: bool, log: Callable[[str], None]
) -> tuple[_Adapter, dict]:
    """A new LoRA adapter on the frozen transformer, its optimiser and the run state (resumed from OUT/last)."""
    import torch

    from eva_runtime.world_model.wan.lora import add_lora

    transformer.requires_grad_(False)
    add_lora(transformer, "align", config.lora_rank, config.lora_alpha)
    parameters = [p for p in transformer.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(parameters, lr=config.learning_rate, weight_decay=0.0)
    out.mkdir(parents=True, exist_ok=True)
    state = {"iteration": 0, "best": None, "checks": [], "stopped": None}
    if resume and (out / "last" / "state.json").is_file():
        state = load_state(out / "last", transformer, optimizer, parameters)
        log(f"resumed at iteration {state['iteration']}")
    model, optimizer = accelerator.prepare(transformer, optimizer)
    return _Adapter(model, accelerator.unwrap_model(model), optimizer, parameters), state


def _update_inputs(pipeline, config: AlignConfig) -> _UpdateInputs:
    """Sigmas, noise schedule and GRPO settings from the config."""
    from eva_runtime.training.flow_grpo import GrpoSettings
    from eva_runtime.training.sde import NoiseSchedule
    from eva_runtime.world_model.wan.sampling import flow_sigmas

    sigmas = flow_sigmas(pipeline.scheduler, config.sampling_steps)
    schedule = NoiseSchedule(
        config.schedule.kind, config.schedule.noise_level, config.schedule.sigma_min, config.schedule.sigma_max
    )
    settings = GrpoSettings(
        config.clip_range, config.kl_beta, config.advantage_clip, config.inner_epochs, config.train_last_step
    )
    return _UpdateInputs(sigmas, schedule, settings)


def _reference_check(unwrapped, data: AlignData, config: AlignConfig) -> dict:
    """The held-out check of the SFT model itself: the same network with the adapter disabled."""
    import torch

    with torch.no_grad():
        unwrapped.disable_adapters()
        reference = _heldout_check(
            unwrapped, data.pipeline, data.heldout, data.embeds, data.reward_fn, config, data.latent_count
        )
        unwrapped.enable_adapters()
    return reference


def _iterate(
    accelerator,
    data: AlignData,
    adapter: _Adapter,
    update: _UpdateInputs,
    state: dict,
    records: list[dict],
    reference: dict,
    config: AlignConfig,
    out: Path,
    log: Callable[[str], None],
) -> None:
    """The iterations from state["iteration"]: telemetry, samples, guard checks, checkpoints, early stop."""
    from tqdm.auto import tqdm

    main = accelerator.is_main_process
    telemetry_path = out / "telemetry.jsonl"
    name = "Flow-GRPO" if config.ranked is None else "reward-ranked"
    progress = tqdm(range(state["iteration"], config.iterations), desc=name, disable=not main)
    for iteration in progress:
        began = time.perf_counter()
        step = _ranked_update if config.ranked is not None else _grpo_update
        telemetry, chosen = step(accelerator, data, adapter, update, config, iteration)
        telemetry.update({"iteration": iteration + 1, "seconds": round(time.perf_counter() - began, 2)})
        state["iteration"] = iteration + 1
        records.append(telemetry)
        if main:
            with telemetry_path.open("a") as handle:
                handle.write(json.dumps(telemetry) + "\n")
            progress.set_postfix(reward=f"{telemetry['reward_mean']:.3f}", kl=f"{telemetry.get('kl', 0):.2e}")
            if (iteration + 1) % config.sample_every == 0:
                write_samples(data.reward_fn, chosen[0], out / "samples", iteration + 1, data.fps)
        stop = None
        if (iteration + 1) % config.guard.eval_every == 0 or iteration + 1 == config.iterations:
            stop = _guard(adapter.unwrapped, data, state, reference, config, iteration + 1, out, main, log)
        if main and ((iteration + 1) % config.checkpoint_every == 0 or stop or iteration + 1 == config.iterations):
            optimizer = adapter.optimizer
            # accelerate wraps the optimiser; its state is the wrapped one's.
            optimizer = optimizer.optimizer if hasattr(optimizer, "optimizer") else optimizer
            save_state(out / "last", adapter.unwrapped, optimizer, adapter.parameters, state)
        if stop:
            state["stopped"] = f"early stop at iteration {iteration + 1}: {stop}"
            log(state["stopped"])
            break


@dataclass(frozen=True)
class _Draw:
    """One iteration's draw for this rank: its conditions as a batch of G each, the starting noise and the
    generator and rng that go on drawing (the order of draws is the run's reproducibility)."""

    rng: np.random.Generator
    chosen: list
    condition_latents: Any
    texts: Any
    keys: list
    conditioned: int
    generator: Any
    noise: Any

    def batch(self, sigmas) -> Any:
        """The draw as the rollouts to sample (`training/update_batch.py:RolloutBatch`) with the sampler's sigmas."""
        from eva_runtime.training.update_batch import RolloutBatch

        latents, texts, keys = self.condition_latents, self.texts, self.keys
        return RolloutBatch(latents, texts, self.conditioned, keys, self.noise, sigmas, self.generator)


def _draw(accelerator, data: AlignData, config: AlignConfig, iteration: int) -> _Draw:
    import torch

    rng = np.random.default_rng([config.seed, iteration, accelerator.process_index])
    chosen = _choose_conditions(data, config, rng)
    condition_latents, texts, keys, conditioned = _batch(
        chosen, config.group_size, data.pipeline.vae, data.embeds, data.latent_count
    )
    generator = torch.Generator().manual_seed(int(rng.integers(2**62)))
    noise = torch.randn(condition_latents.shape, generator=generator)
    return _Draw(rng, chosen, condition_latents, texts, keys, conditioned, generator, noise)


def _grpo_update(
    accelerator, data: AlignData, adapter: _Adapter, update: _UpdateInputs, config: AlignConfig, iteration: int
) -> tuple[dict, list]:
    """One GRPO update on conditions drawn for this iteration and rank; its telemetry and the conditions."""
    from eva_runtime.training.flow_grpo import grpo_iteration

    draw = _draw(accelerator, data, config, iteration)
    telemetry, _ = grpo_iteration(
        adapter.trainee(accelerator.backward),
        draw.batch(update.sigmas),
        update.schedule,
        data.reward_fn.for_conditions(draw.chosen, config.group_size),
        update.settings,
        _fast_window(config, draw.rng),
    )
    return telemetry, draw.chosen


def _ranked_update(
    accelerator, data: AlignData, adapter: _Adapter, update: _UpdateInputs, config: AlignConfig, iteration: int
) -> tuple[dict, list]:
    """One reward-ranked fine-tuning step on conditions drawn as Flow-GRPO draws them; its telemetry and the
    conditions."""
    from eva_runtime.training.reward_ranked import RankedSettings, ranked_iteration

    draw = _draw(accelerator, data, config, iteration)
    ranked = config.ranked
    shift = float(data.pipeline.scheduler.config.shift)
    telemetry, _ = ranked_iteration(
        adapter.trainee(accelerator.backward),
        draw.batch(update.sigmas),
        data.reward_fn.for_conditions(draw.chosen, config.group_size),
        RankedSettings(ranked.keep, ranked.updates, ranked.min_spread, shift),
        _recorded_clips(draw.chosen, data) if ranked.anchor else None,
    )
    return telemetry, draw.chosen


def _recorded_clips(conditions, data: AlignData):
    """Clean latents of each recorded condition's observed frames followed by its recorded future (the clip SFT
    trains on), with the instruction's embeddings; None when no condition has a recorded future."""
    import torch

    from eva_runtime.world_model.wan.latents import encode_frames

    recorded = [c for c in conditions if c.truth is not None]
    if not recorded:
        return None
    clips = [np.concatenate([c.frames, c.truth[1:]]) for c in recorded]
    latents = torch.cat([encode_frames(data.pipeline.vae, clip[None]) for clip in clips])
    return latents, torch.cat([data.embeds[c.instruction] for c in recorded])


def _choose_conditions(data: AlignData, config: AlignConfig, rng: np.random.Generator) -> list:
    """This iteration's conditions: `closed_loop.fraction` of them (rounded, at least one) from the captured
    closed-loop states when configured, the rest from the recorded episodes."""
    count = config.conditions_per_iteration
    captured = 0
    if config.closed_loop is not None and data.closed_loop_conditions:
        captured = min(count, max(1, round(config.closed_loop.fraction * count)))
    recorded = [data.train_conditions[i] for i in rng.choice(len(data.train_conditions), count - captured)]
    pool = data.closed_loop_conditions
    return [pool[i] for i in rng.choice(len(pool), captured)] + recorded if captured else recorded


def _fast_window(config: AlignConfig, rng: np.random.Generator) -> set[int] | None:
    """The fast variant's consecutive stochastic steps for this iteration; None (every step) when it is off."""
    if not config.fast.enabled:
        return None
    last = config.sampling_steps - (0 if config.train_last_step else 1)
    first = int(rng.integers(0, max(1, last - config.fast.window + 1)))
    return set(range(first, min(last, first + config.fast.window)))


def _guard(
    unwrapped,
    data: AlignData,
    state: dict,
    reference: dict,
    config: AlignConfig,
    iteration: int,
    out: Path,
    main: bool,
    log: Callable[[str], None],
) -> str | None:
    """A held-out check against the SFT reference; keeps the best passing adapter; the reason to stop if it failed."""
    from eva_runtime.world_model.wan.lora import save_lora

    check = _heldout_check(
        unwrapped, data.pipeline, data.heldout, data.embeds, data.reward_fn, config, data.latent_count
    )
    motion_ok = check["motion_rad"] >= config.guard.min_motion_ratio * reference["motion_rad"]
    psnr_ok = check["psnr_db"] >= reference["psnr_db"] - config.guard.max_psnr_drop_db
    check.update({"iteration": iteration, "passed": bool(motion_ok and psnr_ok)})
    state["checks"].append(check)
    if main:
        log(f"held-out check {check}")
    if check["passed"] and (state["best"] is None or check["reward"] > state["best"]["reward"]):
        state["best"] = check
        if main:
            save_lora(unwrapped, "align", out / "best_lora")
    if not check["passed"]:
        return "motion collapsed" if not motion_ok else "frames drifted from the recordings (PSNR)"
    return None
