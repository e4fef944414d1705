"""The one training loop, driven by a minimal plan: records, validation, early stopping, resume."""

from __future__ import annotations

import itertools

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


class _Recording(_Plan):
    """Records the raw weight after every optimiser step (read at the start of the next step)."""

    def __init__(self, val_losses=None):
        super().__init__(val_losses)
        self.raw = []

    def training_step(self):
        self.raw.append(float(self.net.weight))
        return super().training_step()


def _fit(model, plan, **kw):
    args = dict(
        device=torch.device("cpu"), max_epochs=2, steps_per_epoch=4, lr=0.1, weight_decay=0.0, patience=None
    )
    fit(model, plan, progress=False, **{**args, **kw})


def test_ema_ends_with_the_average_of_the_steps_and_validates_it():
    model, plan = _Model(), _Recording(val_losses=[1.0, 2.0])
    _fit(model, plan, ema=0.9)
    # plan.raw[t] is the weight after step t (raw[0] the initial one); epoch 1 validated the average of
    # steps 1–4, computed here by hand with the warm-up min(0.9, (1 + t) / (10 + t))
    avg = plan.raw[0]
    for t in range(1, 5):
        d = min(0.9, (1 + t) / (10 + t))
        avg = d * avg + (1 - d) * plan.raw[t]
    np.testing.assert_allclose(plan.weights_at_val[0], avg, rtol=1e-6)
    assert abs(plan.weights_at_val[0] - plan.raw[4]) > 1e-2  # the average, not the last step's weight
    # training went on from the raw weights (the swap was undone), and the network ends with the average
    # that the last validation scored
    assert plan.raw[5] > plan.raw[4] > plan.weights_at_val[0]
    np.testing.assert_allclose(float(plan.net.weight.detach()), plan.weights_at_val[1], rtol=1e-6)


def test_ema_warm_up_counts_on_when_resumed(monkeypatch):
    from stpredict.train import _loop

    starts = []
    init = _loop._Average.__init__

    def spy(self, params, decay, steps=0):
        starts.append(steps)
        init(self, params, decay, steps)

    monkeypatch.setattr(_loop._Average, "__init__", spy)
    model, plan = _Model(), _Plan()
    _fit(model, plan, ema=0.9)
    _fit(model, plan, ema=0.9)
    assert starts == [0, 8]


def test_ema_with_early_stopping_keeps_the_best_average():
    model, plan = _Model(), _Plan(val_losses=[1.0, 5.0, 6.0])
    _fit(model, plan, ema=0.5, max_epochs=3, patience=1)
    assert len(model.history) == 2
    np.testing.assert_allclose(float(plan.net.weight), plan.weights_at_val[0])


def test_ema_is_checked():
    import pytest

    with pytest.raises(ValueError, match="ema"):
        _fit(_Model(), _Plan(), ema=1.5)
    with pytest.raises(ValueError, match="ema"):
        _fit(_Model(), _Plan(), ema=-0.1)
    from stpredict.train._loop import check_ema

    assert check_ema(0) is None and check_ema(None) is None and check_ema(0.99) == 0.99


def test_resumed_optimiser_takes_this_calls_lr_and_weight_decay():
    model, plan = _Model(), _Plan()
    _fit(model, plan, lr=0.1, weight_decay=0.0)
    _fit(model, plan, lr=0.01, weight_decay=1e-3)
    group = model.optimizer_state["param_groups"][0]
    assert group["lr"] == 0.01 and group["weight_decay"] == 1e-3  # not the saved 0.1 / 0.0
    assert model.optimizer_state["state"][0]["step"] == 16  # Adam's state still went on


def test_cosine_schedule_decays_from_lr_to_a_hundredth(monkeypatch):
    lrs = []
    real_step = torch.optim.Adam.step

    def step(self, *a, **k):
        lrs.append(self.param_groups[0]["lr"])
        return real_step(self, *a, **k)

    monkeypatch.setattr(torch.optim.Adam, "step", step)
    model = _Model()
    _fit(model, _Plan(), lr=0.1, lr_schedule="cosine", max_epochs=2, steps_per_epoch=5)
    assert len(lrs) == 10
    np.testing.assert_allclose(lrs[0], 0.1)
    np.testing.assert_allclose(lrs[-1], 0.001)
    assert all(a > b for a, b in itertools.pairwise(lrs))  # strictly decreasing
    np.testing.assert_allclose(lrs[4] + lrs[5], 0.1 + 0.001, rtol=1e-6)  # symmetric about the middle
    lrs.clear()
    _fit(model, _Plan(), lr=0.1, max_epochs=1, steps_per_epoch=3)  # constant (the default): resumed at lr
    assert lrs == [0.1, 0.1, 0.1]
    import pytest

    with pytest.raises(ValueError, match="lr_schedule"):
        _fit(_Model(), _Plan(), lr_schedule="linear")
