"""Training data that teach nothing are refused before the first step, naming the table and section.

Each model (PixNet, SpotRegressor, LinearProbe) assembles its footprints and targets through
``stpredict.train.training_targets``; a table of zeros, footprints that all lie off the image or
outside the selected tiles, and genes without variance are errors; a section that adds nothing
among several that do is a warning.
"""

from __future__ import annotations

import logging

import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
import spatialdata as sd
from scipy import sparse
from shapely.geometry import box
from spatialdata.models import Image2DModel, ShapesModel
from spatialdata.transformations import get_transformation

import stpredict as stp
from stpredict._core import table_footprints
from stpredict.model import LinearProbe, PixNet, SpotRegressor

IMAGE = "synthetic_full_image"
BINS = "square_016um"  # 572 bins of 16 µm on a 480 × 416 µm slide
FIT = {"max_epochs": 1, "steps_per_epoch": 1, "batch_size": 2}
COMMON = {"n_top_genes": 5, "progress": False, "seed": 0}
MODELS = {
    "pixnet": lambda genes: PixNet(genes, decoder_channels=8, train_mpp=4.0, tile_size=64),
    "spot_regressor": lambda genes: SpotRegressor(genes, train_mpp=4.0, hidden=16),
    "linear_probe": lambda genes: LinearProbe(genes, train_mpp=4.0, tile_size=64, alpha=1.0),
}


@pytest.fixture(scope="module")
def slide():
    return stp.datasets.synthetic(width_um=480, height_um=416, n_genes=12, seed=1, bins_um=(16,))


def _train(name, sdata, genes=None, **kwargs):
    model = MODELS[name](genes)
    fit = {} if name == "linear_probe" else FIT
    return model, model.train(sdata, tables=kwargs.pop("tables", BINS), **COMMON, **fit, **kwargs)


def _refuses(name, sdata, match, genes=None, **kwargs):
    """The model raises ``match`` and has not taken a training step."""
    model = MODELS[name](genes)
    fit = {} if name == "linear_probe" else FIT
    with pytest.raises(ValueError, match=match):
        model.train(sdata, tables=kwargs.pop("tables", BINS), **COMMON, **fit, **kwargs)
    assert model.history == [] and model.optimizer_state is None


def _section(slide, *, X=None, table=BINS, shapes=None, tiles=None):
    """A shallow copy of the slide with the counts of ``table`` replaced and a ``tiles`` element added."""
    s = sd.SpatialData(
        images={IMAGE: slide.images[IMAGE]},
        shapes={**dict(slide.shapes), **(shapes or {})},
        tables={k: v.copy() for k, v in slide.tables.items()},
    )
    if X is not None:
        t = s.tables[table]
        t.X = X(t.X.toarray().astype(np.float32))
    if tiles is not None:  # a box in image pixels (the shapes' own coordinates)
        tr = get_transformation(slide.shapes["synthetic_square_016um"], get_all=True)
        s.shapes["tiles"] = ShapesModel.parse(gpd.GeoDataFrame(geometry=[box(*tiles)]), transformations=tr)
    return s


# ---------------------------------------------------------------- a table of zeros
@pytest.mark.parametrize("name", list(MODELS))
def test_a_table_of_zeros_is_refused(slide, name):
    zeros = _section(slide, X=np.zeros_like)
    _refuses(
        name,
        zeros,
        r"Table 'square_016um' of section 'synthetic' has no counts \(all 572 × 12 values are 0\)",
    )


def test_a_sparse_table_of_zeros_is_not_called_empty(slide):
    """A sparse table storing no value holds 572 × 12 zeros: it is not 'empty (no observations or no genes)'."""
    zeros = _section(slide, X=lambda X: sparse.csr_matrix(X.shape, dtype=np.float32))
    _refuses(
        "pixnet", zeros, r"has no counts \(all 572 × 12 values are 0\).*table.X = table.layers\['counts'\]"
    )


def test_a_validation_table_of_zeros_is_refused(slide):
    zeros = _section(slide, X=np.zeros_like)
    _refuses("spot_regressor", [slide, zeros], r"'synthetic_2' \(validation\) has no counts", validation=1)


# ---------------------------------------------------------------- genes without variance
@pytest.mark.parametrize("name", list(MODELS))
def test_genes_without_variance_are_refused(slide, name):
    """Every footprint holds the same counts: the targets are constant, nothing can be learned."""
    same = _section(slide, X=lambda X: np.tile(np.arange(1, X.shape[1] + 1, dtype=np.float32), (len(X), 1)))
    _refuses(
        name,
        same,
        r"selected genes have no variance across the 572 training footprints .*table 'square_016um'",
    )


def test_genes_without_counts_in_the_training_footprints_are_refused(slide):
    silent = _section(
        slide, X=lambda X: np.where(np.arange(X.shape[1]) < 2, 0, X)
    )  # G000, G001: never counted
    _refuses(
        "pixnet",
        silent,
        r"selected genes \(2, e.g. \['G000', 'G001'\]\) have no counts",
        genes=["G000", "G001"],
    )


def test_some_constant_genes_warn(slide, caplog):
    flat = _section(slide, X=lambda X: np.where(np.arange(X.shape[1]) == 0, 0, X))  # G000: never counted
    with caplog.at_level(logging.WARNING, logger="stpredict"):
        _, model = _train("pixnet", flat, genes=["G000", "G001", "G002"])
    assert len(model.history) == 1
    assert "1 of 3 genes have one value across all 572 training footprints" in caplog.text
    assert "['G000']" in caplog.text


def test_a_single_footprint_is_refused(slide):
    one = _section(slide)
    one.tables["st_spots"] = one.tables["st_spots"][:1].copy()
    _refuses("spot_regressor", one, "only one footprint to train on", tables="st_spots")


# ---------------------------------------------------------------- footprints off the image / outside the tiles
def test_spot_regressor_refuses_footprints_off_the_image(slide):
    """PixNet and LinearProbe refused these already; the crop regressor trained on white glass."""
    far = slide.shapes["synthetic_square_016um"].copy()
    far.geometry = far.geometry.translate(100_000, 100_000)  # keeps the element's transformations
    moved = _section(slide, shapes={"synthetic_square_016um": ShapesModel.parse(far)})
    _refuses(
        "spot_regressor",
        moved,
        r"None of the 572 footprints of table 'square_016um' .* lies on image.*not aligned",
    )


@pytest.mark.parametrize("name", list(MODELS))
def test_no_footprint_in_the_tiles_is_refused(slide, name):
    nowhere = _section(slide, tiles=(-900, -900, -800, -800))
    _refuses(
        name,
        nowhere,
        r"Nothing to train on: none of the 572 footprints of table 'square_016um' of section 'synthetic' lies "
        r"in the tiles 'tiles'.*select_tiles",
        tiles="tiles",
    )


def test_a_section_without_footprints_in_the_tiles_warns_and_the_others_train(slide, caplog):
    half = _section(slide, tiles=(0, 0, 480, 832))  # the left half of the image (pixels)
    nowhere = _section(slide, tiles=(-900, -900, -800, -800))
    with caplog.at_level(logging.WARNING, logger="stpredict"):
        _, model = _train("spot_regressor", [half, nowhere], tiles="tiles")
    assert len(model.history) == 1
    assert (
        "None of the 572 footprints of table 'square_016um' of section 'synthetic_2' lies in the tiles"
        in caplog.text
    )
    with caplog.at_level(logging.WARNING, logger="stpredict"):
        _, probe = _train("linear_probe", [half, nowhere], tiles="tiles")
    assert 0 < probe.training_params["n_footprints"] < 572


# ---------------------------------------------------------------- validation sections
def _unlinked(slide):
    """A section whose table links none of its rows to a shape (their region is another element)."""
    s = _section(slide)
    t = s.tables[BINS]
    t.obs["region"] = pd.Categorical(["elsewhere"] * t.n_obs)
    return s


def test_a_validation_section_without_footprints_is_refused(slide):
    for name in ("pixnet", "spot_regressor"):
        _refuses(
            name,
            [slide, _unlinked(slide)],
            r"Validation section 'synthetic_2' has no footprint to score: table 'square_016um' of section "
            r"'synthetic_2' links no footprint",
            validation=1,
        )


def test_pixnet_refuses_a_validation_section_whose_footprints_do_not_fit_a_tile(slide):
    """Its 100 µm spots never fit a 32 px tile at 2 µm/px (64 µm): validation would silently score nothing."""
    big = _section(slide)
    big.tables[BINS] = slide.tables["st_spots"].copy()
    model = PixNet(decoder_channels=8, train_mpp=2.0, tile_size=32)
    with pytest.raises(
        ValueError, match=r"No footprint of the validation section\(s\) \['synthetic_2'\] fits in a 32 px"
    ):
        model.train([slide, big], tables=BINS, validation=1, **COMMON, **FIT)
    assert model.history == []


def test_linear_probe_grows_its_feature_tiles_to_hold_footprints_larger_than_them(slide, caplog):
    """Frozen features: a tile of twice the largest footprint holds each whole, so none is left out (was an error)."""
    model = LinearProbe(train_mpp=4.0, tile_size=16, alpha=1.0)  # 64 µm tiles, 100 µm spots
    with caplog.at_level(logging.INFO, logger="stpredict"):
        model.train(slide, tables="st_spots", **COMMON)
    assert "px tiles (not 16)" in caplog.text
    assert model.training_params["n_footprints"] == len(table_footprints(slide, "st_spots", IMAGE)[0])


# ---------------------------------------------------------------- pretraining without tissue
def _blank(slide):
    tr = get_transformation(slide.images[IMAGE]["scale0"].image, get_all=True)
    white = np.full((3, 832, 960), 255, np.uint8)
    return sd.SpatialData(
        images={"blank": Image2DModel.parse(white, dims=("c", "y", "x"), transformations=tr)}
    )


def test_pretraining_names_the_slides_without_tissue(slide, tmp_path, caplog):
    small = {
        "tile_size": 32,
        "n_tiles": 8,
        "max_epochs": 1,
        "steps_per_epoch": 1,
        "batch_size": 4,
        "progress": False,
    }
    with pytest.raises(
        ValueError,
        match=r"No tissue found to draw tiles from \(no tile on tissue in slide\(s\) \['synthetic'\]\)",
    ):
        stp.tl.pretrain_encoder(_blank(slide), tmp_path / "w.pth", **small)
    assert not (tmp_path / "w.pth").exists() and not (tmp_path / "w.pth.state.pt").exists()
    with caplog.at_level(logging.WARNING, logger="stpredict"):
        stp.tl.pretrain_encoder([slide, _blank(slide)], tmp_path / "w.pth", **small)
    assert "No tile on tissue in slide(s) ['synthetic_2']" in caplog.text  # the second, blank slide
