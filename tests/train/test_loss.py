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
