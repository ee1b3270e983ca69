"""Open loop: how well a world model imagines the part of a plan an asynchronous loop executes, three ways, on the
same held-out windows [S, S + horizon - 1] of recorded episodes.

- `skipped` (the asynchronous loop today): observed frames up to S - C, a rollout C frames longer, its first C
  frames dropped (they pass while the plan is made);
- `committed`: observed frames up to S - C, then the C frames S - C + 1 .. S as clean history (here the recorded
  ones, an upper bound for the imagined frames a running plan commits to), a rollout of `horizon` from S;
- `fresh` (the synchronous loop): observed frames up to S, a rollout of `horizon` from S.

Each is decoded by the bundle's IDM; per window, the decoded actions' mean absolute error against the recorded
commands (arm joints, grippers) and the frames' PSNR, then paired differences with 95 % intervals. `--committed-model`
measures `committed` on another model (one trained on that much history); it defaults to `--model`. Runs the three
`eva eval world-model` evaluations (one torch job at a time; a rerun reuses those already in OUT) and prints one
JSON document.

    .venv/bin/python bench/committed_window.py --bundle models/bundle_transfer_cube_var2 \
        --model models/wan_transfer_cube_var2 --data data/tc_eval5000 --out runs/committed_window
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import numpy as np

REPOSITORY = Path(__file__).resolve().parents[1]
FIELDS = ("arm_error", "gripper_error", "psnr_db")


def evaluate(args: argparse.Namespace, name: str, model: Path, starts: list[int], horizon: int, history: int) -> None:
    """One `eva eval world-model` run, its JSON and decoded actions under OUT/NAME.* (kept: a rerun reuses them)."""
    if (args.out / f"{name}.json").is_file() and (args.out / f"{name}.npy").is_file():
        return
    command = [str(Path(sys.executable).parent / "eva"), "eval", "world-model", "--bundle", str(args.bundle)]
    command += ["--model", str(model), "--data", str(args.data), "--episodes", str(args.episodes)]
    command += ["--steps", str(args.steps), "--samples", str(args.samples), "--seed", "0", "--threads", "2"]
    command += ["--starts", ",".join(map(str, starts)), "--horizon", str(horizon), "--history-frames", str(history)]
    command += ["--out", str(args.out / f"{name}.json"), "--save-actions", str(args.out / f"{name}.npy")]
    subprocess.run(command, check=True, cwd=REPOSITORY, stdout=subprocess.DEVNULL)


def window_scores(out: Path, name: str, skip: int, horizon: int, videos: dict, grippers: list[int]) -> dict:
    """Per condition (in evaluation order): the window's decoded-action errors and frame PSNR."""
    actions = np.load(out / f"{name}.npy")
    conditions = json.loads((out / f"{name}.json").read_text())["conditions"]
    samples = len(actions) // len(conditions)
    scores: dict[str, list[float]] = {field: [] for field in FIELDS}
    for index, condition in enumerate(conditions):
        start = condition["start"] + skip
        truth = videos[condition["episode"]][start : start + horizon]
        error = np.abs(actions[index * samples : (index + 1) * samples, skip : skip + horizon] - truth[None])
        arms = [d for d in range(error.shape[-1]) if d not in grippers]
        scores["arm_error"].append(float(error[..., arms].mean()))
        scores["gripper_error"].append(float(error[..., grippers].mean()))
        # psnr_by_frame starts at frame 1 (frame 0 is the conditioning frame)
        scores["psnr_db"].append(float(np.mean(condition["psnr_by_frame"][skip : skip + horizon - 1])))
    return {field: np.array(values) for field, values in scores.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bundle", type=Path, required=True)
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--committed-model", type=Path, default=None)
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--episodes", type=int, default=16)
    parser.add_argument("--samples", type=int, default=2)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--history", type=int, default=5, help="observed frames before the window (1 + 4k)")
    parser.add_argument("--committed", type=int, default=12, help="frames C between observation and window (4k)")
    parser.add_argument("--horizon", type=int, default=37)
    parser.add_argument("--starts", default="24,36,48,60", help="window starts S (each >= C)")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    starts = [int(s) for s in args.starts.split(",")]
    c, horizon = args.committed, args.horizon
    evaluate(args, "skipped", args.model, [s - c for s in starts], horizon + c, args.history)
    evaluate(args, "committed", args.committed_model or args.model, starts, horizon, args.history + c)
    evaluate(args, "fresh", args.model, starts, horizon, args.history)

    from eva_runtime.bundle import load_bundle
    from eva_runtime.records.success_rate import mean_interval
    from eva_runtime.training.wm_data import load_videos

    bundle = load_bundle(args.bundle)
    grippers = [int(i) for i in np.flatnonzero(bundle.embodiment.gripper_mask())]
    idm = bundle.manifest.idm  # the recorded actions at the rate and size the IDM decoded the rollouts at
    loaded = load_videos(args.data, idm.cameras[0], idm.fps, tuple(idm.image_size))
    videos = {v.name: v.actions for v in loaded[: args.episodes]}
    scored = {
        "skipped": window_scores(args.out, "skipped", c, horizon, videos, grippers),
        "committed": window_scores(args.out, "committed", 0, horizon, videos, grippers),
        "fresh": window_scores(args.out, "fresh", 0, horizon, videos, grippers),
    }
    report = {
        "settings": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "windows": len(scored["fresh"]["arm_error"]),
        "means": {name: {f: mean_interval(v[f]) for f in FIELDS} for name, v in scored.items()},
        "paired": {
            f"{b} - {a}": {f: mean_interval(scored[b][f] - scored[a][f]) for f in FIELDS}
            for a, b in (("skipped", "committed"), ("skipped", "fresh"), ("committed", "fresh"))
        },
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
