"""What this machine's CPU can do, as the engine and the optimisers ask it: native bf16 arithmetic and
sound NHWC convolutions. The engine (``warmstart.engine.precision.resolve_engine``) and Muon's precision
(``warmstart.components.optimizer_algorithms.muon.newton_schulz_dtype``) look these up at call time, through this module, so a
test overrides them here. torch is imported inside the functions: planning imports ``warmstart.core``.
"""
from __future__ import annotations

# bf16 autocast on the CPU. None (auto): only for convolutional models, and only on CPUs with native
# bf16 instructions (AVX512-BF16 or AMX). Measured on the development CPU (AMD EPYC with AVX512-BF16,
# benchmarks/README.md): ResNet-18 trained 1.6-2.3x faster in bf16, while the MLP and logistic
# regression, whose steps are too small to gain, ran 10-20% slower. Where bf16 does not apply, a bf16 run
# runs in fp32 and its metrics say so. True or False overrides the rule.
CPU_BF16: bool | None = None


def cpu_has_native_bf16() -> bool:
    import torch

    cpu = torch.cpu
    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(getattr(cpu, name, lambda: False)() for name in checks)


def cpu_channels_last_is_safe() -> bool:
    """Whether oneDNN's NHWC convolutions can be trusted on this CPU. On CPUs without AVX-512, oneDNN's
    AVX2 1x1-convolution kernel computes the weight gradient of a strided 1x1 convolution with fewer
    input channels than its block (8) wrongly in NHWC: it writes past its workspace (a segfault with one
    thread, wrong gradients or a hang with more; uxlfoundation/oneDNN#6035, open). Measured here: a
    ResNet-18 of width 4 in channels_last crashes in its first backward pass with one thread on an AVX2
    CPU. So NHWC on a CPU only where the CPU has AVX-512."""
    import torch

    return torch.backends.cpu.get_cpu_capability().startswith("AVX512")
