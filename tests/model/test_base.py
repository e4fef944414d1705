"""What every model shares: registry, presets, argument split, rebuild from constructor arguments."""

from __future__ import annotations

import json
from typing import get_args

import pytest

import stpredict as stp
from stpredict._types import PresetName
from stpredict.model import LinearProbe, PixNet, Preset, SpotRegressor, model_class


def test_registry_and_typed_presets_in_one_place():
    assert model_class("pixnet") is PixNet and model_class("spot_regressor") is SpotRegressor
    assert model_class("linear_probe") is LinearProbe
    with pytest.raises(ValueError, match="model must be one of"):
        model_class("stnet")
    for cls in (PixNet, SpotRegressor, LinearProbe):
        assert {"cpu", "paper"} <= set(cls.presets) <= set(get_args(PresetName)) - {"auto"}  # typed
        for p in cls.presets.values():
            assert isinstance(p, Preset)
            assert set(p.architecture) <= cls.architecture_args()  # presets name real arguments
            assert set(p.training) <= cls.training_args()
    assert stp.model.PRESETS["cpu"] == {
        "decoder_channels": 64,
        "train_mpp": 2.0,
        "tile_size": 192,
        "batch_size": 4,
    }
    assert "cpu_spots" in PixNet.presets  # the recipe "auto" picks for spots on a CPU


def test_arguments_split_into_architecture_and_training():
    arch, fit = PixNet.split_kwargs({"decoder_channels": 8, "max_epochs": 2, "coverage": "fraction"})
    assert arch == {"decoder_channels": 8} and fit == {"max_epochs": 2, "coverage": "fraction"}
    with pytest.raises(TypeError, match=r"does not take \['nope'\].*architecture arguments"):
        PixNet.split_kwargs({"nope": 1})
    assert "coverage" in PixNet.training_args() and "coverage" not in SpotRegressor.training_args()
    assert "max_epochs" not in LinearProbe.training_args()  # one ridge fit
    model, fit = LinearProbe.from_preset("cpu", ["A", "B"], tile_size=96, seed=3)
    assert model.config["tile_size"] == 96 and model.train_mpp == 2.0 and fit == {"seed": 3}
    with pytest.raises(ValueError, match="preset must be"):
        PixNet.from_preset("gpu")


def test_choices_are_checked_with_one_message():
    with pytest.raises(ValueError, match="out_activation must be one of 'identity', 'softplus', 'relu'"):
        PixNet(out_activation="tanh")
    with pytest.raises(ValueError, match="coverage must be one of"):
        PixNet(["A"], decoder_channels=8).train(None, tables="x", coverage="area")
    with pytest.raises(TypeError, match=r"unexpected argument\(s\) \['coverage'\]"):
        SpotRegressor(["A"]).train(None, tables="x", coverage="center")
    with pytest.raises(ValueError, match="train_mpp must be positive"):
        SpotRegressor(train_mpp=0)


def test_checkpoint_stores_constructor_arguments_and_rebuilds(tmp_path):
    weights = tmp_path / "enc.pth"
    import timm
    import torch

    torch.save(timm.create_model("resnet18").state_dict(), weights)
    model = PixNet(
        ["A", "B"], decoder_channels=(16, 8, 8, 8), encoder_weights=weights, train_mpp=2.0, tile_size=64
    )
    path = model.save(tmp_path / "ckpt")
    cfg = json.loads((path / "config.json").read_text())
    assert cfg["architecture"] == {
        "encoder": "resnet18",
        "pretrained": False,
        "encoder_weights": str(weights),
        "encoder_kwargs": None,
        "decoder_channels": [16, 8, 8, 8],
        "expansion": 2,
        "out_activation": "identity",
        "map_space": "log",
        "loss": None,
        "upsample": "resize",
        "freeze_encoder": False,
        "train_mpp": 2.0,
        "tile_size": 64,
    }
    weights.unlink()  # the checkpoint has the weights: loading needs no encoder file
    loaded = stp.model.load(path)
    assert isinstance(loaded, PixNet) and loaded.config == model.config and loaded.genes == ["A", "B"]
    for k, v in model.module.state_dict().items():
        assert torch.equal(v, loaded.module.state_dict()[k])


def test_model_exports_the_models_and_points_moved_names_home():
    import stpredict.module
    import stpredict.train

    for name, home in (("PixNetModule", stpredict.module), ("pixnet_loss", stpredict.train)):
        assert name not in stp.model.__all__
        with pytest.warns(FutureWarning, match=f"use {home.__name__}.{name}"):
            assert getattr(stp.model, name) is getattr(home, name)
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        stp.model.nope  # noqa: B018
