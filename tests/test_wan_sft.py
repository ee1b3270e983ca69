"""World-model SFT end to end on tiny real models: `eva train world-model` under torchrun with 2 CPU ranks."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

from eva_runtime.world_model.protocol import RolloutRequest
from eva_runtime.world_model.wan.backend import load_wan_world_model
from tests.wan_helpers import INSTRUCTION, save_tiny_base, square_video, write_square_episodes


def test_two_rank_sft_step_writes_a_loadable_model(tmp_path: Path) -> None:
    base = save_tiny_base(tmp_path / "base")
    data = write_square_episodes(tmp_path / "data", count=6)
    out = tmp_path / "run"
    eva = str(Path(sys.executable).with_name("eva"))
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", eva]
    command += ["train", "world-model", "--base", str(base), "--data", str(data), "--out", str(out)]
    command += ["--steps", "3", "--batch-size", "2", "--horizon", "9", "--clip-stride", "2", "--held-out", "2"]
    command += ["--sample-every", "0", "--threads", "1"]
    environment = {**os.environ, "OMP_NUM_THREADS": "1"}
    finished = subprocess.run(command, capture_output=True, text=True, timeout=300, env=environment)
    assert finished.returncode == 0, finished.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["world_size"] == 2
    assert np.isfinite(summary["final_loss"])
    assert summary["clips"] == 4 * 3  # 4 training episodes of 13 frames, clips of 9 starting at 0, 2, 4
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert records and all(np.isfinite(r["loss"]) for r in records)
    assert (out / "samples" / "step_000003.gif").stat().st_size > 0
    model = load_wan_world_model({"base": str(out / "model"), "steps": 2})  # hashes written and verified
    rollout = model.rollout(RolloutRequest({"cam_high": square_video(1, 32, 0)}, INSTRUCTION, 9, seed=0))
    assert rollout.frames["cam_high"].shape == (1, 9, 32, 32, 3)
    described = json.loads((out / "model" / "eva_world_model.json").read_text())
    assert described["sft"]["world_size"] == 2


def test_base_model_command_writes_a_verified_pipeline(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from eva_runtime.cli import app
    from eva_runtime.world_model.wan.model_files import verify_hashes

    data = write_square_episodes(tmp_path / "data", count=11, frames=36)
    out = tmp_path / "base"
    arguments = ["train", "world-model-base", "--data", str(data), "--out", str(out), "--image-size", "32"]
    result = CliRunner().invoke(app, [*arguments, "--vae-steps", "2", "--vae-finetune-steps", "1", "--threads", "1"])
    assert result.exit_code == 0, result.output
    assert verify_hashes(out)
    described = json.loads((out / "eva_world_model.json").read_text())
    assert (described["vae_steps"], described["vae_finetune_steps"]) == (2, 1)
    assert np.isfinite(described["vae_psnr_heldout_db"]) and len(described["heldout_episodes"]) == 10
    vae_config = json.loads((out / "vae" / "config.json").read_text())
    assert vae_config["latents_std"] != [1.0] * 8  # the latent statistics were measured and stored
    model = load_wan_world_model({"base": str(out), "steps": 1})
    rollout = model.rollout(RolloutRequest({"cam_high": square_video(1, 32, 0)}, INSTRUCTION, 17, seed=0))
    assert rollout.frames["cam_high"].shape == (1, 17, 32, 32, 3)
