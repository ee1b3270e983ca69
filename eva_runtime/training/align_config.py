"""`eva train align` settings: one YAML file, validated at load with errors naming the file, key and range.

Two presets live in `configs/`: `align_tiny.yaml` (runs on this project's 2-core CPU machine) and
`align_wan14b.yaml` (the EVA authors' settings for Wan2.1-14B on GPUs, documented, not run here).
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from eva_runtime.config_files import ConfigFileError, load_model

__all__ = [
    "RESUMABLE_CHANGES",
    "AlignConfig",
    "AlignConfigError",
    "ClosedLoopSection",
    "RankedSection",
    "load_align_config",
]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ScheduleSection(_Strict):
    kind: Literal["flow_grpo", "wan"] = "flow_grpo"
    noise_level: float = Field(0.7, ge=0.0, le=2.0)
    sigma_min: float = Field(0.0, ge=0.0)
    sigma_max: float = Field(0.5, ge=0.0)


class FastSection(_Strict):
    enabled: bool = False
    window: int = Field(2, ge=1)  # consecutive SDE steps trained per iteration; ODE elsewhere


class GuardSection(_Strict):
    """Against the trivial optimum (a motionless video decodes to a perfectly smooth trajectory)."""

    eval_every: int = Field(10, ge=1)
    eval_conditions: int = Field(16, ge=1)
    min_motion_ratio: float = Field(0.6, ge=0.0, le=1.0)  # held-out motion / SFT's, below: stop
    max_psnr_drop_db: float = Field(2.0, ge=0.0)  # held-out PSNR below SFT's by more: stop


class TaskRewardSection(_Strict):
    """Adds the task progress of each decoded plan, played in simulation from the condition's recorded start
    (training/task_progress.py), to the executability reward: reward = executability + weight * progress."""

    task: Literal["transfer_cube", "insertion"]
    weight: float = Field(1.0, ge=0.0)
    hold_ticks: int = Field(5, ge=1)  # a stage counts once held this many control ticks


class ClosedLoopSection(_Strict):
    """Training conditions from a learned model's own closed-loop plan requests (`eva train dagger-collect`): the
    frames it was sent, each rollout played from the captured simulator and filter state (no replay). The states
    the demonstrations never show, where the closed loop loses the task (docs/world_model.md)."""

    states: str  # the plan-state capture (.safetensors)
    fraction: float = Field(0.5, gt=0.0, le=1.0)  # of each iteration's conditions; the rest from `data`


class RankedSection(_Strict):
    """Reward-ranked fine-tuning instead of Flow-GRPO (training/reward_ranked.py): each iteration's G ODE rollouts
    per condition ranked by the reward, the best `keep` trained on with the SFT loss for `updates` steps. The SDE
    schedule, fast window, clipping and KL settings are not used."""

    keep: int = Field(1, ge=1)
    updates: int = Field(2, ge=1)
    min_spread: float = Field(0.0, ge=0.0)  # reward range a group needs to be ranked
    # Each update also trains on the drawn conditions' recorded futures (SFT replay): the model's own few-step
    # samples alone drift its frames (PSNR -2.2 dB in 20 iterations, docs/world_model.md).
    anchor: bool = False


class AlignConfig(_Strict):
    base: str  # the SFT model directory (diffusers pipeline with eva_hashes.json)
    bundle: str  # deployment bundle whose frozen IDM and reward score the rollouts
    data: str  # recorded episodes the conditions are drawn from
    p0: float | None = Field(None, gt=0)  # reward scale; None: the bundle's
    iterations: int = Field(60, ge=1)
    conditions_per_iteration: int = Field(2, ge=1)
    group_size: int = Field(8, ge=2)  # G
    sampling_steps: int = Field(10, ge=2)
    horizon: int = Field(17, ge=2)
    history_frames: int = Field(1, ge=1)
    condition_starts: tuple[int, ...] = (0, 8, 16, 24, 32, 40, 48, 56, 64)  # frames at the model's fps
    held_out: int = Field(10, ge=1)  # last episodes: the guard's conditions, never trained on
    schedule: ScheduleSection = ScheduleSection()
    fast: FastSection = FastSection()
    guard: GuardSection = GuardSection()
    task_reward: TaskRewardSection | None = None  # None: the executability reward alone (the EVA paper's)
    closed_loop: ClosedLoopSection | None = None  # needs task_reward: its states are what the progress is played from
    ranked: RankedSection | None = None  # None: Flow-GRPO; a section: reward-ranked fine-tuning
    learning_rate: float = Field(1e-4, gt=0)
    inner_epochs: int = Field(1, ge=1)
    clip_range: float = Field(1e-4, gt=0)
    advantage_clip: float = Field(5.0, gt=0)
    # Multiplies the exact per-step Gaussian KL, mean((mu - mu_ref)^2) / (2 std_t^2 |dt|): the public Flow-GRPO code
    # divides by std_t^2 alone, so its beta is |dt| times weaker at equal value (0.004 there = 0.004 |dt| here).
    kl_beta: float = Field(0.004, ge=0)
    lora_rank: int = Field(8, ge=1)
    lora_alpha: float = Field(8.0, gt=0)
    train_last_step: bool = False  # Flow-GRPO drops the last (least noisy) step
    sample_every: int = Field(20, ge=1)
    checkpoint_every: int = Field(10, ge=1)
    seed: int = 0

    @model_validator(mode="after")
    def _closed_loop_needs_the_task_reward(self) -> AlignConfig:
        if self.closed_loop is not None and self.task_reward is None:
            raise ValueError("closed_loop needs task_reward: its conditions are scored by where their plans go")
        return self

    @model_validator(mode="after")
    def _ranked_keeps_fewer_than_a_group(self) -> AlignConfig:
        if self.ranked is not None and self.ranked.keep >= self.group_size:
            raise ValueError(f"ranked.keep ({self.ranked.keep}) must be below group_size ({self.group_size})")
        return self


# What a resumed run may change: how long it runs and how often it reports. Everything else is its identity.
RESUMABLE_CHANGES = frozenset({"iterations", "sample_every", "checkpoint_every"})


class AlignConfigError(ConfigFileError):
    """The alignment file is unreadable or invalid; the message names the file and the key."""


def load_align_config(path: Path | str, **overrides) -> AlignConfig:
    """Read and validate an alignment YAML; `overrides` (None: not given) replace top-level keys before validation."""
    given = {key: value for key, value in overrides.items() if value is not None}
    return load_model(path, AlignConfig, what="alignment config", error=AlignConfigError, overrides=given)
