"""What the engine does on this device for this model: precision, memory format, compilation.

``resolve_engine`` turns a run's ``EngineSpec`` into a ``ResolvedEngine`` (recorded in metrics.json);
what the CPU can do is asked of ``warmstart.core.hardware`` at call time.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch
from torch import nn

from warmstart.core import hardware
from warmstart.core.spec import EngineSpec


@dataclass(frozen=True)
class ResolvedEngine:
    """What the engine actually does on this device for this model (recorded in metrics.json)."""

    autocast: torch.dtype | None = None  # None: plain fp32
    channels_last: bool = False
    compile: bool = False

    @property
    def precision(self) -> str:
        return "bf16" if self.autocast == torch.bfloat16 else "fp32"

    def context(self, device: torch.device):
        if self.autocast is None:
            return contextlib.nullcontext()
        return torch.autocast(device.type, dtype=self.autocast)


def resolve_engine(engine: EngineSpec | None, device: torch.device, model: nn.Module) -> ResolvedEngine:
    """bf16 on CUDA always, on a CPU only for convolutional models where the CPU computes bf16 natively
    (``hardware.CPU_BF16`` overrides the rule); NHWC only for convolutional models, on CUDA or where
    oneDNN's NHWC kernels are sound (``hardware.cpu_channels_last_is_safe``)."""
    if engine is None:
        return ResolvedEngine()
    cuda = device.type == "cuda"
    convolutional = any(isinstance(m, nn.Conv2d) for m in model.modules())
    cpu_bf16 = (convolutional and hardware.cpu_has_native_bf16()) if hardware.CPU_BF16 is None else hardware.CPU_BF16
    bf16 = engine.precision == "bf16" and (cuda or (device.type == "cpu" and cpu_bf16))
    # NHWC suits cuDNN's tensor cores and oneDNN's CPU convolutions alike (1.3x for ResNet-18 on an
    # AVX-512 CPU), where oneDNN's NHWC kernels are sound (cpu_channels_last_is_safe)
    nhwc = engine.channels_last and convolutional and (cuda or hardware.cpu_channels_last_is_safe())
    return ResolvedEngine(autocast=torch.bfloat16 if bf16 else None,
                          channels_last=nhwc,
                          compile=engine.compile)


def prepare_model(model: nn.Module, resolved: ResolvedEngine) -> nn.Module:
    """Apply the memory format in place; return the module to call (compiled or not). The returned
    module shares its parameters with ``model``, whose state dict stays the one to save."""
    if resolved.channels_last:
        model.to(memory_format=torch.channels_last)
    return torch.compile(model) if resolved.compile else model


def formatted(xb: torch.Tensor, resolved: ResolvedEngine) -> torch.Tensor:
    """A batch of images in the memory format the model was prepared for."""
    return xb.contiguous(memory_format=torch.channels_last) if resolved.channels_last and xb.dim() == 4 else xb
