"""The torch module classes behind ``warmstart.components.models``' builders (kept apart so the registry
imports no torch)."""
from __future__ import annotations

import math

import torch
from torch import nn

from warmstart.core.errors import SpecError


class _BasicBlock(nn.Module):
    def __init__(self, conv, norm, c_in: int, c_out: int, stride: int):
        super().__init__()
        self.conv1 = conv(c_in, c_out, 3, stride=stride, padding=1, bias=False)
        self.bn1 = norm(c_out)
        self.conv2 = conv(c_out, c_out, 3, stride=1, padding=1, bias=False)
        self.bn2 = norm(c_out)
        self.act1 = nn.ReLU()  # a module (no weights), so that interventions can watch its units
        self.shortcut = nn.Sequential()
        if stride != 1 or c_in != c_out:
            self.shortcut = nn.Sequential(conv(c_in, c_out, 1, stride=stride, bias=False), norm(c_out))

    def forward(self, x):
        out = self.act1(self.bn1(self.conv1(x)))
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

    def unit_layers(self):
        """The units interventions may reset (``warmstart.components.interventions``): each block's inner channels
        (conv1 -> bn1 -> ReLU -> conv2). The channels a block adds to its residual stream also feed the
        next blocks and the shortcuts, so they are not units one can reset alone; shortcut convolutions
        are skipped, as in the published implementations."""
        from warmstart.components.interventions import UnitLayer

        return [UnitLayer(f"blocks.{i}.conv1", f"blocks.{i}.act1", f"blocks.{i}.conv2", norm=f"blocks.{i}.bn1",
                          channels_first=True) for i in range(len(self.blocks))]

    def forward(self, x):
        x = x.reshape(x.shape[0], *self.input_shape)
        x = self.pool(self.blocks(self.stem(x)))
        return self.fc(torch.flatten(x, 1))


def _signal_shape(input_shape, arch: str) -> tuple[int, ...]:
    """(C, H, W) images as they are; (L,) vectors as one-channel 1-D signals (C, L)."""
    if len(input_shape) == 1:
        input_shape = (1, *input_shape)
    if len(input_shape) not in (2, 3):
        raise SpecError(f"model: {arch} needs (L,), (C, L) or (C, H, W) inputs, got {tuple(input_shape)}")
    return tuple(input_shape)


# VGG-16's convolutions: output channels at width 64, "M" a 2x2 max-pool
VGG16_LAYERS = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M")


class VGG16(nn.Module):
    """VGG-16 in its CIFAR form (as in the common CIFAR code bases): 13 3x3 convolutions with BatchNorm and
    ReLU, 64-64-M-128-128-M-256x3-M-512x3-M-512x3-M, then one linear classifier on the 512 features (no
    4096-wide fully connected layers, no dropout: at 32x32 the five pools leave 1x1, and the ImageNet
    classifier would be most of the parameters). ``width`` scales the channels as resnet18's does (64: the
    usual 64..512; channel counts ``c * width // 64``, at least 1). The pools round up (``ceil_mode``) and
    an adaptive average pool precedes the classifier, so 28x28 images (28-14-7-4-2-1) and 1-D signals
    (1-D convolutions on vectors (L,)) fit too; on 32x32 both change nothing."""

    def __init__(self, input_shape, num_classes: int, width: int = 64):
        super().__init__()
        input_shape = _signal_shape(input_shape, "vgg16")
        conv, norm, pool, final = ((nn.Conv1d, nn.BatchNorm1d, nn.MaxPool1d, nn.AdaptiveAvgPool1d)
                                   if len(input_shape) == 2 else
                                   (nn.Conv2d, nn.BatchNorm2d, nn.MaxPool2d, nn.AdaptiveAvgPool2d))
        self.input_shape = input_shape
        layers: list[nn.Module] = []
        c_in = input_shape[0]
        for item in VGG16_LAYERS:
            if item == "M":
                layers.append(pool(2, 2, ceil_mode=True))
            else:
                c_out = max(1, item * width // 64)
                layers += [conv(c_in, c_out, 3, padding=1, bias=False), norm(c_out), nn.ReLU()]
                c_in = c_out
        self.features = nn.Sequential(*layers)
        self.pool = final(1)
        self.classifier = nn.Linear(c_in, num_classes)

    def unit_layers(self):
        """Every convolution's output channels (interventions, ``warmstart.components.interventions``): the chain of
        ``features``, and its last convolution's channels, which reach the classifier through the pools
        one feature each."""
        from warmstart.components.interventions import UnitLayer, sequential_unit_layers

        layers = sequential_unit_layers(self.features, "features")
        convs = [i for i, m in enumerate(self.features) if isinstance(m, (nn.Conv1d, nn.Conv2d))]
        last = convs[-1]
        layers.append(UnitLayer(f"features.{last}", f"features.{last + 2}", "classifier", norm=f"features.{last + 1}",
                                channels_first=True))
        return layers

    def forward(self, x):
        x = x.reshape(x.shape[0], *self.input_shape)
        return self.classifier(torch.flatten(self.pool(self.features(x)), 1))


class Attention(nn.Module):
    """Multi-head self-attention with its own linear layers (so every weight matrix is an ``nn.Linear``'s
    ``weight``: what the layer-wise remedies and Muon look for)."""

    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x):
        b, n, d = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        out = nn.functional.scaled_dot_product_attention(q, k, v)
        return self.proj(out.transpose(1, 2).reshape(b, n, d))


class _Block(nn.Module):
    """A pre-norm transformer block: x + attention(LN(x)), then x + MLP(LN(x)) with a GELU."""

    def __init__(self, dim: int, heads: int, hidden: int):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = Attention(dim, heads)
        self.norm2 = nn.LayerNorm(dim)
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()  # a module, so that interventions can watch the MLP's units
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x):
        x = x + self.attn(self.norm1(x))
        return x + self.fc2(self.act(self.fc1(self.norm2(x))))


class ViT(nn.Module):
    """A small vision transformer (Dosovitskiy et al.): non-overlapping ``patch`` x ``patch`` patches
    embedded by a strided convolution, a class token and learned position embeddings, ``depth`` pre-norm
    blocks of ``heads``-head attention and a GELU MLP of ``mlp_ratio * dim`` units, a final LayerNorm and
    a linear head on the class token. Vectors (L,) are one-channel 1-D signals cut into patches of
    ``patch`` samples (a 1-D convolution); edges that do not fill a patch are dropped, as a strided
    convolution drops them. The head is registered last, so it is the model's last ``nn.Linear``."""

    def __init__(self, input_shape, num_classes: int, patch: int = 4, dim: int = 192, depth: int = 6,
                 heads: int = 3, mlp_ratio: float = 4.0):
        super().__init__()
        input_shape = _signal_shape(input_shape, "vit")
        if dim % heads:
            raise SpecError(f"model.options.heads: must divide dim ({dim}), got {heads}")
        conv = nn.Conv1d if len(input_shape) == 2 else nn.Conv2d
        tokens = math.prod(size // patch for size in input_shape[1:])
        if tokens < 1:
            raise SpecError(f"model.options.patch: {patch} is larger than the input {input_shape}")
        self.input_shape = input_shape
        self.patch_embed = conv(input_shape[0], dim, patch, stride=patch)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.randn(1, tokens + 1, dim) * 0.02)
        self.blocks = nn.Sequential(*[_Block(dim, heads, int(dim * mlp_ratio)) for _ in range(depth)])
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, num_classes)

    def unit_layers(self):
        """The units interventions may reset (``warmstart.components.interventions``): each block's MLP hidden units
        (fc1 -> GELU -> fc2). Attention projections and the residual stream are not unit layers."""
        from warmstart.components.interventions import UnitLayer

        return [UnitLayer(f"blocks.{i}.fc1", f"blocks.{i}.act", f"blocks.{i}.fc2") for i in range(len(self.blocks))]

    def forward(self, x):
        x = x.reshape(x.shape[0], *self.input_shape)
        x = self.patch_embed(x).flatten(2).transpose(1, 2)  # [B, tokens, dim]
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1) + self.pos_embed
        return self.head(self.norm(self.blocks(x))[:, 0])
