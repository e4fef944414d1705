"""Losses: objects a network owns (``module.loss()``), called alike by training steps and validation.

A loss scores footprint predictions ``(n, M)`` (one row per footprint, one column per gene) against the footprints'
log-normalised targets and, for a count likelihood, their raw counts. Every loss here is PixNet's form (Eq. 6):

    loss = fit + λ · (1 − mean per-gene PCC of the log predictions)

over the footprints of a batch, or, with ``weighting="equal"``, one such loss per table (footprint size), averaged.
Only ``fit`` differs: :class:`MSEPCC` (the paper's MSE on log-normalised values) and :class:`PoissonPCC` (the Poisson
deviance of raw counts, for a rate map). A new likelihood is one subclass registered with :func:`register_loss`;
``PixNet(genes, loss=name)`` then trains with it and validation scores it (docs: "Add a model or a loss").
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch

from .._types import MapSpace, TableWeighting, check_choice

__all__ = [
    "LOSSES",
    "MSEPCC",
    "Loss",
    "PoissonPCC",
    "batch_pcc",
    "get_loss",
    "grouped_loss",
    "pixnet_loss",
    "poisson_deviance",
    "register_loss",
]


def batch_pcc(pred: torch.Tensor, target: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Per-gene Pearson correlation across the footprints of a batch, ``(M,)``."""
    p = pred - pred.mean(0, keepdim=True)
    t = target - target.mean(0, keepdim=True)
    return (p * t).sum(0) / (p.norm(dim=0) * t.norm(dim=0) + eps)


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


class Loss:
    """A training objective over footprint predictions; subclass it and :func:`register_loss` the subclass.

    Parameters
    ----------
    lam
        Weight of the PCC term.
    weighting
        ``"pooled"``: one loss over all footprints of a batch (Eq. 6 over the batch); ``"equal"``: one loss per
        table (footprint size), averaged.
    target_sum
        The recipe's normalisation target: the unit of rates (``output="rate"``).

    Notes
    -----
    A subclass sets

    - ``name``: its registry key (``PixNet(loss=name)``);
    - ``output``: what the network's footprint predictions are, ``"log"`` (log-normalised values) or ``"rate"``
      (expression per ``target_sum`` counts, a rate map's ``map_space="rate"``);
    - ``needs_counts``: whether :meth:`fit` needs the raw counts and library sizes (sections loaded with counts);

    and implements :meth:`fit`. :meth:`__call__` adds the PCC term and the per-table weighting.

    """

    name: ClassVar[str] = ""
    output: ClassVar[MapSpace] = "log"
    needs_counts: ClassVar[bool] = False

    def __init__(
        self, *, lam: float = 0.5, weighting: TableWeighting = "pooled", target_sum: float = 1e4
    ) -> None:
        check_choice("table_weighting", weighting, TableWeighting)
        self.lam = float(lam)
        self.weighting = weighting
        self.target_sum = float(target_sum)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(lam={self.lam:g}, weighting={self.weighting!r}, target_sum={self.target_sum:g})"

    def log(self, out: torch.Tensor) -> torch.Tensor:
        """The log-normalised predictions of the network's footprint output ``out``."""
        return out if self.output == "log" else torch.log1p(out)

    def fit(
        self,
        out: torch.Tensor,
        target: torch.Tensor,
        counts: torch.Tensor | None,
        library: torch.Tensor | None,
    ) -> torch.Tensor:
        """The likelihood term of one group of footprints (a scalar tensor).

        Parameters
        ----------
        out
            The network's footprint predictions ``(n, M)``, in :attr:`output` units.
        target
            Log-normalised targets ``(n, M)``.
        counts, library
            Raw counts ``(n, M)`` and totals ``(n,)`` when :attr:`needs_counts`, else ``None``.

        """
        raise NotImplementedError

    def __call__(
        self,
        out: torch.Tensor,
        target: torch.Tensor,
        *,
        groups: torch.Tensor | None = None,
        counts: torch.Tensor | None = None,
        library: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """The loss of a batch and its parts.

        Parameters
        ----------
        out
            The network's footprint predictions ``(n, M)``.
        target
            Log-normalised targets ``(n, M)``.
        groups
            Table index of each footprint ``(n,)``, used with ``weighting="equal"``; ``None``: one pooled group.
        counts, library
            Raw counts and totals, for a loss that :attr:`needs_counts`.

        Returns
        -------
        The loss and its parts: ``"mse"`` of the log predictions over every footprint, ``"pcc"`` the mean of the
        groups' mean per-gene PCC.

        """
        if self.needs_counts and (counts is None or library is None):
            raise ValueError(
                f"The {self.name!r} loss scores raw counts: load the sections with counts "
                "(a rate map, `map_space='rate'`, is trained on tables whose counts are kept)."
            )
        log = self.log(out)
        if groups is None or self.weighting == "pooled":
            idx = [None]
        else:
            idx = [torch.nonzero(groups == g).squeeze(1) for g in torch.unique(groups)]
        losses, pccs = [], []
        for i in idx:
            o, y, lg, c, lib = (
                x if x is None or i is None else x[i] for x in (out, target, log, counts, library)
            )
            loss = self.fit(o, y, c, lib)
            if lg.shape[0] >= 2 and self.lam:
                pcc = batch_pcc(lg, y).mean()
                loss = loss + self.lam * (1 - pcc)
            else:
                pcc = torch.zeros((), device=out.device)
            losses.append(loss)
            pccs.append(float(pcc.detach()))
        mse = float(torch.mean((log - target) ** 2).detach())
        total = losses[0] if len(losses) == 1 else torch.stack(losses).mean()
        return total, {"mse": mse, "pcc": sum(pccs) / len(pccs)}


#: The registered losses, by name.
LOSSES: dict[str, type[Loss]] = {}


def register_loss(cls: type[Loss]) -> type[Loss]:
    """Register a :class:`Loss` subclass under its ``name`` (a class decorator); ``PixNet(loss=name)`` uses it."""
    if not (isinstance(cls, type) and issubclass(cls, Loss)):
        raise TypeError(f"register_loss takes a subclass of stpredict.module.Loss, got {cls!r}.")
    if not cls.name or not isinstance(cls.name, str):
        raise ValueError(f"{cls.__name__} needs a `name` (its registry key) to be registered.")
    check_choice(f"{cls.__name__}.output", cls.output, MapSpace)
    other = LOSSES.get(cls.name)
    if other is not None and other.__qualname__ != cls.__qualname__:
        raise ValueError(
            f"A loss called {cls.name!r} is registered already ({other.__qualname__}); choose another name."
        )
    LOSSES[cls.name] = cls
    return cls


def get_loss(name: str) -> type[Loss]:
    """The registered loss class called ``name``."""
    try:
        return LOSSES[name]
    except (KeyError, TypeError):
        raise ValueError(
            f"No loss called {name!r}; registered: {sorted(LOSSES)} (add one with stpredict.module.register_loss)."
        ) from None


@register_loss
class MSEPCC(Loss):
    """PixNet's loss (Eq. 6): mean squared error of log-normalised values + λ·(1 − PCC)."""

    name = "mse_pcc"
    output = "log"

    def fit(self, out, target, counts, library) -> torch.Tensor:
        return torch.mean((out - target) ** 2)


@register_loss
class PoissonPCC(Loss):
    """A rate map's loss: the Poisson deviance of raw counts (:func:`poisson_deviance`) + λ·(1 − PCC of log1p rates)."""

    name = "poisson"
    output = "rate"
    needs_counts = True

    def fit(self, out, target, counts, library) -> torch.Tensor:
        return poisson_deviance(out, counts, library, self.target_sum)


def default_loss(map_space: str) -> str:
    """The loss a network whose output is ``map_space`` trains with unless told: MSE+PCC for logs, Poisson for rates."""
    return "poisson" if map_space == "rate" else "mse_pcc"


class OwnsLoss:
    """Mixin of networks: :meth:`loss` builds the loss the network trains and validates with (``loss_name``)."""

    loss_name: str = "mse_pcc"

    def loss(
        self, *, lam: float = 0.5, weighting: TableWeighting = "pooled", target_sum: float = 1e4
    ) -> Loss:
        """The loss object the network trains and validates with (a registered :class:`Loss`), with these settings."""
        return get_loss(self.loss_name)(lam=lam, weighting=weighting, target_sum=target_sum)


def pixnet_loss(pred: torch.Tensor, target: torch.Tensor, lam: float = 0.5) -> tuple[torch.Tensor, dict]:
    """``MSE + λ·(1 − mean per-gene PCC)`` over the footprints of a batch (PixNet Eq. 6): :class:`MSEPCC`."""
    return MSEPCC(lam=lam)(pred, target)


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
    """One loss per table (``groups``), averaged: :class:`MSEPCC` of ``pred`` or, with ``rate``, :class:`PoissonPCC`.

    Kept for compatibility; the losses are objects now (:meth:`OwnsLoss.loss`).
    """
    weighting: Any = "pooled" if groups is None else "equal"
    if rate is None:
        return MSEPCC(lam=lam, weighting=weighting)(pred, target, groups=groups)
    return PoissonPCC(lam=lam, weighting=weighting, target_sum=target_sum)(
        rate, target, groups=groups, counts=counts, library=library
    )
