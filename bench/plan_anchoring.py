"""Does anchoring a decoded plan on the commanded state help? Open loop, each plan played in simulation three ways.

The IDM reads the observed frame (plan action 0) a little off the joints the robot was commanded to: about 0.02
rad per arm joint. If that offset persisted over the plan, removing it (`anchor`: every arm action shifted by the
frame-0 offset; `anchor_decay`: the shift fading with a 1 s time constant) would move the hand closer to where the
imagined frames put it. Each condition's decoded plan is played from its true start state as the task-progress
reward plays it (executor, safety filter, simulated arms) and scored by task progress and closest reach; arm
error is against the recorded (or labelled) commands. Two condition sets: the held-out expert episodes (start
replayed, the recorded command at the start frame as the anchor) and the model's own closed-loop states
(`eva train dagger-collect` + `dagger-label`; the filter's command at the request as the anchor). Prints JSON.

    MUJOCO_GL=egl .venv/bin/python bench/plan_anchoring.py --data data/heldout10 \
        --states runs/dagger_held/states.safetensors --clips runs/dagger_held/clips.npz
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from eva_runtime.bundle import load_bundle
from eva_runtime.cli.options import set_torch_threads
from eva_runtime.cli.world_model_eval import idm_and_reward
from eva_runtime.idm.smoothing import moving_average
from eva_runtime.idm.windows import resize_video
from eva_runtime.training.task_progress import TaskProgress
from eva_runtime.world_model.protocol import RolloutRequest

VARIANTS = ("raw", "anchor", "anchor_decay")


def _variants(actions: np.ndarray, anchor: np.ndarray, grippers: np.ndarray) -> dict[str, np.ndarray]:
    offset = np.where(grippers, 0.0, anchor - actions[0])
    fade = np.exp(-np.arange(len(actions)) / 12.5)[:, None]  # 1 s at 12.5 fps
    return {"raw": actions, "anchor": actions + offset, "anchor_decay": actions + offset * fade}


class _Bench:
    def __init__(self, model: Path, bundle: Path, steps: int) -> None:
        from eva_runtime.world_model.wan.backend import load_wan_world_model

        self.decoder, _, _ = idm_and_reward(bundle)
        self.model = load_wan_world_model({"base": str(model), "adapters": [], "steps": steps, "model_id": model.name})
        self.camera = self.model.cameras[0]
        embodiment = load_bundle(bundle).embodiment
        self.grippers = embodiment.gripper_mask()
        self.progress = TaskProgress("transfer_cube", embodiment)

    def condition(self, frames, instruction, horizon, seed, origin, anchor, truth) -> dict:
        rollout = self.model.rollout(RolloutRequest({self.camera: frames}, instruction, horizon, seed=seed))
        video = resize_video(rollout.frames[self.camera][0], self.decoder.config.image_size)
        actions = moving_average(self.decoder.decode_batch({self.camera: video[None]})[0], 3)
        row = {"frame0_arm_offset_rad": float(np.abs(actions[0] - anchor)[~self.grippers].mean())}
        for name, plan in _variants(actions, anchor, self.grippers).items():
            played = self.progress.play(origin, plan, self.model.fps).row()
            row[name] = played | {"arm_error_rad": float(np.abs(plan - truth)[:, ~self.grippers].mean())}
        return row


def _summary(rows: list[dict]) -> dict:
    summary = {
        "conditions": len(rows),
        "frame0_arm_offset_rad": float(np.mean([r["frame0_arm_offset_rad"] for r in rows])),
    }
    for name in VARIANTS:
        summary[name] = {key: float(np.mean([r[name][key] for r in rows])) for key in rows[0][name]}
        if name != "raw":
            paired = np.array([r[name]["task_progress"] - r["raw"]["task_progress"] for r in rows])
            half = 1.96 * paired.std(ddof=1) / np.sqrt(len(paired)) if len(paired) > 1 else float("nan")
            summary[name]["progress_minus_raw"] = [float(paired.mean()), float(half)]
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, default=Path("models/wan_transfer_cube_fgw2"))
    parser.add_argument("--bundle", type=Path, default=Path("models/bundle_transfer_cube_fgw2"))
    parser.add_argument("--data", type=Path, help="held-out expert recording (seeded)")
    parser.add_argument("--episodes", type=int, default=10)
    parser.add_argument("--starts", default="0,8,16,24,32,40,48,56,63")
    parser.add_argument("--states", type=Path, help="captured closed-loop states (with --clips)")
    parser.add_argument("--clips", type=Path)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    set_torch_threads(args.threads)
    bench = _Bench(args.model, args.bundle, args.steps)
    report: dict = {"model": str(args.model), "bundle": str(args.bundle), "steps": args.steps}
    if args.data is not None:
        from eva_runtime.training.wm_data import load_videos

        settings = bench.model.settings
        videos = load_videos(args.data, settings.camera, bench.model.fps, settings.image_size)[: args.episodes]
        rows = []
        for index, video in enumerate(videos):
            for start in (int(s) for s in args.starts.split(",")):
                first = max(0, start - (settings.history_frames - 1))
                truth = np.asarray(video.actions[start : start + 37], dtype=np.float64)
                origin = bench.progress.start_state(int(video.seed), start * 4, video.actions[start])
                frames = video.frames[first : start + 1]
                rows.append(
                    bench.condition(frames, video.instruction, 37, index * 1000 + start, origin, truth[0], truth)
                )
        report["expert_states"] = _summary(rows)
    if args.states is not None:
        from eva_runtime.control.plan_states import load_captured_states
        from eva_runtime.training.dagger_labels import load_clip_set

        states, clips = load_captured_states(args.states), load_clip_set(args.clips)
        history, rows = clips.history_frames, []
        for i in range(len(clips)):
            origin = states.oracle_state(i)
            horizon = clips.frames.shape[1] - (history - 1)
            frames = clips.frames[i, :history]
            rows.append(
                bench.condition(
                    frames, clips.instruction, horizon, i, origin, states.filter_command[i], clips.actions[i]
                )
            )
        report["own_states"] = _summary(rows)
    bench.progress.close()
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
