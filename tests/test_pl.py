from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np
import pytest

import stpredict as stp
from stpredict.model import PixNet


@pytest.fixture(scope="module")
def predicted():
    slide = stp.datasets.synthetic(
        width_um=640, height_um=512, n_genes=6, seed=3, bins_um=(16,), st_spots=False
    )
    model = PixNet(
        list(slide.tables["square_016um"].var_names[:4]), decoder_channels=16, train_mpp=2.0, tile_size=128
    )
    stp.tl.predict_dense(slide, model, bins_um=(16,), shapes=["synthetic_square_016um"], progress=False)
    return slide, model


def test_expression_map_draws_one_gene_in_microns(predicted):
    slide, model = predicted
    gene = model.genes[1]
    ax = stp.pl.expression_map(slide, gene, show=False)
    images = ax.get_images()
    assert len(images) == 2  # H&E + map
    np.testing.assert_allclose(images[1].get_extent(), (0, 640, 512, 0))
    assert images[1].get_array().shape == (256, 320)  # one channel at 2 µm
    assert gene in ax.get_title() and "µm" in ax.get_xlabel()
    assert len(ax.figure.axes) == 2  # map axes + colour bar
    assert any("µm" in t.get_text() for t in ax.texts)  # scale bar label
    plt.close(ax.figure)
    fig = stp.pl.expression_map(slide, gene, crop=(100, 50, 300, 250), return_fig=True)
    ax = fig.axes[0]
    assert ax.get_xlim() == (100, 300) and ax.get_ylim() == (250, 50)
    plt.close(fig)
    with pytest.raises(KeyError, match="not in the map"):
        stp.pl.expression_map(slide, "NOPE", show=False)
    with pytest.raises(KeyError, match="predict_dense"):
        stp.pl.expression_map(slide, gene, key="other", show=False)


def test_compare_and_gene_scores(predicted):
    slide, model = predicted
    gene = model.genes[0]
    axes = stp.pl.compare(
        slide, gene, pred="pixnet_synthetic_square_016um", truth="square_016um", layer="expected", show=False
    )
    assert len(axes) == 2 and "measured" in axes[0].get_title() and "predicted" in axes[1].get_title()
    a, b = (ax.collections[0] for ax in axes)
    assert a.get_clim() == b.get_clim()  # same colour scale
    assert len(a.get_offsets()) == slide.tables["square_016um"].n_obs
    plt.close(axes[0].figure)
    result = stp.tl.evaluate(
        slide, pred="pixnet_synthetic_square_016um", truth="square_016um", layer="expected", ari=False
    )
    ax = stp.pl.gene_scores(result, show=False)
    labels = [line.get_label() for line in ax.get_lines()]
    assert [lab.split(" =")[0] for lab in labels] == ["PCC@F", "PCC@S", "PCC@M"]
    assert "4 genes" in ax.get_title()
    plt.close(ax.figure)


def test_colour_limits_are_robust_percentiles_over_tissue_and_plots_save(predicted, tmp_path):
    """Default limits: the 1st/99th percentiles over tissue (one hot pixel does not flatten the map); numbers,
    ``"pN"`` and ``None`` as in scanpy/squidpy; ``save=`` writes the file a script needs."""
    slide, model = predicted
    gene = model.genes[1]
    dense = slide.images["pixnet_dense"]
    arr = dense["scale0"]["image"] if hasattr(dense, "keys") else dense
    c = [str(v) for v in arr.coords["c"].values].index(gene)
    mask = stp.pp.tissue_mask(slide, "synthetic_full_image", arr.shape[1:])
    values = np.asarray(arr.data[c])
    ys, xs = np.nonzero(mask)
    spiked = values.copy()
    spiked[ys[0], xs[0]] = values.max() + 100.0  # one absurd pixel on tissue
    arr.data = arr.data.copy()
    if hasattr(arr.data, "compute"):
        arr.data = arr.data.compute()
    arr.data[c] = spiked
    ax = stp.pl.expression_map(slide, gene, show=False, crop=None)
    lo, hi = ax.get_images()[1].get_clim()
    tissue = spiked[mask]
    np.testing.assert_allclose((lo, hi), np.percentile(tissue, [1, 99]), rtol=1e-5)
    assert hi < values.max() + 1  # the spike does not set the top of the scale
    plt.close(ax.figure)
    ax = stp.pl.expression_map(slide, gene, vmin=None, vmax=None, show=False, crop=None)
    assert ax.get_images()[1].get_clim()[1] == pytest.approx(spiked[mask].max(), rel=1e-5)
    plt.close(ax.figure)
    low = float(np.percentile(tissue, 10))
    ax = stp.pl.expression_map(slide, gene, vmin=low, vmax="p50", show=False)
    assert ax.get_images()[1].get_clim() == pytest.approx((low, float(np.percentile(tissue, 50))), rel=1e-4)
    plt.close(ax.figure)
    with pytest.raises(ValueError, match=r"`vmax` must be a number, a percentile such as 'p1'"):
        stp.pl.expression_map(slide, gene, vmax="high", show=False)
    arr.data[c] = values
    out = stp.pl.expression_map(slide, gene, save=tmp_path / "figs" / "map", show=False)
    assert (tmp_path / "figs" / "map.png").stat().st_size > 10_000 and out is not None
    plt.close("all")
    axes = stp.pl.compare(
        slide,
        gene,
        pred="pixnet_synthetic_square_016um",
        truth="square_016um",
        layer="expected",
        show=False,
        save=tmp_path / "compare.pdf",
    )
    assert (tmp_path / "compare.pdf").is_file()
    assert axes[0].get_xlabel() == "x (µm)" and axes[0].get_ylabel() == "y (µm)"  # micron axes, not pixels
    xy = np.asarray(axes[0].collections[0].get_offsets())
    assert xy[:, 0].max() <= 640 + 16  # µm, on the 640 µm slide
    plt.close("all")
