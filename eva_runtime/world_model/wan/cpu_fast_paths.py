"""Faster CPU kernels for serving the tiny Wan models: the same arithmetic, a quicker route through PyTorch.

A planner on the robot's CPU spends most of a rollout in two places that PyTorch routes badly at these sizes
(measured in `bench/wan_rollout.py`; docs/world_model.md, "Planning latency on the CPU"):

- **Conv3d at batch 1.** PyTorch sends a float32 convolution with batch 1, 3x3 kernels and a small input to its
  native `slow_conv3d` (im2col) instead of oneDNN (the `use_mkldnn` heuristic in ATen's `Convolution.cpp`,
  "for some case, native is faster"). For the Wan VAE's causal convolutions and the transformer's patch
  embedding, oneDNN is about twice as fast here. `aten::mkldnn_convolution` is called directly for the zero
  padded, float32, CPU convolutions of the given modules.
- **RMS norm over channels.** diffusers' `WanRMS_norm` calls `F.normalize(x, dim=1)`. On a channels-first
  5-D tensor this reduces along a strided axis, about 10x slower than summing squares with keepdim. The
  replacement computes the same `x / max(||x||, 1e-12)`.

Results differ from the stock kernels only by float rounding (at most 1 grey level in decoded uint8 frames;
`tests/test_wan_cpu_fast_paths.py`). Only inference uses them: modules are patched per instance, nothing global
changes, and a module on another device or dtype keeps the stock path at call time.
"""

from __future__ import annotations

import types

import torch
from torch import nn

__all__ = ["install_cpu_fast_paths"]

_NORM_EPS = 1e-12  # F.normalize's default


def _onednn_conv_forward(self: nn.Conv3d, input: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None):
    if (
        input.device.type != "cpu"
        or input.dtype != torch.float32
        or weight.dtype != torch.float32
        or self.padding_mode != "zeros"
        or isinstance(self.padding, str)
        or torch.is_grad_enabled()
    ):
        return nn.Conv3d._conv_forward(self, input, weight, bias)
    return torch.ops.aten.mkldnn_convolution(
        input.contiguous(), weight.contiguous(), bias, self.padding, self.stride, self.dilation, self.groups
    )


def _channel_rms_norm_forward(self, x: torch.Tensor) -> torch.Tensor:
    if x.device.type != "cpu" or x.dtype != torch.float32 or torch.is_grad_enabled():
        return type(self).forward(self, x)
    normalized = x / x.square().sum(1, keepdim=True).sqrt().clamp_min(_NORM_EPS)
    return normalized * self.scale * self.gamma + self.bias


def _is_wan_rms_norm(module: nn.Module) -> bool:
    return type(module).__name__ == "WanRMS_norm" and hasattr(module, "channel_first")


def install_cpu_fast_paths(*models: nn.Module) -> int:
    """Patch every Conv3d and channel-first Wan RMS norm inside `models`; returns how many modules were patched."""
    patched = 0
    for model in models:
        for module in model.modules():
            if isinstance(module, nn.Conv3d) and not isinstance(module, nn.LazyConv3d):
                module._conv_forward = types.MethodType(_onednn_conv_forward, module)
                patched += 1
            elif _is_wan_rms_norm(module) and module.channel_first:
                module.forward = types.MethodType(_channel_rms_norm_forward, module)
                patched += 1
    return patched
