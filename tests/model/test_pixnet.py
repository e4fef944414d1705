from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import stpredict as stp
from stpredict._core import normalize_counts
from stpredict.model import PixNet

SMALL = {"encoder": "resnet18", "decoder_channels": 16, "train_mpp": 2.0, "tile_size": 128}
FIT = {"max_epochs": 1, "steps_per_epoch": 3, "batch_size": 2, "progress": False, "seed": 0}


@pytest.fixture(scope="module")
def slide():
    return stp.datasets.synthetic(
        width_um=1200, height_um=1008, n_genes=20, seed=0, bins_um=(8, 16), visium_spots=False
    )


@pytest.fixture(scope="module")
def trained(slide):
    return PixNet(**SMALL).train(slide, tables="st_spots", n_top_genes=12, **FIT)


def _pcc(a, b):
    return np.nanmean([np.corrcoef(a[:, g], b[:, g])[0, 1] for g in range(a.shape[1])])


def test_learns_from_100um_spots_and_recovers_8um_truth(slide):
    """Known-truth recovery: train on legacy ST spots only, evaluate against the true 8 µm map."""
    cfg = {"encoder": "resnet18", "decoder_channels": 32, "train_mpp": 2.0, "tile_size": 160}
    model = PixNet(**cfg).train(
        slide,
        tables="st_spots",
        n_top_genes=20,
        max_epochs=4,
        steps_per_epoch=25,
        batch_size=4,
        seed=0,
        progress=False,
    )
    untrained = PixNet(model.genes, **cfg)
    spots_y = normalize_counts(slide.tables["st_spots"], model.recipe)
    pcc_trained = _pcc(model.predict_footprints(slide, table="st_spots"), spots_y)
    pcc_untrained = _pcc(untrained.predict_footprints(slide, table="st_spots"), spots_y)
    assert pcc_trained > pcc_untrained + 0.2
    truth8 = normalize_counts(slide.tables["square_008um"], model.recipe, layer="expected")
    pred8 = model.predict_footprints(slide, table="square_008um")
    assert _pcc(pred8, truth8) > 0.15
    mse_model = np.mean((pred8 - truth8) ** 2)
    mse_mean = np.mean((truth8 - spots_y.mean(0)) ** 2)  # predicting the training mean
    assert mse_model < mse_mean
    assert [h["epoch"] for h in model.history] == [1, 2, 3, 4]
    assert model.history[-1]["train_loss"] < model.history[0]["train_loss"]


def test_save_load_predicts_identically(tmp_path, slide, trained):
    path = trained.save(tmp_path / "ckpt")
    cfg = json.loads((path / "config.json").read_text())
    assert cfg["recipe"]["genes"] == trained.genes and cfg["recipe"]["target_sum"] == 1e4
    assert cfg["architecture"]["train_mpp"] == 2.0 and cfg["stpredict_version"] == stp.__version__
    assert cfg["training"]["lr"] == 5e-4 and cfg["training"]["lam"] == 0.5
    loaded = PixNet.load(path)
    img = slide["synthetic_full_image"]["scale0"].image.values[:, :400:4, :360:4].transpose(1, 2, 0).copy()
    np.testing.assert_array_equal(loaded.predict(img), trained.predict(img))
    np.testing.assert_array_equal(
        loaded.predict_footprints(slide, table="st_spots"),
        trained.predict_footprints(slide, table="st_spots"),
    )
    with pytest.raises(FileExistsError, match="overwrite=True"):
        trained.save(path)
    assert cfg["architecture"]["upsample"] == "resize"  # the default
    # a checkpoint written before `upsample` existed was built with the paper's transposed convolution
    deconv = PixNet(**SMALL, upsample="deconv").train(slide, tables="st_spots", n_top_genes=12, **FIT)
    path = deconv.save(tmp_path / "old")
    cfg = json.loads((path / "config.json").read_text())
    del cfg["architecture"]["upsample"]
    (path / "config.json").write_text(json.dumps(cfg))
    old = PixNet.load(path)
    assert old.config["upsample"] == "deconv"
    np.testing.assert_array_equal(old.predict(img), deconv.predict(img))


def test_corrupt_and_mismatched_checkpoints(tmp_path, trained):
    path = trained.save(tmp_path / "ckpt")
    weights = (path / "weights.pt").read_bytes()
    (path / "weights.pt").write_bytes(weights[: len(weights) // 2])
    with pytest.raises(ValueError, match="truncated or was modified"):
        PixNet.load(path)
    (path / "weights.pt").write_bytes(weights)
    cfg = json.loads((path / "config.json").read_text())
    cfg["architecture"]["decoder_channels"] = 8
    (path / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match="do not fit the architecture"):
        PixNet.load(path)
    (path / "config.json").write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        PixNet.load(path)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        PixNet.load(tmp_path / "nothing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="not an stpredict checkpoint"):
        PixNet.load(tmp_path / "empty")


def test_resume_training_from_checkpoint(tmp_path, slide, trained):
    path = trained.save(tmp_path / "ckpt")
    resumed = PixNet.load(path)
    assert resumed.optimizer_state is not None
    stp.tl.train(slide, tables="st_spots", model=resumed, **FIT)
    assert [h["epoch"] for h in resumed.history] == [1, 2]
    assert resumed.genes == trained.genes


def test_frozen_encoder_keeps_weights_and_caches_features(slide):
    model = PixNet(freeze_encoder=True, **SMALL)
    model._prepare(slide, "st_spots", None, None, 6)  # built (genes chosen), not trained
    before = {k: v.clone() for k, v in model.module.encoder.state_dict().items()}
    dec_before = model.module.head.weight.clone()
    model.train(slide, tables="st_spots", **{**FIT, "steps_per_epoch": 10})
    for k, v in model.module.encoder.state_dict().items():
        torch.testing.assert_close(v, before[k])
    assert not torch.equal(model.module.head.weight, dec_before)
    # tiles repeat on the snapped grid: encoder features were computed once and reused
    stats = model.feature_cache_stats
    assert stats["hits"] > 0 and stats["misses"] == stats["size"]


def test_multiscale_tables_and_vit_encoder(slide):
    model = PixNet(encoder="vit_tiny_patch16_224", decoder_channels=16, train_mpp=2.0, tile_size=128)
    model.train(slide, tables=["st_spots", "square_016um", "square_008um"], n_top_genes=5, **FIT)
    assert len(model.genes) == 5 and len(model.history) == 1
    assert model.predict_footprints(slide, table="square_016um").shape == (
        slide.tables["square_016um"].n_obs,
        5,
    )


def test_rate_map_trains_on_several_bin_sizes_saves_and_predicts_normalised_values(tmp_path, slide):
    model = PixNet(**SMALL, map_space="rate")
    tables = ["square_016um", "square_008um"]
    model.train(slide, tables=tables, n_top_genes=4, table_weighting="equal", **FIT)
    assert model.map_space == "rate" and model.training_params["table_weighting"] == "equal"
    assert np.isfinite(model.history[-1]["train_loss"])
    # the head starts at the mean rate (expm1 of the log-normalised targets), so predictions start on their scale
    truth = normalize_counts(slide.tables["square_016um"], model.recipe)
    pred = model.predict_footprints(slide, table="square_016um")
    assert pred.shape == truth.shape and (pred >= 0).all()
    assert abs(float(pred.mean()) - float(truth.mean())) < 2.0
    model.save(tmp_path / "rate")
    back = stp.model.load(tmp_path / "rate")
    assert back.map_space == "rate" and back.config["map_space"] == "rate"
    np.testing.assert_allclose(back.predict_footprints(slide, table="square_016um"), pred, atol=1e-5)
    with pytest.raises(ValueError, match="table_weighting"):
        PixNet(**SMALL).train(slide, tables=tables, n_top_genes=4, table_weighting="mean", **FIT)
    with pytest.raises(ValueError, match="map_space"):
        PixNet(**SMALL, map_space="counts")


def test_log_targets_on_sparse_bins_warn_and_point_to_the_rate_map(caplog):
    import logging

    small = stp.datasets.synthetic(
        width_um=320, height_um=320, n_genes=5, seed=1, bins_um=(2, 16), st_spots=False, visium_spots=False
    )
    fit = {**FIT, "max_epochs": 1, "steps_per_epoch": 1}
    with caplog.at_level(logging.WARNING, logger="stpredict"):
        PixNet(**SMALL).train(small, tables=["square_016um", "square_002um"], n_top_genes=3, **fit)
    assert "'square_002um' has a median of" in caplog.text and "map_space='rate'" in caplog.text
    assert "square_016um' has" not in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="stpredict"):
        PixNet(**SMALL, map_space="rate").train(
            small, tables=["square_016um", "square_002um"], n_top_genes=3, **fit
        )
    assert "median of" not in caplog.text


def test_deterministic_on_cpu(slide):
    a = PixNet(**SMALL).train(slide, tables="st_spots", n_top_genes=4, **FIT)
    b = PixNet(**SMALL).train(slide, tables="st_spots", n_top_genes=4, **FIT)
    for (k, va), vb in zip(a.module.state_dict().items(), b.module.state_dict().values(), strict=True):
        torch.testing.assert_close(va, vb, msg=k)


def test_validation_split_by_section_with_early_stopping(slide):
    other = stp.datasets.synthetic(
        width_um=800, height_um=800, n_genes=20, seed=5, bins_um=(16,), visium_spots=False
    )
    model = stp.tl.train(
        [slide, other],
        tables="st_spots",
        validation=1,
        n_top_genes=4,
        preset="cpu",
        max_epochs=3,
        steps_per_epoch=2,
        batch_size=2,
        patience=1,
        tile_size=128,
        decoder_channels=16,
        progress=False,
    )
    assert all("val_loss" in h and "val_pcc" in h for h in model.history)
    assert 2 <= len(model.history) <= 3
    assert model.training_params["validation"] == [1]


def test_errors(slide, trained):
    with pytest.raises(KeyError, match="Table 'nope' not found"):
        PixNet(**SMALL).train(slide, tables="nope", **FIT)
    with pytest.raises(ValueError, match="validation must index"):
        PixNet(**SMALL).train(slide, tables="st_spots", validation=3, **FIT)
    with pytest.raises(RuntimeError, match="train it"):
        PixNet(**SMALL).predict(np.zeros((32, 32, 3), np.uint8))
    with pytest.raises(ValueError, match="preset"):
        stp.tl.train(slide, tables="st_spots", preset="gpu")
    with pytest.raises(ValueError, match="uint8"):
        trained.predict(np.zeros((32, 32, 3), np.float32))


@pytest.mark.her2st
def test_tl_train_on_her2st_short_cpu_run(tmp_path, her2st_dir):
    sections = [stp.datasets.her2st(s, data_dir=her2st_dir, downsample=4) for s in ("C2", "C3")]
    model = stp.tl.train(
        sections,
        tables="spots",
        validation=1,
        n_top_genes=20,
        preset="cpu",
        train_mpp=4.0,
        tile_size=128,
        decoder_channels=16,
        max_epochs=1,
        steps_per_epoch=4,
        batch_size=2,
        progress=False,
    )
    assert len(model.genes) == 20 and "val_pcc" in model.history[0]
    pred = model.predict_footprints(sections[1], table="spots")
    assert pred.shape == (180, 20) and np.isfinite(pred).all()
    loaded = PixNet.load(model.save(tmp_path / "her2st"))
    np.testing.assert_array_equal(loaded.predict_footprints(sections[1], table="spots"), pred)


def test_progress_bar_and_device(slide, capsys):
    resolve = stp.settings.resolve_device
    assert resolve("auto").type in ("cpu", "cuda", "mps")
    assert resolve("cpu").type == "cpu" and resolve().type in ("cpu", "cuda", "mps")
    with pytest.raises(ValueError, match="device"):
        resolve("tpu")
    old = (stp.settings.n_jobs, torch.get_num_threads())
    try:
        stp.settings.n_jobs = 1  # settings own the thread count: applied to torch at once
        assert torch.get_num_threads() == 1
    finally:
        stp.settings.n_jobs = old[0]
        torch.set_num_threads(old[1])
    model = PixNet(**SMALL)
    model.train(slide, tables="st_spots", n_top_genes=3, **{**FIT, "progress": True, "device": "cpu"})
    err = capsys.readouterr().err
    assert "epoch 1" in err and "loss=" in err


def test_fractional_coverage_and_softplus_training(slide):
    model = PixNet(out_activation="softplus", **SMALL)
    model.train(slide, tables="st_spots", n_top_genes=3, coverage="fraction", **FIT)
    pred = model.predict_footprints(slide, table="st_spots", coverage="fraction")
    assert np.isfinite(pred).all() and (pred > 0).all()


def test_deprecated_tiling_arguments_and_instance_arguments(slide, trained):
    with pytest.warns(FutureWarning, match="chunk_size"):
        a = trained.predict_footprints(slide, table="st_spots", tile=128)
    np.testing.assert_array_equal(a, trained.predict_footprints(slide, table="st_spots", chunk_size=128))
    with pytest.warns(FutureWarning, match="overlap"):
        trained.predict_footprints(slide, table="st_spots", overlap=0.25)
    with pytest.raises(TypeError, match="architecture arguments of PixNet"):
        stp.tl.train(slide, tables="st_spots", model=trained, decoder_channels=4)
    with pytest.raises(TypeError, match="does not take"):
        stp.tl.train(slide, tables="st_spots", model=trained, epochs=4)


def test_context_keeps_supervised_footprints_away_from_tile_edges(slide):
    from stpredict._core import Recipe
    from stpredict.train import TileSampler, load_section

    key = "synthetic_full_image"
    sec = load_section(
        slide, image_key=key, tables=["square_016um"], recipe=Recipe(["G000"]), train_mpp=2.0, name="s"
    )
    for context in (0, 24):
        sampler = TileSampler([sec], tile_size=96, context=context, seed=0)
        for _ in range(20):
            x0, y0 = sampler._origin(sec, *sec.footprints[0].centres[5], jitter=True)
            r = sampler.tile_targets(sec, x0, y0)
            for t, row in zip(r.groups, r.index, strict=True):
                b = sec.bounds[t][row][None]
                assert (b[:, :2] >= np.array([x0, y0]) + context).all()
                assert (b[:, 2:] <= np.array([x0, y0]) + 96 - context).all()
    with pytest.raises(ValueError, match="half the tile"):
        TileSampler([sec], tile_size=96, context=48)
    model = PixNet(**SMALL).train(slide, tables="st_spots", n_top_genes=3, context=16, **FIT)
    assert model.history and np.isfinite(model.history[-1]["train_loss"])


def test_trains_on_bins_annotating_a_bin_id_raster():
    """A table linked to a bin-id raster (Labels, one pixel per bin) trains exactly as the same bins as polygons."""
    import spatialdata as sd
    from spatialdata.models import Labels2DModel, TableModel
    from spatialdata.transformations import Scale, Sequence, Translation, get_transformation

    small = stp.datasets.synthetic(
        width_um=320, height_um=320, n_genes=5, seed=1, bins_um=(16,), st_spots=False, visium_spots=False
    )
    table = small.tables["square_016um"]
    shp = small.shapes["synthetic_square_016um"].loc[table.obs["instance_id"].to_numpy()]
    r, c = table.obs["array_row"].to_numpy(), table.obs["array_col"].to_numpy()
    b = shp.geometry.bounds.to_numpy()
    side = float(b[0, 2] - b[0, 0])
    ox, oy = b[0, 0] - c[0] * side, b[0, 1] - r[0] * side
    raster = np.zeros((r.max() + 1, c.max() + 1), np.int32)
    raster[r, c] = np.arange(1, len(r) + 1)
    to_px = get_transformation(shp, get_all=True)
    lab = Labels2DModel.parse(
        raster,
        dims=("y", "x"),
        transformations={
            cs: Sequence([Scale([side, side], axes=("x", "y")), Translation([ox, oy], axes=("x", "y")), t])
            for cs, t in to_px.items()
        },
    )
    t2 = table.copy()
    t2.obs["region"] = "bins"
    t2.obs["bin_id"] = np.arange(1, len(r) + 1)
    del t2.uns["spatialdata_attrs"]
    other = sd.SpatialData(
        images={"synthetic_full_image": small["synthetic_full_image"]},
        labels={"bins": lab},
        tables={
            "square_016um": TableModel.parse(t2, region="bins", region_key="region", instance_key="bin_id")
        },
    )
    fit = {**FIT, "max_epochs": 1, "steps_per_epoch": 2}
    a = PixNet(**SMALL).train(small, tables="square_016um", n_top_genes=3, **fit)
    b_ = PixNet(**SMALL).train(other, tables="square_016um", n_top_genes=3, **fit)
    assert a.genes == b_.genes
    assert a.history[0]["train_loss"] == pytest.approx(b_.history[0]["train_loss"], rel=1e-6)
    for (n, p), (_, q) in zip(a.module.state_dict().items(), b_.module.state_dict().items(), strict=True):
        np.testing.assert_allclose(p.numpy(), q.numpy(), rtol=1e-5, atol=1e-6, err_msg=n)


def test_auto_preset_picks_the_spot_recipe_for_spots_and_the_bin_recipe_for_bins(synthetic_small):
    """On a CPU, ``preset="auto"`` reads the training footprints: spots (>= 50 µm) get ``cpu_spots``, bins ``cpu``."""
    fit = {"n_top_genes": 3, "max_epochs": 1, "steps_per_epoch": 1, "decoder_channels": 8, "progress": False}
    spots = stp.tl.train(synthetic_small, tables="st_spots", **fit)
    cpu_spots = PixNet.presets["cpu_spots"]
    assert spots.config["train_mpp"] == cpu_spots.architecture["train_mpp"] == 4.0
    assert spots.config["tile_size"] == 128 and spots.training_params["ema"] == 0.99
    assert spots.training_params["batch_size"] == 8
    bins = stp.tl.train(synthetic_small, tables="square_016um", **fit)
    assert (
        bins.config["train_mpp"] == 2.0
        and bins.config["tile_size"] == 192
        and not bins.training_params["ema"]
    )
    # the baselines have one CPU recipe; explicit arguments still win
    from stpredict.model import SpotRegressor

    assert SpotRegressor.from_preset("auto", ["A"], footprint_um=100.0)[0].config["train_mpp"] == 2.0
    assert stp.tl.train(synthetic_small, tables="st_spots", train_mpp=2.0, **fit).config["train_mpp"] == 2.0
    assert PixNet.auto_preset(None) == "cpu" and PixNet.auto_preset(55.0) == "cpu_spots"


def _grid_peak(values: np.ndarray, period: int) -> float:
    """Power at ``period`` px along x or y, over the median power at that spatial frequency in every direction."""
    g = np.asarray(values, dtype=np.float64)
    H, W = g.shape
    P = np.fft.fftshift(np.abs(np.fft.fft2((g - g.mean()) * np.outer(np.hanning(H), np.hanning(W)))) ** 2)
    cy, cx = H // 2, W // 2
    yy, xx = np.mgrid[:H, :W]
    ring = (np.abs(np.hypot((yy - cy) / H, (xx - cx) / W) - 1 / period) < 0.04) & (np.abs(yy - cy) > 2)
    ring &= np.abs(xx - cx) > 2
    return max(P[cy, cx + W // period], P[cy + H // period, cx]) / float(np.median(P[ring]))


@pytest.mark.parametrize("upsample", ["deconv", "resize"])
def test_resize_upsampling_leaves_no_grid_in_the_map(upsample):
    """The smooth truth of a synthetic slide, learnt briefly: the map has a spectral peak at the finest decoder
    stage's period (2 map pixels of the stride-2 grid = 4 px = 8 µm at 2 µm/px) with the paper's transposed
    convolution (a texture 250-580x the power around it, measured), and none with the resize."""
    slide = stp.datasets.synthetic(
        width_um=640, height_um=512, n_genes=6, seed=3, bins_um=(16,), st_spots=False
    )
    model = PixNet(decoder_channels=16, train_mpp=2.0, tile_size=128, upsample=upsample, pretrained=False)
    model.train(
        slide,
        tables="square_016um",
        n_top_genes=4,
        max_epochs=1,
        steps_per_epoch=10,
        batch_size=2,
        progress=False,
    )
    stp.tl.predict_dense(slide, model, bins_um=(), progress=False)
    dense = slide.images["pixnet_dense"]["scale0"]["image"].values[:, 64:192, 96:224]  # 256 µm inside tissue
    peaks = [_grid_peak(g, 4) for g in dense]
    if upsample == "deconv":
        assert min(peaks) > 30, peaks  # the artefact the test exists to catch
    else:
        assert max(peaks) < 10, peaks
