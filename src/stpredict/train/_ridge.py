"""The linear probe's fit: standardised features, ridge regression with a cross-validated penalty (scikit-learn)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

__all__ = ["RidgeFit", "fit_ridge", "mean_pcc", "pixnet_score"]


def mean_pcc(y_true: np.ndarray, y_pred: np.ndarray, eps: float = 1e-8) -> float:
    """Mean per-column Pearson correlation, as :func:`stpredict.train.batch_pcc` computes it, in NumPy."""
    p = y_pred - y_pred.mean(0)
    t = y_true - y_true.mean(0)
    return float(((p * t).sum(0) / (np.linalg.norm(p, axis=0) * np.linalg.norm(t, axis=0) + eps)).mean())


def pixnet_score(y_true: np.ndarray, y_pred: np.ndarray, lam: float = 0.5) -> float:
    """PixNet's loss ``MSE + λ·(1 − mean per-gene PCC)`` in NumPy (lower is better)."""
    mse = float(np.mean((y_pred - y_true) ** 2))
    if len(y_true) < 2 or not lam:
        return mse
    return mse + lam * (1 - mean_pcc(y_true, y_pred))


@dataclass
class RidgeFit:
    """A fitted probe in the original feature scale: ``X @ weight.T + bias``."""

    weight: np.ndarray  # (n_targets, n_features)
    bias: np.ndarray  # (n_targets,)
    alpha: float
    cv_scores: dict[str, float] | None
    mean: np.ndarray
    scale: np.ndarray

    def predict(self, X: np.ndarray) -> np.ndarray:
        return X @ self.weight.T + self.bias


def fit_ridge(
    X: np.ndarray,
    Y: np.ndarray,
    *,
    groups: np.ndarray,
    alphas: Sequence[float],
    alpha: float | None = None,
    lam: float = 0.5,
    sd_floor: float = 0.1,
) -> RidgeFit:
    """Ridge regression of ``Y`` on standardised ``X`` with the penalty chosen by leave-one-group-out CV.

    Features are standardised with their SD floored at ``sd_floor`` × the median feature SD: features
    that are near-constant on the training footprints (dead ReLU channels, common with a random-init
    encoder) would otherwise get weights of 1/SD and explode on any new input. ``alpha`` (on the
    standardised features) is chosen from ``alphas`` by :class:`~sklearn.model_selection.GridSearchCV`
    with :class:`~sklearn.model_selection.LeaveOneGroupOut` on ``groups``, scored with PixNet's loss
    (:func:`pixnet_score`), unless given.
    """
    # scikit-learn takes ~1 s to import and only the linear probe needs it
    from sklearn.linear_model import Ridge
    from sklearn.metrics import make_scorer
    from sklearn.model_selection import GridSearchCV, LeaveOneGroupOut

    mu, sd = X.mean(0), X.std(0)
    pos = sd[sd > 0]
    sd = np.maximum(sd, sd_floor * float(np.median(pos)) if pos.size else 1.0)
    Z = (X - mu) / sd
    alphas = np.asarray(alphas, float)
    cv_scores = None
    if alpha is None:
        search = GridSearchCV(
            Ridge(),
            {"alpha": list(alphas)},
            cv=LeaveOneGroupOut(),
            scoring=make_scorer(pixnet_score, greater_is_better=False, lam=lam),
            refit=False,
        )
        search.fit(Z, Y, groups=groups)
        scores = -np.asarray(search.cv_results_["mean_test_score"], float)
        alpha = float(alphas[int(np.argmin(scores))])
        cv_scores = dict(zip([f"{a:g}" for a in alphas], scores.tolist(), strict=True))
    ridge = Ridge(alpha=float(alpha)).fit(Z, Y)
    W = np.atleast_2d(ridge.coef_)  # (n_targets, n_features) on standardised features
    b = np.atleast_1d(ridge.intercept_)
    return RidgeFit(W / sd[None, :], b - (mu / sd) @ W.T, float(alpha), cv_scores, mu, sd)
