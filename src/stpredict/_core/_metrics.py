"""Per-gene Pearson correlation and its summaries (PCC@F/S/M), shared by evaluation and plots."""

from __future__ import annotations

import numpy as np

__all__ = ["pcc_per_gene", "summarize_pcc"]


def pcc_per_gene(pred: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """Pearson correlation of each column; NaN where either side is constant."""
    p = pred - pred.mean(0)
    t = truth - truth.mean(0)
    den = np.sqrt((p**2).sum(0) * (t**2).sum(0))
    with np.errstate(invalid="ignore", divide="ignore"):
        r = (p * t).sum(0) / den
    r[den <= 1e-12] = np.nan
    return r


def summarize_pcc(pcc: np.ndarray) -> dict[str, float]:
    """PCC@F (first quartile), PCC@S (median) and PCC@M (mean) over genes with a defined PCC."""
    ok = pcc[np.isfinite(pcc)]
    if ok.size == 0:
        return {"PCC@F": np.nan, "PCC@S": np.nan, "PCC@M": np.nan}
    return {"PCC@F": float(np.quantile(ok, 0.25)), "PCC@S": float(np.median(ok)), "PCC@M": float(ok.mean())}
