"""Image encoder: a small residual CNN turning each view into a grid of feature tokens."""

from __future__ import annotations

import torch
from torch import nn


class ResidualBlock(nn.Module):
    """Two 3x3 convolutions with a shortcut; the first may downsample."""

    def __init__(self, in_channels: int, out_channels: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride, bias=False),
                nn.BatchNorm2d(out_channels),
            )
        self.act = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.act(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        return self.act(y + self.shortcut(x))


class ConvEncoder(nn.Module):
    """``[N, 1, H, W]`` -> ``[N, (H/s)*(W/s), d_model]`` with learned 2-D position embeddings.

    Each stage halves the resolution, so ``s = 2 ** len(channels)``.
    """

    def __init__(self, image_size: int, channels: tuple[int, ...], d_model: int) -> None:
        super().__init__()
        if not channels:
            raise ValueError("channels must name at least one stage")
        stride = 2 ** len(channels)
        if image_size % stride:
            raise ValueError(f"image_size {image_size} must be divisible by {stride}")
        self.grid = image_size // stride
        stages: list[nn.Module] = []
        previous = 1
        for width in channels:
            stages.append(ResidualBlock(previous, width, 2))
            previous = width
        self.stages = nn.Sequential(*stages)
        self.proj = nn.Linear(previous, d_model)
        self.pos = nn.Parameter(torch.zeros(1, self.grid * self.grid, d_model))
        nn.init.trunc_normal_(self.pos, std=0.02)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = self.stages(x)
        tokens = features.flatten(2).transpose(1, 2)
        return self.proj(tokens) + self.pos
