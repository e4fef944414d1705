from __future__ import annotations

import numpy as np
import pytest
import torch

from stpredict.train import batch_pcc, pixnet_loss, pixnet_score


def test_loss_is_mse_plus_lambda_one_minus_pcc():
    rng = np.random.default_rng(0)
    p = torch.from_numpy(rng.normal(size=(30, 4)).astype(np.float32))
    t = torch.from_numpy(rng.normal(size=(30, 4)).astype(np.float32))
    loss, parts = pixnet_loss(p, t, lam=0.5)
    pcc = np.mean([np.corrcoef(p[:, g], t[:, g])[0, 1] for g in range(4)])
    mse = float(((p - t) ** 2).mean())
    assert parts["pcc"] == pytest.approx(pcc, abs=1e-5)
    assert float(loss) == pytest.approx(mse + 0.5 * (1 - pcc), abs=1e-5)
    assert float(batch_pcc(t, t).mean()) == pytest.approx(1.0, abs=1e-5)
    # the NumPy twin used by the ridge cross-validation is the same function
    assert pixnet_score(t.numpy().astype(float), p.numpy().astype(float), lam=0.5) == pytest.approx(
        float(loss), abs=1e-5
    )


def test_poisson_deviance_is_zero_at_the_counts_and_weighs_footprints_by_their_counts():
    from stpredict.train import poisson_deviance

    counts = torch.tensor([[3.0, 0.0, 1.0], [30.0, 10.0, 0.0]])
    library = torch.tensor([8.0, 80.0])
    exact = counts / library[:, None] * 1e4  # the rate that reproduces the counts
    assert float(poisson_deviance(exact, counts, library, 1e4)) == pytest.approx(0.0, abs=1e-5)
    off = exact * 1.5 + 10.0
    mu = off * library[:, None] / 1e4
    c = counts.numpy()
    ref = (
        2
        * np.sum(mu.numpy() - c + np.where(c > 0, c * np.log(np.where(c > 0, c, 1) / mu.numpy()), 0.0))
        / 88.0
    )
    assert float(poisson_deviance(off, counts, library, 1e4)) == pytest.approx(ref, rel=1e-5)
    # a footprint split into ten of a tenth of its counts at the same rates says exactly as much as the whole
    big = poisson_deviance(off[1:], counts[1:], library[1:], 1e4)
    split = poisson_deviance(
        off[1:].repeat(10, 1), counts[1:].repeat(10, 1) / 10, library[1:].repeat(10) / 10, 1e4
    )
    assert float(big) > 0.05
    assert float(split) == pytest.approx(float(big), rel=1e-4)


def test_grouped_loss_averages_one_loss_per_table():
    from stpredict.train import grouped_loss

    rng = np.random.default_rng(1)
    p = torch.from_numpy(rng.normal(size=(40, 3)).astype(np.float32))
    t = torch.from_numpy(rng.normal(size=(40, 3)).astype(np.float32))
    groups = torch.tensor([0] * 30 + [1] * 10)
    pooled, _ = grouped_loss(p, t, None, 0.5)
    assert float(pooled) == pytest.approx(float(pixnet_loss(p, t, 0.5)[0]), abs=1e-6)
    equal, parts = grouped_loss(p, t, groups, 0.5)
    a, b = pixnet_loss(p[:30], t[:30], 0.5)[0], pixnet_loss(p[30:], t[30:], 0.5)[0]
    assert float(equal) == pytest.approx(float(a + b) / 2, abs=1e-6)
    assert parts["mse"] == pytest.approx(float(((p - t) ** 2).mean()), abs=1e-6)
    # a count model: Poisson deviance per group + the PCC term on log1p of the rates
    rate = torch.exp(p)
    counts = torch.from_numpy(rng.poisson(3.0, size=(40, 3)).astype(np.float32))
    library = counts.sum(1) + 5
    loss, parts = grouped_loss(torch.log1p(rate), t, groups, 0.5, rate=rate, counts=counts, library=library)
    from stpredict.train import poisson_deviance

    ref = 0.0
    for i in (slice(0, 30), slice(30, 40)):
        ref += float(poisson_deviance(rate[i], counts[i], library[i], 1e4))
        ref += 0.5 * (1 - float(batch_pcc(torch.log1p(rate[i]), t[i]).mean()))
    assert float(loss) == pytest.approx(ref / 2, rel=1e-5)
