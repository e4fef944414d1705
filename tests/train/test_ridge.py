from __future__ import annotations

import numpy as np
import pytest

from stpredict.train import fit_ridge, pixnet_score


def _closed_form(Z, Y, a):
    zm, ym = Z.mean(0), Y.mean(0)
    W = np.linalg.solve((Z - zm).T @ (Z - zm) + a * np.eye(Z.shape[1]), (Z - zm).T @ (Y - ym))
    return W, ym - zm @ W


def test_sklearn_ridge_equals_the_closed_form_and_its_cross_validation():
    rng = np.random.default_rng(0)
    n, p, m = 120, 15, 4
    X = rng.normal(size=(n, p)) * rng.uniform(0.5, 3, p) + rng.normal(size=p)
    X[:, 3] = 1.0 + 1e-9 * rng.normal(size=n)  # a dead feature: its SD is floored
    Y = X[:, :5] @ rng.normal(size=(5, m)) + rng.normal(0, 1, (n, m))
    groups = np.repeat([0, 1, 2], n // 3)
    alphas = [0.1, 1.0, 10.0, 100.0, 1000.0]
    fit = fit_ridge(X, Y, groups=groups, alphas=alphas, lam=0.5)
    # the same standardisation, by hand
    mu, sd = X.mean(0), X.std(0)
    sd = np.maximum(sd, 0.1 * np.median(sd[sd > 0]))
    Z = (X - mu) / sd
    scores = []
    for a in alphas:
        s = []
        for g in range(3):
            W, b = _closed_form(Z[groups != g], Y[groups != g], a)
            s.append(pixnet_score(Y[groups == g], Z[groups == g] @ W + b, 0.5))
        scores.append(np.mean(s))
    assert fit.alpha == alphas[int(np.argmin(scores))]
    np.testing.assert_allclose(list(fit.cv_scores.values()), scores, rtol=1e-8)
    W, b = _closed_form(Z, Y, fit.alpha)
    np.testing.assert_allclose(fit.predict(X), Z @ W + b, rtol=1e-6, atol=1e-8)
    assert np.abs(fit.weight[:, 3]).max() < 10 * np.abs(fit.weight).mean()  # the floor keeps it tame
    given = fit_ridge(X, Y, groups=groups, alphas=alphas, alpha=5.0)
    assert given.alpha == 5.0 and given.cv_scores is None
    with pytest.raises(ValueError):
        fit_ridge(X, Y, groups=np.zeros(n), alphas=alphas)  # one group: nothing to leave out
