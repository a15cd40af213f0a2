"""The torch module classes behind ``warmstart.models``' builders (kept apart so the registry imports no torch)."""
from __future__ import annotations

import torch
from torch import nn

from .errors import SpecError


class _BasicBlock(nn.Module):
    def __init__(self, conv, norm, c_in: int, c_out: int, stride: int):
        super().__init__()
        self.conv1 = conv(c_in, c_out, 3, stride=stride, padding=1, bias=False)
        self.bn1 = norm(c_out)
        self.conv2 = conv(c_out, c_out, 3, stride=1, padding=1, bias=False)
        self.bn2 = norm(c_out)
        self.shortcut = nn.Sequential()
        if stride != 1 or c_in != c_out:
            self.shortcut = nn.Sequential(conv(c_in, c_out, 1, stride=stride, bias=False), norm(c_out))

    def forward(self, x):
        out = torch.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return torch.relu(out + self.shortcut(x))


class ResNet18(nn.Module):
    """ResNet-18 in its CIFAR form: 3x3 stride-1 stem, no max-pool, BasicBlocks [2, 2, 2, 2].

    Width 64 gives the usual 64/128/256/512 channels (11.17 M parameters at 3x32x32, 10 classes); the
    authors' public code used width 16. Vectors (L,) are treated as one-channel 1-D signals, so the same
    architecture runs with 1-D convolutions on mnist1d.
    """

    def __init__(self, input_shape, num_classes: int, width: int = 64):
        super().__init__()
        if len(input_shape) == 1:
            input_shape = (1, *input_shape)
        if len(input_shape) not in (2, 3):
            raise SpecError(f"model: resnet18 needs (L,), (C, L) or (C, H, W) inputs, got {input_shape}")
        conv, norm = (nn.Conv1d, nn.BatchNorm1d) if len(input_shape) == 2 else (nn.Conv2d, nn.BatchNorm2d)
        self.input_shape = tuple(input_shape)
        widths = [width, 2 * width, 4 * width, 8 * width]
        self.stem = nn.Sequential(conv(input_shape[0], width, 3, stride=1, padding=1, bias=False), norm(width), nn.ReLU())
        blocks, c_in = [], width
        for i, c_out in enumerate(widths):
            for j in range(2):
                blocks.append(_BasicBlock(conv, norm, c_in, c_out, stride=2 if (i > 0 and j == 0) else 1))
                c_in = c_out
        self.blocks = nn.Sequential(*blocks)
        # Adaptive pooling equals the authors' 4x4 average pool on 32x32 inputs and also fits 28x28 and 1-D.
        self.pool = nn.AdaptiveAvgPool1d(1) if conv is nn.Conv1d else nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(c_in, num_classes)

    def forward(self, x):
        x = x.reshape(x.shape[0], *self.input_shape)
        x = self.pool(self.blocks(self.stem(x)))
        return self.fc(torch.flatten(x, 1))
