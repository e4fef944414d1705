"""The losses live with the networks that own them (:mod:`stpredict.module`); re-exported here for compatibility."""

from __future__ import annotations

from ..module._loss import batch_pcc, grouped_loss, pixnet_loss, poisson_deviance

__all__ = ["batch_pcc", "grouped_loss", "pixnet_loss", "poisson_deviance"]
