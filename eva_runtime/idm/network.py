"""The inverse dynamics network: stacked frames -> conv backbone -> spatial softmax keypoints -> MLP -> actions.

Input: float32 (B, C, H, W) in 0..255, the window's frames of every camera stacked on channels (camera-major,
then time, then RGB). Output: (B, dof) actions in embodiment units; the per-joint mean/std live in buffers, so
the exported graph takes raw pixels and returns joint commands. Backbones are written here (torchvision does
not import beside torch 2.13 on this machine kind): a small fast one for CPU and ResNet-18/50-style ones.
"""

from __future__ import annotations

import torch
from torch import nn

from eva_runtime.idm.config import IdmConfig

__all__ = ["InverseDynamicsModel", "SpatialSoftmax", "build_backbone"]


class SpatialSoftmax(nn.Module):
    """Per-channel expected (x, y) under a softmax over the feature map, with a learnable temperature.

    Coordinates are in [-1, 1]; the grid is a buffer so export keeps it as a constant.
    """

    def __init__(self, channels: int, height: int, width: int) -> None:
        super().__init__()
        ys, xs = torch.meshgrid(torch.linspace(-1, 1, height), torch.linspace(-1, 1, width), indexing="ij")
        self.register_buffer("grid_x", xs.reshape(1, 1, -1), persistent=False)
        self.register_buffer("grid_y", ys.reshape(1, 1, -1), persistent=False)
        self.log_temperature = nn.Parameter(torch.zeros(1))
        self.channels = channels

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        batch, channels = features.shape[:2]
        logits = features.reshape(batch, channels, -1) / torch.exp(self.log_temperature)
        weights = torch.softmax(logits, dim=-1)
        x = (weights * self.grid_x).sum(-1)
        y = (weights * self.grid_y).sum(-1)
        return torch.cat([x, y], dim=1)  # (B, 2C): all x then all y


def _conv(cin: int, cout: int, kernel: int, stride: int = 1) -> nn.Sequential:
    groups = 8 if cout % 8 == 0 else 1
    return nn.Sequential(
        nn.Conv2d(cin, cout, kernel, stride, kernel // 2, bias=False), nn.GroupNorm(groups, cout), nn.ReLU()
    )


class SmallBackbone(nn.Module):
    """Five conv layers, overall stride 4: a 16x16 map from 64x64 input still gives sub-pixel keypoints, at a
    third of the cost of keeping stride 2 (what makes hours of CPU training affordable)."""

    def __init__(self, in_channels: int, width: int, out_channels: int) -> None:
        super().__init__()
        self.layers = nn.Sequential(
            _conv(in_channels, width, 5, 2),
            _conv(width, width, 3),
            _conv(width, 2 * width, 3, 2),
            _conv(2 * width, 2 * width, 3),
            nn.Conv2d(2 * width, out_channels, 1),
        )
        self.stride = 4

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


class _Basic(nn.Module):
    expansion = 1

    def __init__(self, cin: int, planes: int, stride: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(cin, planes, 3, stride, 1, bias=False),
            nn.BatchNorm2d(planes),
            nn.ReLU(),
            nn.Conv2d(planes, planes, 3, 1, 1, bias=False),
            nn.BatchNorm2d(planes),
        )
        self.skip = _shortcut(cin, planes, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.body(x) + self.skip(x))


class _Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, cin: int, planes: int, stride: int) -> None:
        super().__init__()
        out = planes * 4
        self.body = nn.Sequential(
            nn.Conv2d(cin, planes, 1, bias=False),
            nn.BatchNorm2d(planes),
            nn.ReLU(),
            nn.Conv2d(planes, planes, 3, stride, 1, bias=False),
            nn.BatchNorm2d(planes),
            nn.ReLU(),
            nn.Conv2d(planes, out, 1, bias=False),
            nn.BatchNorm2d(out),
        )
        self.skip = _shortcut(cin, out, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.body(x) + self.skip(x))


def _shortcut(cin: int, cout: int, stride: int) -> nn.Module:
    if stride == 1 and cin == cout:
        return nn.Identity()
    return nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))


_RESNET_LAYOUTS = {"resnet18": (_Basic, (2, 2, 2, 2)), "resnet50": (_Bottleneck, (3, 4, 6, 3))}


class ResNetBackbone(nn.Module):
    """ResNet-18 (basic blocks) or ResNet-50 (bottlenecks); the stem takes any number of stacked channels."""

    def __init__(self, kind: str, in_channels: int, out_channels: int) -> None:
        super().__init__()
        block, counts = _RESNET_LAYOUTS[kind]
        layers: list[nn.Module] = [
            nn.Conv2d(in_channels, 64, 7, 2, 3, bias=False),
            nn.BatchNorm2d(64),
            nn.ReLU(),
            nn.MaxPool2d(3, 2, 1),
        ]
        cin = 64
        for stage, (planes, count) in enumerate(zip((64, 128, 256, 512), counts, strict=True)):
            for index in range(count):
                layers.append(block(cin, planes, 2 if index == 0 and stage > 0 else 1))
                cin = planes * block.expansion
        layers.append(nn.Conv2d(cin, out_channels, 1))
        self.layers = nn.Sequential(*layers)
        self.stride = 32

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


def build_backbone(config: IdmConfig) -> nn.Module:
    if config.backbone == "small":
        return SmallBackbone(config.input_channels, config.width, config.keypoints)
    return ResNetBackbone(config.backbone, config.input_channels, config.keypoints)


class InverseDynamicsModel(nn.Module):
    def __init__(self, config: IdmConfig) -> None:
        super().__init__()
        self.config = config
        self.backbone = build_backbone(config)
        height, width = config.image_size
        stride = self.backbone.stride
        self.keypoints = SpatialSoftmax(config.keypoints, -(-height // stride), -(-width // stride))
        layers: list[nn.Module] = []
        size = 2 * config.keypoints
        for index, hidden in enumerate(config.hidden):
            layers.append(nn.Linear(size, hidden))
            if index == 0:
                layers += [nn.LayerNorm(hidden), nn.GELU(), nn.Dropout(config.dropout)]
            else:
                layers.append(nn.GELU())
            size = hidden
        layers.append(nn.Linear(size, config.dof))
        self.head = nn.Sequential(*layers)
        mean = torch.tensor(config.action_mean or [0.0] * config.dof, dtype=torch.float32)
        std = torch.tensor(config.action_std or [1.0] * config.dof, dtype=torch.float32)
        self.register_buffer("action_mean", mean)
        self.register_buffer("action_std", std)

    def normalized(self, pixels: torch.Tensor) -> torch.Tensor:
        """Actions in normalised units (the training target)."""
        features = self.backbone(pixels / 127.5 - 1.0)
        return self.head(self.keypoints(features))

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.normalized(pixels) * self.action_std + self.action_mean
