"""The PixNet loss: MSE + λ·(1 − batch-wise PCC) over supervised footprints (Eq. 6)."""

from __future__ import annotations

import torch

__all__ = ["batch_pcc", "pixnet_loss"]


def batch_pcc(pred: torch.Tensor, target: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Per-gene Pearson correlation across the footprints of a batch, ``(M,)``."""
    p = pred - pred.mean(0, keepdim=True)
    t = target - target.mean(0, keepdim=True)
    return (p * t).sum(0) / (p.norm(dim=0) * t.norm(dim=0) + eps)


def pixnet_loss(pred: torch.Tensor, target: torch.Tensor, lam: float = 0.5) -> tuple[torch.Tensor, dict]:
    """``MSE + λ·(1 − mean per-gene PCC)`` over the footprints of a batch (PixNet Eq. 6)."""
    mse = torch.mean((pred - target) ** 2)
    if pred.shape[0] >= 2 and lam:
        pcc = batch_pcc(pred, target).mean()
        loss = mse + lam * (1 - pcc)
    else:
        pcc = torch.zeros((), device=pred.device)
        loss = mse
    return loss, {"mse": float(mse.detach()), "pcc": float(pcc.detach())}
