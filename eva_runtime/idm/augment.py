"""Training-time image augmentation for the IDM, batched in torch.

Generated video is never a clean render: colour drifts, the frame shifts, detail blurs, pixels are noisy. Each
sample draws one colour change, one shift and one blur and applies them to every frame of its window (the
window must stay a consistent clip), so the network learns motion, not pixel values.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F  # noqa: N812

__all__ = ["Augmentation", "augment"]


@dataclass(frozen=True)
class Augmentation:
    brightness: float = 0.2  # +- fraction
    contrast: float = 0.2
    channel_gain: float = 0.05
    shift_px: int = 3
    blur_prob: float = 0.3
    noise_std: float = 3.0  # 0-255 units


def augment(pixels: torch.Tensor, spec: Augmentation, generator: torch.Generator) -> torch.Tensor:
    """pixels (B, C, H, W) float in 0..255, C = frames x 3 -> augmented copy, same shape and range."""
    batch, channels, height, width = pixels.shape
    frames = pixels.reshape(batch, channels // 3, 3, height, width)

    def uniform(*shape: int, scale: float) -> torch.Tensor:
        return (torch.rand(*shape, generator=generator) * 2 - 1) * scale

    brightness = 1 + uniform(batch, 1, 1, 1, 1, scale=spec.brightness)
    contrast = 1 + uniform(batch, 1, 1, 1, 1, scale=spec.contrast)
    gain = 1 + uniform(batch, 1, 3, 1, 1, scale=spec.channel_gain)
    mean = frames.mean(dim=(1, 2, 3, 4), keepdim=True)
    frames = ((frames - mean) * contrast + mean) * brightness * gain
    out = frames.reshape(batch, channels, height, width)
    if spec.shift_px:
        pad = spec.shift_px
        padded = F.pad(out, (pad, pad, pad, pad), mode="replicate")
        offsets = torch.randint(0, 2 * pad + 1, (batch, 2), generator=generator)
        out = torch.stack([padded[i, :, y : y + height, x : x + width] for i, (y, x) in enumerate(offsets.tolist())])
    if spec.blur_prob:
        kernel = torch.tensor([1.0, 2.0, 1.0])
        kernel = (kernel[:, None] * kernel[None, :] / 16).expand(channels, 1, 3, 3)
        blurred = F.conv2d(F.pad(out, (1, 1, 1, 1), mode="replicate"), kernel, groups=channels)
        chosen = torch.rand(batch, 1, 1, 1, generator=generator) < spec.blur_prob
        out = torch.where(chosen, blurred, out)
    if spec.noise_std:
        out = out + torch.randn(out.shape, generator=generator) * spec.noise_std
    return out.clamp(0, 255)
