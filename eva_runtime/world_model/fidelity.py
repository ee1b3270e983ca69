"""What a world model's frames keep of what the task needs: whole-frame PSNR, and the small red cube.

The transfer-cube cube is ~5 pixels at 64x64: whole-frame PSNR barely notices it vanishing (the first tiny VAE
turned it grey at 26.6 dB). So the cube is measured on its own, from the reference frames: its pixels are the
saturated red ones (the scene has no other red), its box is their bounding box grown by `margin` pixels, and
- `cube_psnr_db` is the PSNR over those boxes, pooled over all frames where the cube is seen;
- `cube_visible` is the share of those frames whose estimate still has a red pixel inside the box;
- `cube_colour_error` is the mean absolute RGB error on the reference's cube pixels.
numpy only: used by the VAE candidates' measurement, open-loop evaluation and the ladder.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

__all__ = ["CubeFidelity", "cube_fidelity", "cube_mask", "frame_psnr_db"]


def cube_mask(frames: np.ndarray, strict: bool = True) -> np.ndarray:
    """(..., H, W, 3) uint8 -> (..., H, W) bool: saturated red pixels (strict) or reddish ones (loose)."""
    rgb = frames.astype(np.int16)
    red, green, blue = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    if strict:
        return (red > 120) & (red - green > 60) & (red - blue > 60)
    return (red > 90) & (red - green > 35) & (red - blue > 35)


def frame_psnr_db(reference: np.ndarray, estimate: np.ndarray) -> float:
    mse = np.mean((reference.astype(np.float64) - estimate.astype(np.float64)) ** 2)
    return float(10 * np.log10(255.0**2 / max(mse, 1e-10)))


@dataclass(frozen=True)
class CubeFidelity:
    frame_psnr_db: float
    cube_psnr_db: float
    cube_visible: float
    cube_colour_error: float
    cube_frames: int

    def as_dict(self) -> dict:
        return asdict(self)


def cube_fidelity(reference: np.ndarray, estimate: np.ndarray, margin: int = 2) -> CubeFidelity:
    """Compare (N, H, W, 3) uint8 estimate frames with the reference frames (see the module docstring)."""
    reference = np.asarray(reference).reshape(-1, *np.asarray(reference).shape[-3:])
    estimate = np.asarray(estimate).reshape(reference.shape)
    squared, pixels, visible, colour, seen = 0.0, 0, 0, [], 0
    height, width = reference.shape[1:3]
    for truth, guess in zip(reference, estimate, strict=True):
        mask = cube_mask(truth)
        if not mask.any():
            continue
        seen += 1
        rows, cols = np.nonzero(mask)
        top, bottom = max(rows.min() - margin, 0), min(rows.max() + margin + 1, height)
        left, right = max(cols.min() - margin, 0), min(cols.max() + margin + 1, width)
        box_truth = truth[top:bottom, left:right].astype(np.float64)
        box_guess = guess[top:bottom, left:right].astype(np.float64)
        squared += float(((box_truth - box_guess) ** 2).sum())
        pixels += box_truth.size
        visible += bool(cube_mask(guess[top:bottom, left:right], strict=False).any())
        colour.append(np.abs(truth[mask].astype(np.float64) - guess[mask].astype(np.float64)).mean())
    cube_psnr = float(10 * np.log10(255.0**2 / max(squared / pixels, 1e-10))) if pixels else float("nan")
    return CubeFidelity(
        frame_psnr_db=frame_psnr_db(reference, estimate),
        cube_psnr_db=cube_psnr,
        cube_visible=visible / seen if seen else float("nan"),
        cube_colour_error=float(np.mean(colour)) if colour else float("nan"),
        cube_frames=seen,
    )
