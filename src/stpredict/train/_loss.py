"""The PixNet loss: MSE + λ·(1 − batch-wise PCC) over supervised footprints (Eq. 6)."""

from __future__ import annotations

import torch

__all__ = ["batch_pcc", "grouped_loss", "pixnet_loss", "poisson_deviance"]


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


def poisson_deviance(
    rate: torch.Tensor, counts: torch.Tensor, library: torch.Tensor, target_sum: float
) -> torch.Tensor:
    """Poisson deviance of raw ``counts`` ``(n, M)`` per count, with expected counts ``library · rate / target_sum``.

    ``rate`` ``(n, M)`` is each footprint's predicted expression per ``target_sum`` counts and ``library``
    ``(n,)`` its total count over all genes (the offset). The deviance is 0 for a perfect fit and is
    summed over footprints and genes, then divided by the counts of the batch, so footprints weigh by
    how many molecules they hold: a 2 µm bin with one count says less than a 16 µm bin with a hundred.

    Parameters
    ----------
    rate
        Predicted rates ``(n, M)``, non-negative.
    counts
        Raw counts of the ``M`` genes ``(n, M)``.
    library
        Each footprint's total count over all genes ``(n,)``.
    target_sum
        The unit of ``rate`` (the recipe's normalisation target).

    Returns
    -------
    The deviance per count, a scalar tensor.

    """
    mu = (rate * (library / target_sum)[:, None]).clamp_min(1e-8)
    dev = mu - counts + torch.xlogy(counts, counts) - counts * torch.log(mu)
    return 2 * dev.sum() / library.sum().clamp_min(1.0)


def grouped_loss(
    pred: torch.Tensor,
    target: torch.Tensor,
    groups: torch.Tensor | None,
    lam: float = 0.5,
    *,
    rate: torch.Tensor | None = None,
    counts: torch.Tensor | None = None,
    library: torch.Tensor | None = None,
    target_sum: float = 1e4,
) -> tuple[torch.Tensor, dict]:
    """The training loss over footprints of several tables (footprint sizes): one loss per group, averaged.

    ``groups`` ``(n,)`` gives each footprint's table; ``None`` pools every footprint into one loss (the
    paper's Eq. 6 over the batch). Each group's loss is ``MSE + λ·(1 − PCC)`` of the log-normalised
    ``pred`` against ``target`` or, with ``rate`` and ``counts`` (a count model), the Poisson deviance
    of the counts (:func:`poisson_deviance`) + ``λ·(1 − PCC)`` of ``pred = log1p(rate)``.

    Parameters
    ----------
    pred
        Log-normalised predictions ``(n, M)``.
    target
        Log-normalised targets ``(n, M)``.
    groups
        Table index of each footprint ``(n,)``, or ``None`` for one pooled loss.
    lam
        Weight of the PCC term.
    rate, counts, library, target_sum
        For a count model: the predicted rates, raw counts, totals and the rates' unit (:func:`poisson_deviance`).

    Returns
    -------
    The loss and its parts (``"mse"`` of ``pred`` over every footprint, ``"pcc"`` the mean of the groups' PCC).

    """
    idx = (
        [torch.arange(pred.shape[0], device=pred.device)]
        if groups is None
        else [torch.nonzero(groups == g).squeeze(1) for g in torch.unique(groups)]
    )
    losses, pccs = [], []
    for i in idx:
        if rate is None:
            loss, parts = pixnet_loss(pred[i], target[i], lam)
        else:
            fit = poisson_deviance(rate[i], counts[i], library[i], target_sum)
            if i.numel() >= 2 and lam:
                pcc_t = batch_pcc(pred[i], target[i]).mean()
                loss = fit + lam * (1 - pcc_t)
            else:
                pcc_t = torch.zeros((), device=pred.device)
                loss = fit
            parts = {"pcc": float(pcc_t.detach())}
        losses.append(loss)
        pccs.append(parts["pcc"])
    mse = float(torch.mean((pred - target) ** 2).detach())
    return torch.stack(losses).mean(), {"mse": mse, "pcc": float(sum(pccs) / len(pccs))}
