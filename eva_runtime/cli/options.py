"""Typer option types that several command groups share, so one flag reads the same in every `--help`, and the
`--threads` setting those options feed into torch."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import typer

__all__ = [
    "SQUARE_64",
    "AdapterDirsOption",
    "EpisodeDirOption",
    "FrameSize",
    "FrameSizeOption",
    "PositiveIntOption",
    "ResultsFileOption",
    "ScoringBundleOption",
    "VideoCacheOption",
    "VideoFpsOption",
    "WorldModelDirOption",
    "frame_size",
    "set_torch_threads",
]


@dataclass(frozen=True)
class FrameSize:
    """A frame's height and width in pixels: what the models read, after the camera's frame is shrunk to it."""

    height: int
    width: int

    @property
    def hw(self) -> tuple[int, int]:
        return self.height, self.width

    def __str__(self) -> str:  # as typed on the command line (and shown as the default in --help)
        return str(self.height) if self.height == self.width else f"{self.height}x{self.width}"


SQUARE_64 = FrameSize(64, 64)


def frame_size(text: str | FrameSize) -> FrameSize:
    """`64` is 64x64; `64x112` is 64 high and 112 wide (a camera whose frame is wider than tall, undistorted)."""
    if isinstance(text, FrameSize):
        return text
    parts = str(text).lower().split("x")
    try:
        height, width = (int(parts[0]), int(parts[0])) if len(parts) == 1 else (int(parts[0]), int(parts[1]))
        if len(parts) > 2 or min(height, width) < 8:
            raise ValueError
    except ValueError:
        raise typer.BadParameter(f"{text!r} is not a frame size: N or HEIGHTxWIDTH, each at least 8") from None
    return FrameSize(height, width)


PositiveIntOption = Annotated[int, typer.Option(min=1)]
EpisodeDirOption = Annotated[Path, typer.Option(help="Directory of recorded episode_{i}.hdf5 files.")]
VideoCacheOption = Annotated[Path, typer.Option(help="Video cache from `eva train world-model-cache`.")]
VideoFpsOption = Annotated[float, typer.Option(help="Video rate: the IDM's fps.")]
FrameSizeOption = Annotated[
    FrameSize,
    typer.Option(parser=frame_size, metavar="N|HxW", help="Frame size in pixels: 64, or 64x112 (height x width)."),
]
WorldModelDirOption = Annotated[Path, typer.Option(help="World-model pipeline directory (checked by eva_hashes.json).")]
ScoringBundleOption = Annotated[Path, typer.Option(help="Bundle whose IDM and reward score the rollouts.")]
ResultsFileOption = Annotated[Path, typer.Option(help="JSON results file (a Markdown table is written next to it).")]
AdapterDirsOption = Annotated[list[Path] | None, typer.Option(help="LoRA adapter directories to load.")]


def set_torch_threads(threads: int) -> None:
    # torch is imported here, not at module level: `eva --help` must start without it.
    import torch

    torch.set_num_threads(threads)
