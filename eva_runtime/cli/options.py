"""Typer option types that several command groups share, so one flag reads the same in every `--help`, and the
`--threads` setting those options feed into torch."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

__all__ = [
    "AdapterDirsOption",
    "EpisodeDirOption",
    "FrameSizeOption",
    "PositiveIntOption",
    "ResultsFileOption",
    "ScoringBundleOption",
    "VideoCacheOption",
    "VideoFpsOption",
    "WorldModelDirOption",
    "set_torch_threads",
]

PositiveIntOption = Annotated[int, typer.Option(min=1)]
EpisodeDirOption = Annotated[Path, typer.Option(help="Directory of recorded episode_{i}.hdf5 files.")]
VideoCacheOption = Annotated[Path, typer.Option(help="Video cache from `eva train world-model-cache`.")]
VideoFpsOption = Annotated[float, typer.Option(help="Video rate: the IDM's fps.")]
FrameSizeOption = Annotated[int, typer.Option(help="Square frame size in pixels.")]
WorldModelDirOption = Annotated[Path, typer.Option(help="World-model pipeline directory (checked by eva_hashes.json).")]
ScoringBundleOption = Annotated[Path, typer.Option(help="Bundle whose IDM and reward score the rollouts.")]
ResultsFileOption = Annotated[Path, typer.Option(help="JSON results file (a Markdown table is written next to it).")]
AdapterDirsOption = Annotated[list[Path] | None, typer.Option(help="LoRA adapter directories to load.")]


def set_torch_threads(threads: int) -> None:
    # torch is imported here, not at module level: `eva --help` must start without it.
    import torch

    torch.set_num_threads(threads)
