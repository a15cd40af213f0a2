"""Newton-Schulz orthogonalisation, batched over leading dimensions: Muon's update (quintic) and FIRE's
init (cubic) share it.
"""
from __future__ import annotations

import torch
from torch import Tensor


# Muon's quintic Newton-Schulz coefficients (Jordan et al.; torch.optim.Muon's defaults)
QUINTIC = (3.4445, -4.7750, 2.0315)
# The cubic Newton-Schulz iteration X <- 1.5 X - 0.5 X X^T X (FIRE's, isaac7778/FIRE vision/interventions/
# fire.py), as the same odd polynomial a X + (b A + c A^2) X with c = 0: it converges to the polar factor U V^T
CUBIC = (1.5, -0.5, 0.0)



def newton_schulz(g: Tensor, steps: int, coefficients: tuple[float, float, float] = QUINTIC, eps: float = 1e-7,
                  dtype: torch.dtype | None = torch.bfloat16) -> Tensor:
    """An approximate orthogonalisation of each matrix of ``g`` [..., m, n] (batched over the leading
    dimensions): ``X = G / (||G||_F + eps)`` (per matrix; Keller Jordan's muon.py, and with eps 0 FIRE's
    ``X / ||X||``), then ``steps`` times ``A = X X^T``, ``X = a X + (b A + c A^2) X`` on the wide orientation
    (transposed when m > n; the same map as iterating on the tall one with X^T X). An odd matrix polynomial,
    so X keeps G's singular vectors and maps each singular value s of X_0 to f(s) = a s + b s^3 + c s^5,
    iterated. With the quintic coefficients (a steep slope at 0 on purpose) it does not converge to the
    polar factor U V^T: after enough steps every singular value oscillates within about [0.7, 1.2]; with
    ``CUBIC`` it converges to U V^T, slowly for small singular values (each grows 1.5x a step). In ``dtype``
    (Muon: bfloat16; None: g's own); returned in that dtype."""
    a, b, c = coefficients
    x = g if dtype is None else g.to(dtype)
    wide = g.size(-2) <= g.size(-1)
    if not wide:
        x = x.mT
    x = x / (x.norm(dim=(-2, -1), keepdim=True) + eps)
    batched = x.dim() > 2
    shape = x.shape
    if batched:
        x = x.reshape(-1, *shape[-2:])
    for _ in range(steps):
        if batched:
            gram = torch.bmm(x, x.mT)
            update = torch.baddbmm(gram, gram, gram, beta=b, alpha=c) if c else gram * b
            x = torch.baddbmm(x, update, x, beta=a)
        else:
            gram = x @ x.T
            update = torch.addmm(gram, gram, gram, beta=b, alpha=c) if c else gram * b
            x = torch.addmm(x, update, x, beta=a)
    x = x.reshape(shape)
    return x if wide else x.mT
