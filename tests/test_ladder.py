"""The closed-loop ladder's instrument (degraded world models) and its YAML file."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from eva_runtime.control.loop_settings import LoopSettings
from eva_runtime.world_model.degraded import Degradation, DegradedWorldModel, blur_to_psnr, scale_motion
from eva_runtime.world_model.fidelity import frame_psnr_db
from eva_runtime.world_model.ladder import (
    LadderConfigError,
    load_ladder,
    loop_overrides,
    planner_overrides,
    render_ladder,
    world_model_overrides,
)
from eva_runtime.world_model.protocol import Rollout, RolloutRequest

REPO = Path(__file__).resolve().parents[1]


class MovingSquare:
    """A world model whose future is a white square sliding right one pixel per frame (its true motion)."""

    model_id = "square"
    fps = 12.5
    cameras = ("cam_high",)

    def rollout(self, request: RolloutRequest) -> Rollout:
        frames = np.zeros((request.samples, request.horizon, 32, 32, 3), np.uint8)
        for k in range(request.horizon):
            frames[:, k, 10:16, 2 + k : 8 + k] = 255
        return Rollout({"cam_high": frames}, self.fps, 0.0, self.model_id)


def square_position(frame: np.ndarray) -> float:
    columns = np.nonzero(frame[..., 0].max(0) > 127)[0]
    return float(columns.mean())


def test_motion_scale_slows_the_imagined_future() -> None:
    model = DegradedWorldModel(MovingSquare(), Degradation(motion_scale=0.5))
    video = model.rollout(RolloutRequest({}, "", 17, seed=0)).frames["cam_high"][0]
    travelled = square_position(video[-1]) - square_position(video[0])
    assert travelled == pytest.approx(8.0, abs=0.5)  # half of the true 16 pixels
    assert model.model_id == "square~motion0.5x"


@settings(max_examples=30, deadline=None)
@given(st.integers(2, 40), st.floats(0.05, 1.0))
def test_scaled_motion_starts_at_frame_zero_and_never_runs_ahead(length: int, scale: float) -> None:
    frames = np.arange(length)[:, None, None, None] * np.ones((1, 2, 2, 3), np.uint8)
    out = scale_motion(frames.astype(np.uint8), scale)
    index = out[:, 0, 0, 0].astype(int)
    assert index[0] == 0 and np.all(np.diff(index) >= 0) and np.all(index <= np.arange(length))


@pytest.mark.parametrize("target", [20.0, 26.0, 32.0])
def test_blur_is_searched_to_the_target_psnr_and_spares_frame_zero(target: float) -> None:
    video = MovingSquare().rollout(RolloutRequest({}, "", 9, seed=0)).frames["cam_high"][0]
    blurred = blur_to_psnr(video, target)
    np.testing.assert_array_equal(blurred[0], video[0])
    assert frame_psnr_db(video[1:], blurred[1:]) == pytest.approx(target, abs=1.5)


def test_a_delay_stretches_only_the_time(monkeypatch: pytest.MonkeyPatch) -> None:
    import eva_runtime.world_model.degraded as degraded

    slept: list[float] = []
    monkeypatch.setattr(degraded.time, "sleep", slept.append)
    model = DegradedWorldModel(MovingSquare(), Degradation(delay_s=0.05))
    rollout = model.rollout(RolloutRequest({}, "", 9, seed=0))
    assert len(slept) == 1 and 0.0 < slept[0] <= 0.05  # tops the rollout's own time up to the delay
    clean = MovingSquare().rollout(RolloutRequest({}, "", 9, seed=0))
    np.testing.assert_array_equal(rollout.frames["cam_high"], clean.frames["cam_high"])
    with pytest.raises(ValueError, match="delay_s"):
        Degradation(delay_s=-1.0)


def test_artifacts_and_degradation_settings_are_checked_up_front() -> None:
    with pytest.raises(ValueError, match="motion_scale"):
        Degradation(motion_scale=0.0)
    with pytest.raises(ValueError, match="blur_psnr_db"):
        Degradation(blur_psnr_db=5.0)
    with pytest.raises(TypeError):
        Degradation(artifacts={"wobble": 1})
    model = DegradedWorldModel(MovingSquare(), Degradation(artifacts={"jitter_px": 2}))
    video = model.rollout(RolloutRequest({}, "", 9, seed=0, samples=2)).frames["cam_high"]
    assert video.shape == (2, 9, 32, 32, 3)
    clean = MovingSquare().rollout(RolloutRequest({}, "", 9, seed=0)).frames["cam_high"][0]
    np.testing.assert_array_equal(video[0, 0], clean[0])


def test_the_shipped_ladder_loads_and_names_real_bundles() -> None:
    config = load_ladder(REPO / "configs" / "ladder_transfer_cube.yaml")
    assert config.first_seed == 1000 and config.rungs[0].name == "oracle"
    assert config.episode_steps == 400  # the expert's own 8 s; `--episode-steps` gives slow planners slack
    for rung in config.rungs:
        assert (REPO / rung.bundle / "manifest.yaml").is_file(), rung.bundle
        if "vae" in rung.degrade:  # a pipeline directory's VAE, or a VAE file with its hash sidecar
            vae = REPO / rung.degrade["vae"]
            assert (vae / "vae").is_dir() or Path(f"{vae}.sha256").is_file(), vae


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("rungs:\n  - {name: a, bundle: b, wobble: 1}\n", "rungs[0](a).wobble: unknown key"),
        ("rungs:\n  - {name: a, bundle: b}\n  - {name: a, bundle: c}\n", "unique"),
        ("rungs:\n  - {name: 'a, b', bundle: b}\n", "commas"),
        ("rungs:\n  - {name: a, bundle: b, degrade: {motion_scale: 0}}\n", "rungs[0](a).degrade"),
        ("episodes: 5\nepisodes: 6\nrungs: []\n", "episodes: repeated key 'episodes' at line 2"),
        (
            "rungs:\n  - {name: a, bundle: b, samples: 0}\n",
            "rungs[0](a).samples: Input should be greater than or equal to 1 (allowed: 1 <= value <= 32; got 0)",
        ),
        ("rungs:\n  - {name: a, bundle: b, interpolation: cubic}\n", "rungs[0](a).interpolation"),
        ("rungs:\n  - {name: a, bundle: b, execute_fraction: 0}\n", "rungs[0](a).execute_fraction"),
        ("rungs:\n  - {name: a, bundle: b, track_headroom: 1.5}\n", "rungs[0](a).track_headroom"),
        ("rungs:\n  - {name: a, bundle: b, gripper_latch: [0.7, 0.3]}\n", "rungs[0](a).gripper_latch"),
        ("rungs:\n  - {name: a, bundle: b, synchronous_skip_s: 1.0}\n", "synchronous_skip_s needs synchronous"),
        ("rungs:\n  - {name: a, bundle: b, synchronous: true, committed_frames: 12}\n", "for asynchronous planning"),
        ("rungs:\n  - {name: a, bundle: b, synchronous: true, synchronous_skip_s: -1}\n", "synchronous_skip_s"),
        ("rungs:\n  - {name: a, bundle: b, sampling_draw: 1001}\n", "sampling_draw"),
    ],
)
def test_a_bad_ladder_file_is_refused_with_its_key(tmp_path: Path, text: str, problem: str) -> None:
    path = tmp_path / "ladder.yaml"
    path.write_text(text)
    with pytest.raises(LadderConfigError) as error:
        load_ladder(path)
    assert str(path) in str(error.value) and problem in str(error.value)


def test_a_rungs_loop_changes_become_loop_settings_and_the_rest_keep_the_defaults(tmp_path: Path) -> None:
    path = tmp_path / "ladder.yaml"
    path.write_text(
        "rungs:\n  - {name: plain, bundle: b}\n"
        "  - {name: sync, bundle: b, synchronous: true, execute_fraction: 0.25, retime_headroom: 0}\n"
        "  - {name: untracked, bundle: b, track_headroom: 0}\n"
        "  - {name: skipping, bundle: b, synchronous: true, synchronous_skip_s: 1.0}\n"
        "  - {name: committed, bundle: b, committed_frames: 12}\n"
        "  - {name: redrawn, bundle: b, sampling_draw: 3}\n"
    )
    rungs = load_ladder(path).rungs
    plain, sync, untracked, skipping, committed, redrawn = (LoopSettings(**loop_overrides(rung)) for rung in rungs)
    assert replace(committed, committed_frames=0) == LoopSettings() and committed.committed_frames == 12
    assert planner_overrides(rungs[4]) == {"keep_imagined": True} and planner_overrides(rungs[0]) is None
    assert planner_overrides(rungs[5]) == {"sampling_draw": 3} and redrawn == LoopSettings()  # the planner's only
    assert replace(skipping, synchronous_skip_s=0.0) == replace(LoopSettings(), synchronous=True)
    assert skipping.synchronous_skip_s == 1.0
    assert plain == LoopSettings()
    assert sync.synchronous and sync.execute_fraction == 0.25 and sync.retime_headroom is None
    assert replace(sync, synchronous=False, execute_fraction=1.0, retime_headroom=None) == LoopSettings()
    assert untracked.track_headroom is None and replace(untracked, track_headroom=0.9) == LoopSettings()


def test_a_rungs_world_model_changes_resolve_paths_and_keep_the_bundles_sampler_unless_named(tmp_path: Path) -> None:
    path = tmp_path / "ladder.yaml"
    path.write_text(
        "rungs:\n  - {name: plain, bundle: b}\n"
        "  - {name: fast, bundle: b, sampling_steps: 3}\n"
        "  - {name: vae, bundle: b, degrade: {vae: models/v, motion_scale: 0.5}, sampling_steps: 2}\n"
    )
    plain, fast, vae = load_ladder(path).rungs
    assert world_model_overrides(plain, tmp_path) == {}
    assert world_model_overrides(fast, tmp_path) == {"steps": 3}
    assert world_model_overrides(vae, tmp_path) == {
        "degrade": {"vae": str(tmp_path / "models" / "v"), "motion_scale": 0.5},
        "steps": 2,
    }
    path.write_text("rungs:\n  - {name: none, bundle: b, sampling_steps: 0}\n")
    with pytest.raises(LadderConfigError, match="sampling_steps"):
        load_ladder(path)


def test_the_table_lists_rungs_in_the_files_order_with_intervals(tmp_path: Path) -> None:
    path = tmp_path / "ladder.yaml"
    path.write_text("rungs:\n  - {name: first, bundle: b}\n  - {name: second, bundle: b}\n")
    config = load_ladder(path)
    common = {"planning_latency_p50_s": 0.5, "hold_ticks_per_episode": 40.0, "mean_score": 6.0, "plans": 8}
    rows = [
        {"rung": "second", "successes": 1, "episodes": 4, "wilson95": [0.05, 0.7], **common},
        {"rung": "first", "successes": 4, "episodes": 4, "wilson95": [0.51, 1.0], **common},
    ]
    rows[1]["nominal_intervention_share"] = 0.0123
    rows[1]["stages_reached"] = {"touched": 4, "lifted": 4}
    rows[1]["closest_reach_p50_m"] = 0.0412
    rows[1]["machine_probe_ms"] = 31.6
    table = render_ladder(rows, config).splitlines()
    assert table[2].startswith("| first | 4/4 | [0.51, 1.00] | 0.50 s | 32 ms |")
    assert table[3].startswith("| second | 1/4 | [0.05, 0.70] | 0.50 s | - |")  # written before the probe
    assert table[2].endswith("| 1.23 % | 4.1 cm | touched 4, lifted 4 |")
    assert table[3].endswith("| - | - | - |")  # older rows did not measure them


def test_one_session_runs_logged_episodes_of_the_requested_length(tmp_path: Path) -> None:
    from eva_runtime.control.sim_session import run_sim_episodes
    from eva_runtime.records.outcome_log import OutcomeLog

    result = run_sim_episodes(
        REPO / "models" / "bundle_transfer_cube",
        "transfer_cube",
        2,
        1000,
        tmp_path / "log.db",
        pace=False,
        max_steps=30,
        world_model={"degrade": {"motion_scale": 0.5}},
        loop={"interpolation": "linear"},
    )
    assert result.episodes == 2 and len(result.per_episode) == 2
    assert result.successes == 0  # 30 ticks cannot complete a handover that takes ~330
    assert result.hold_ticks_per_episode <= 30
    assert result.model_id.endswith("~motion_scale=0.5")
    assert result.nominal_intervention_share is None or result.nominal_intervention_share >= 0.0
    with OutcomeLog(tmp_path / "log.db", read_only=True) as log:
        records = log.episodes(run_id=result.run_id)
    assert [r.outcome for r in records] == ["failure", "failure"]
    # 30 ticks from the start pose do not reach the cube: every stage counted, none reached, and the log says so
    assert result.stages_reached == {"touched": 0, "lifted": 0, "both holding": 0, "handed over": 0}
    assert result.per_episode_stage == (0, 0)
    assert len(result.per_episode_reach_m) == 2 and result.closest_reach_p50_m > 0.1  # still far from the cube
    assert all(r.failure_reason == "task not completed; furthest stage: none" for r in records)


def test_a_ladder_run_writes_each_rows_machine_probe_seeds_and_table(tmp_path: Path) -> None:
    from eva_runtime.world_model.ladder import run_ladder

    path = tmp_path / "ladder.yaml"
    path.write_text(
        f"first_seed: 1003\nepisodes: 1\nepisode_steps: 20\n"
        f"rungs:\n  - {{name: oracle, bundle: {REPO / 'models' / 'bundle_transfer_cube'}}}\n"
        "  - {name: not run, bundle: missing}\n"
    )
    logged: list[str] = []
    rows = run_ladder(load_ladder(path), REPO, tmp_path / "out", only=("oracle",), log=logged.append)
    (row,) = rows
    assert row["rung"] == "oracle" and row["episodes"] == 1 and row["first_seed"] == 1003
    assert row["episode_steps"] == 20 and row["machine_probe_ms"] > 0.0
    assert logged == ["oracle: 0/1 [0.00, 0.79]"]  # 20 ticks cannot finish the task
    assert json.loads((tmp_path / "out" / "ladder.json").read_text()) == rows
    assert f"| {row['machine_probe_ms']:.0f} ms |" in (tmp_path / "out" / "ladder.md").read_text()
