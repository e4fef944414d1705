"""Losses are objects the network owns: one class and one registration add a likelihood, and validation scores it."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import stpredict as stp
from stpredict.model import PixNet
from stpredict.module import LOSSES, MSEPCC, Loss, PixNetModule, PoissonPCC, get_loss, register_loss

SMALL = {"encoder": "resnet18", "decoder_channels": 16, "train_mpp": 2.0, "tile_size": 128}
FIT = {"max_epochs": 1, "steps_per_epoch": 2, "batch_size": 2, "progress": False, "seed": 0}


@pytest.fixture
def registered():
    """Register loss classes for one test only."""
    added: list[str] = []

    def add(cls):
        register_loss(cls)
        added.append(cls.name)
        return cls

    yield add
    for name in added:
        LOSSES.pop(name, None)


@pytest.fixture(scope="module")
def sections():
    kw = {"width_um": 480, "height_um": 416, "n_genes": 5, "bins_um": (8, 16), "visium_spots": False}
    return [stp.datasets.synthetic(seed=s, **kw) for s in (1, 2)]


def test_networks_own_their_loss_and_the_default_follows_the_map_space():
    assert isinstance(PixNetModule(3, decoder_channels=8).loss(), MSEPCC)
    rate = PixNetModule(3, decoder_channels=8, map_space="rate").loss(
        lam=0.25, weighting="equal", target_sum=100
    )
    assert isinstance(rate, PoissonPCC) and rate.needs_counts and rate.output == "rate"
    assert (rate.lam, rate.weighting, rate.target_sum) == (0.25, "equal", 100.0)
    with pytest.raises(ValueError, match="map_space='rate'"):
        PixNet(["a"], loss="poisson")  # the Poisson loss scores rates
    with pytest.raises(ValueError, match=r"No loss called 'nope'; registered: \['mse_pcc', 'poisson'"):
        PixNet(["a"], loss="nope")
    with pytest.raises(ValueError, match="table_weighting"):
        MSEPCC(weighting="mean")
    with pytest.raises(ValueError, match="needs a `name`"):
        register_loss(type("Nameless", (Loss,), {}))
    with pytest.raises(ValueError, match="registered already"):
        register_loss(type("Other", (Loss,), {"name": "poisson"}))
    with pytest.raises(TypeError, match="subclass"):
        register_loss(dict)
    with pytest.raises(ValueError, match="raw counts"):
        PoissonPCC()(torch.ones(4, 2), torch.zeros(4, 2))


def test_the_objects_are_the_functions_they_replace():
    from stpredict.train import batch_pcc, grouped_loss, pixnet_loss

    rng = np.random.default_rng(0)
    p = torch.from_numpy(rng.normal(size=(40, 3)).astype(np.float32))
    t = torch.from_numpy(rng.normal(size=(40, 3)).astype(np.float32))
    groups = torch.tensor([0] * 30 + [1] * 10)
    loss, parts = MSEPCC(lam=0.5)(p, t, groups=groups)  # pooled: groups are ignored
    mse = float(((p - t) ** 2).mean())
    assert float(loss) == pytest.approx(mse + 0.5 * (1 - float(batch_pcc(p, t).mean())), abs=1e-6)
    assert float(loss) == float(pixnet_loss(p, t, 0.5)[0])
    equal, parts = MSEPCC(lam=0.5, weighting="equal")(p, t, groups=groups)
    assert float(equal) == float(grouped_loss(p, t, groups, 0.5)[0]) and parts["mse"] == pytest.approx(mse)


def test_a_registered_loss_trains_validates_saves_and_loads(tmp_path, registered, sections):
    calls: list[tuple[bool, bool]] = []  # (gradients on: a training step; counts given)

    @registered
    class HuberPCC(Loss):
        """A toy likelihood: Huber on log-normalised values + λ·(1 − PCC)."""

        name = "test_huber"

        def fit(self, out, target, counts, library):
            calls.append((torch.is_grad_enabled(), counts is not None))
            return torch.nn.functional.huber_loss(out, target)

    torch.manual_seed(0)
    model = PixNet(list(sections[0].tables["square_016um"].var_names[:3]), loss="test_huber", **SMALL)
    model.train(sections, tables="square_016um", validation=1, **FIT)
    assert isinstance(model.module.loss(), HuberPCC) and model.config["loss"] == "test_huber"
    assert any(grad for grad, _ in calls), "the training steps call the model's loss"
    assert any(not grad for grad, _ in calls), "validation calls the model's loss too"
    h = model.history[-1]
    assert np.isfinite(h["train_loss"]) and np.isfinite(h["val_loss"])
    model.save(tmp_path / "m")
    back = stp.model.load(tmp_path / "m")
    assert back.config["loss"] == "test_huber" and isinstance(back.module.loss(), HuberPCC)
    assert get_loss("test_huber") is HuberPCC


def test_a_rate_map_is_validated_on_its_count_likelihood(registered, sections):
    """Validation of a rate map scores the Poisson deviance of the counts, as its training steps do."""
    calls: list[tuple[bool, bool]] = []

    @registered
    class CountingPoisson(PoissonPCC):
        name = "test_poisson"

        def fit(self, out, target, counts, library):
            calls.append((torch.is_grad_enabled(), counts is not None))
            return super().fit(out, target, counts, library)

    torch.manual_seed(0)
    genes = list(sections[0].tables["square_016um"].var_names[:3])
    model = PixNet(genes, map_space="rate", loss="test_poisson", **SMALL)
    model.train(
        sections, tables=["square_016um", "square_008um"], validation=1, table_weighting="equal", **FIT
    )
    assert {c for c in calls} == {(True, True), (False, True)}  # training and validation, both with counts
    assert np.isfinite(model.history[-1]["val_loss"])
