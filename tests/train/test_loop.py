"""The one training loop, driven by a minimal plan: records, validation, early stopping, resume."""

from __future__ import annotations

import numpy as np
import torch

from stpredict.train import fit


class _Model:
    def __init__(self):
        self.history, self.optimizer_state = [], None


class _Plan:
    """Fits y = 3x with a scalar weight; validation losses follow a script."""

    def __init__(self, val_losses=None):
        self.net = torch.nn.Linear(1, 1, bias=False)
        torch.nn.init.zeros_(self.net.weight)
        self.val = list(val_losses or [])
        self.epochs_started = 0
        self.weights_at_val = []

    @property
    def has_validation(self):
        return bool(self.val)

    def on_epoch_start(self):
        self.epochs_started += 1
        assert self.net.training

    def training_step(self):
        x = torch.linspace(-1, 1, 16)[:, None]
        loss = ((self.net(x) - 3 * x) ** 2).mean()
        return loss, 0.5

    def validate(self):
        assert not self.net.training
        self.weights_at_val.append(float(self.net.weight))
        return {"val_loss": self.val.pop(0)}


def test_records_every_epoch_and_resumes_the_optimiser():
    model, plan = _Model(), _Plan()
    fit(
        model,
        plan,
        device=torch.device("cpu"),
        max_epochs=3,
        steps_per_epoch=5,
        lr=0.1,
        weight_decay=0.0,
        patience=None,
        progress=False,
    )
    assert [h["epoch"] for h in model.history] == [1, 2, 3] and plan.epochs_started == 3
    assert model.history[-1]["train_loss"] < model.history[0]["train_loss"]
    assert set(model.history[0]) == {"epoch", "train_loss", "train_pcc", "seconds"}
    state = model.optimizer_state
    assert state is not None and state["state"][0]["step"] == 15
    fit(
        model,
        plan,
        device=torch.device("cpu"),
        max_epochs=2,
        steps_per_epoch=5,
        lr=0.1,
        weight_decay=0.0,
        patience=None,
        progress=False,
    )
    assert [h["epoch"] for h in model.history] == [1, 2, 3, 4, 5]
    assert model.optimizer_state["state"][0]["step"] == 25  # Adam went on, not restarted
    assert not plan.net.training


def test_early_stopping_restores_the_best_epoch():
    model, plan = _Model(), _Plan(val_losses=[5.0, 1.0, 2.0, 3.0, 0.5])
    fit(
        model,
        plan,
        device=torch.device("cpu"),
        max_epochs=5,
        steps_per_epoch=3,
        lr=0.1,
        weight_decay=0.0,
        patience=2,
        progress=False,
    )
    assert [h["val_loss"] for h in model.history] == [5.0, 1.0, 2.0, 3.0]  # stopped after 2 worse epochs
    np.testing.assert_allclose(float(plan.net.weight), plan.weights_at_val[1])  # the best (epoch 2) weights
