from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import stpredict as stp
from stpredict._core import Footprints, footprint_matrix, normalize_counts
from stpredict.model import LinearProbe, PixNet, SpotRegressor
from stpredict.module import LinearProbeModule, aggregate_map, to_torch_sparse
from stpredict.train import Cropper

QUICK = {"progress": False, "seed": 0}


@pytest.fixture(scope="module")
def slide():
    return stp.datasets.synthetic(width_um=800, height_um=640, n_genes=12, seed=0, bins_um=(8, 16))


@pytest.fixture(scope="module")
def spot(slide):
    return SpotRegressor(train_mpp=2.0).train(
        slide, tables="visium_spots", n_top_genes=10, max_epochs=3, steps_per_epoch=12, batch_size=16, **QUICK
    )


@pytest.fixture(scope="module")
def probe(slide):
    return LinearProbe(train_mpp=2.0, tile_size=128).train(
        slide, tables="visium_spots", n_top_genes=10, **QUICK
    )


def _pcc(a, b):
    return np.nanmean([np.corrcoef(a[:, g], b[:, g])[0, 1] for g in range(a.shape[1])])


# ---------------------------------------------------------------- SpotRegressor
def test_spot_regressor_learns_its_training_spots(slide, spot):
    assert spot.config["input_size"] == round(1.5 * 55 / 2.0)  # 1.5 × the 55 µm diameter at 2 µm/px
    y = normalize_counts(slide.tables["visium_spots"], spot.recipe)
    untrained = SpotRegressor(spot.genes, train_mpp=2.0, input_size=spot.config["input_size"])
    torch.manual_seed(0)
    pred = spot.predict_footprints(slide, table="visium_spots")
    assert pred.shape == y.shape and np.isfinite(pred).all()
    assert _pcc(pred, y) > _pcc(untrained.predict_footprints(slide, table="visium_spots"), y) + 0.1
    assert np.mean((pred - y) ** 2) < np.mean((y - y.mean(0)) ** 2) * 1.5
    assert [h["epoch"] for h in spot.history] == [1, 2, 3]


def test_spot_regressor_crops_each_footprint_size(slide, spot, monkeypatch):
    """Spot-level prediction at other sizes crops 1.5 × that footprint, resampled to the input size."""
    seen = []
    orig = Cropper.crop

    def record(self, cx, cy, window, size):
        seen.append((window, size))
        return orig(self, cx, cy, window, size)

    monkeypatch.setattr(Cropper, "crop", record)
    out = spot.predict_shapes(slide, "synthetic_square_016um")
    mpp = stp.pp.get_mpp(slide, "synthetic_full_image")
    windows = np.array([w for w, _ in seen]) * mpp
    np.testing.assert_allclose(windows, 1.5 * 16, rtol=1e-6)
    assert {s for _, s in seen} == {spot.config["input_size"]}
    assert out.shape == (len(slide.shapes["synthetic_square_016um"]), len(spot.genes))


def test_cropper_reads_the_right_pixels(slide):
    c = Cropper(slide, "synthetic_full_image")
    img = slide["synthetic_full_image"]["scale0"].image.values.transpose(1, 2, 0)
    np.testing.assert_array_equal(c.crop(140, 230, 40, 40), img[210:250, 120:160])
    edge = c.crop(5, 5, 40, 40)
    assert (edge[:15, :15] == 255).all()  # outside the image: white glass
    np.testing.assert_array_equal(edge[15:, 15:], img[:25, :25])


def test_spot_regressor_save_load_and_generic_load(tmp_path, slide, spot):
    path = spot.save(tmp_path / "spot")
    cfg = json.loads((path / "config.json").read_text())
    assert cfg["format"] == "stpredict-spot-regressor" and cfg["architecture"]["input_size"] == 41
    assert cfg["training"]["batch_size"] == 16 and cfg["recipe"]["genes"] == spot.genes
    loaded = stp.model.load(path)
    assert isinstance(loaded, SpotRegressor)
    np.testing.assert_array_equal(
        loaded.predict_footprints(slide, table="visium_spots"),
        spot.predict_footprints(slide, table="visium_spots"),
    )
    crops = np.stack([Cropper(slide, "synthetic_full_image").crop(400, 400, 82, 60)] * 2)
    np.testing.assert_allclose(loaded.predict(crops), spot.predict(crops), atol=1e-6)
    with pytest.raises(ValueError, match="not a PixNet checkpoint"):
        PixNet.load(path)


@pytest.mark.parametrize("local_weights", [False, True])
def test_same_encoder_initialisation_across_models(tmp_path, slide, local_weights):
    """Same seed (random init) or the same local weights file: the three models start from one encoder."""
    import timm

    extra = {}
    if local_weights:
        torch.manual_seed(123)
        ref_model = timm.create_model("resnet18", pretrained=False)
        torch.save(ref_model.state_dict(), tmp_path / "resnet18.pth")
        extra = {"encoder_weights": tmp_path / "resnet18.pth"}
    kw = {"preset": "cpu", "n_top_genes": 5, **QUICK, **extra}

    def built(name):  # built as training builds it (seeded), not trained
        m, _ = stp.model.model_class(name).from_preset("cpu", None, **extra)
        torch.manual_seed(QUICK["seed"])
        m._prepare(slide, "st_spots", None, None, 5)
        return m

    pix, spot = built("pixnet"), built("spot_regressor")
    with pytest.raises(ValueError, match="max_epochs"):  # zero epochs would return an untrained model
        stp.tl.train(slide, tables="st_spots", max_epochs=0, **kw)
    probe = stp.tl.train(slide, tables="st_spots", model="linear_probe", **kw)
    ref = pix.module.encoder.state_dict()
    for other in (spot.module.encoder.state_dict(), probe.module.encoder.state_dict()):
        assert ref.keys() == other.keys()
        assert all(torch.equal(ref[k], other[k]) for k in ref)
    if local_weights:
        torch.testing.assert_close(pix.module.encoder.body.conv1.weight, ref_model.conv1.weight)
    assert spot.train_mpp == probe.train_mpp == pix.train_mpp == 2.0
    assert spot.default_batch_size == 32


def test_tl_train_and_predict_errors(slide, spot):
    with pytest.raises(ValueError, match="model must be one of"):
        stp.tl.train(slide, tables="st_spots", model="stnet")
    with pytest.raises(TypeError, match=r"does not take \['decoder_channels'\]"):
        stp.tl.train(slide, tables="st_spots", model="spot_regressor", decoder_channels=8)
    with pytest.raises(TypeError, match="predict_shapes"):
        stp.tl.predict_dense(slide, spot)
    with pytest.raises(RuntimeError, match="train it"):
        SpotRegressor().predict_shapes(slide, "synthetic_visium_spots")
    with pytest.raises(ValueError, match="crop_factor"):
        SpotRegressor(crop_factor=0)


# ---------------------------------------------------------------- LinearProbe
def test_probe_map_mean_equals_ridge_on_pooled_features():
    """The dense map averaged over a footprint is the linear map of its mean-pooled features."""
    torch.manual_seed(0)
    net = LinearProbeModule(5, encoder="resnet18").eval()
    with torch.no_grad():
        net.weight.normal_(0, 0.1)
        net.bias.normal_()
    img = torch.randint(0, 255, (1, 3, 96, 96), dtype=torch.uint8)
    fp = Footprints(np.array([[30.0, 40.0], [60.5, 50.0]]), radii=np.array([12.0, 20.0]))
    A, _ = footprint_matrix(fp, (96, 96))
    At = to_torch_sparse(A)
    with torch.no_grad():
        via_map = aggregate_map(net(img), At)
        via_features = net.pooled(img, At) @ net.weight.T + net.bias
    torch.testing.assert_close(via_map, via_features, atol=1e-4, rtol=1e-4)


def test_probe_fits_and_predicts_densely(slide, probe):
    y = normalize_counts(slide.tables["visium_spots"], probe.recipe)
    p = probe.training_params
    assert p["alpha"] in probe.config["alphas"] and len(p["cv_scores"]) == len(probe.config["alphas"])
    assert p["n_features"] == 64 + 64 + 128 + 256 + 512  # every resnet18 level
    pred = probe.predict_footprints(slide, table="visium_spots")
    assert np.mean((pred - y) ** 2) < np.mean((y - y.mean(0)) ** 2)
    # regression: near-constant (dead) training features once got huge weights, so predictions from tiles
    # other than the training ones exploded (MSE > 100); now every tiling stays near the fit
    for chunk in (64, 192, 512):
        p = probe.predict_footprints(slide, table="visium_spots", chunk_size=chunk)
        assert np.mean((p - y) ** 2) < np.mean((y - y.mean(0)) ** 2)
    names = stp.tl.predict_dense(
        slide, probe, bins_um=(16,), shapes=["synthetic_visium_spots"], progress=False
    )
    assert names[0] == "linear_probe_dense"
    dense_spots = slide.tables["linear_probe_synthetic_visium_spots"].X
    # one dense engine: the whole-slide map at train_mpp gives exactly the per-footprint predictions
    np.testing.assert_allclose(dense_spots, pred, rtol=1e-5, atol=1e-5)


def test_probe_cross_validates_across_sections_and_roundtrips(tmp_path):
    a = stp.datasets.synthetic(width_um=480, height_um=416, n_genes=8, seed=1, bins_um=(16,))
    b = stp.datasets.synthetic(width_um=480, height_um=416, n_genes=8, seed=2, bins_um=(16,))
    probe = stp.tl.train(
        [a, b], tables="square_016um", model="linear_probe", preset="cpu", tile_size=96, **QUICK
    )
    assert (
        probe.training_params["n_footprints"] > 0
        and probe.history[-1]["alpha"] == probe.training_params["alpha"]
    )
    fixed = LinearProbe(train_mpp=2.0, tile_size=96, alpha=10.0).train(
        a, tables="square_016um", validation=None, **QUICK
    )
    assert fixed.training_params["alpha"] == 10.0 and fixed.training_params["cv_scores"] is None
    loaded = stp.model.load(probe.save(tmp_path / "probe"))
    assert isinstance(loaded, LinearProbe)
    np.testing.assert_allclose(
        loaded.predict_shapes(a, "synthetic_square_016um"),
        probe.predict_shapes(a, "synthetic_square_016um"),
        atol=1e-6,
    )
    val = LinearProbe(train_mpp=2.0, tile_size=96).train([a, b], tables="square_016um", validation=1, **QUICK)
    assert "val_pcc" in val.history[-1]


# ---------------------------------------------------------------- tl.predict_shapes + tl.evaluate
def test_predict_shapes_tables_compare_models(slide, spot, probe):
    names = []
    for m in (spot, probe):  # the probe's table may exist from predict_dense: replace it on purpose
        names += stp.tl.predict_shapes(slide, m, shapes="synthetic_visium_spots", overwrite=True)
    assert names == ["spot_regressor_synthetic_visium_spots", "linear_probe_synthetic_visium_spots"]
    t = slide.tables["spot_regressor_synthetic_visium_spots"]
    assert t.uns["spatialdata_attrs"]["region"] == "synthetic_visium_spots"
    assert t.uns["stpredict"]["model"] == "SpotRegressor" and list(t.var_names) == spot.genes
    np.testing.assert_allclose(t.X, spot.predict_footprints(slide, table="visium_spots"), atol=1e-6)
    for name in ("spot_regressor_synthetic_visium_spots", "linear_probe_synthetic_visium_spots"):
        _, summary = stp.tl.evaluate(slide, pred=name, truth="visium_spots", layer="expected", ari=False)
        assert np.isfinite(summary.loc["synthetic", "PCC@M"]) and np.isfinite(
            summary.loc["synthetic", "SSIM"]
        )
    with pytest.raises(ValueError, match="overwrite=True"):
        stp.tl.predict_shapes(slide, spot, shapes="synthetic_visium_spots")
    with pytest.raises(KeyError, match="not found"):
        stp.tl.predict_shapes(slide, spot, shapes="nope")
    with pytest.raises(TypeError, match="stpredict model"):
        stp.tl.predict_shapes(slide, object(), shapes="synthetic_visium_spots")


def test_resumed_training_keeps_its_settings_and_records_ema(slide, tmp_path):
    settings = {
        "batch_size": 8,
        "lr": 1e-3,
        "weight_decay": 0.0,
        "lam": 0.25,
        "augment": False,
        "ema": 0.9,
        "lr_schedule": "cosine",
    }
    model = SpotRegressor(train_mpp=2.0).train(
        slide, tables="visium_spots", n_top_genes=5, max_epochs=1, steps_per_epoch=2, **settings, **QUICK
    )
    assert {k: model.training_params[k] for k in settings} == settings
    model.train(slide, tables="visium_spots", max_epochs=1, steps_per_epoch=1, **QUICK)
    # not the defaults (batch 32, lr 5e-4, wd 1e-4, λ 0.5, augmentation on, no EMA)
    assert {k: model.training_params[k] for k in settings} == settings
    assert [h["epoch"] for h in model.history] == [1, 2]
    # a checkpoint carries them too; a call changes what it names, and ema=0 turns the average off
    loaded = stp.model.load(model.save(tmp_path / "ckpt"))
    loaded.train(slide, tables="visium_spots", max_epochs=1, steps_per_epoch=1, lr=2e-4, ema=0, **QUICK)
    assert {k: loaded.training_params[k] for k in settings} == {**settings, "lr": 2e-4, "ema": None}
    assert [h["epoch"] for h in loaded.history] == [1, 2, 3]
    fresh = SpotRegressor(train_mpp=2.0).train(
        slide, tables="visium_spots", n_top_genes=5, max_epochs=1, steps_per_epoch=1, **QUICK
    )
    assert {k: fresh.training_params[k] for k in settings} == {
        "batch_size": 32,
        "lr": 5e-4,
        "weight_decay": 1e-4,
        "lam": 0.5,
        "augment": True,
        "ema": None,
        "lr_schedule": "constant",
    }
    with pytest.raises(ValueError, match="ema"):
        model.train(slide, tables="visium_spots", max_epochs=1, steps_per_epoch=1, ema=1.0, **QUICK)
    with pytest.raises(TypeError, match="closed-form"):
        stp.tl.train(slide, tables="visium_spots", model="linear_probe", ema=0.99)
