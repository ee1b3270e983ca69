"""The `eva` command: one entry point with a sub-command per job; each group lives in its own module and imports
its heavy dependencies inside the command, so `eva --help` starts fast and needs no torch, MuJoCo or ROS."""

from eva_runtime.cli import (  # noqa: F401  (registers commands)
    basics,
    bundles,
    calibrate,
    dagger,
    ladder,
    models,
    plan_penalties,
    report,
    runtime,
    serve,
    sim,
    view,
    world_model,
    world_model_eval,
    world_model_recipe,
)
from eva_runtime.cli.common import app

__all__ = ["app"]
