"""predict_dense output goes straight into scanpy, squidpy and spatialdata-plot, with no conversion."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np
import pytest
import scanpy as sc
import spatialdata as sd
import squidpy as sq

import stpredict as stp
from stpredict.model import PixNet


def _downstream(sdata: sd.SpatialData, cs: str, gene: str) -> None:
    t8 = sdata.tables["pixnet_square_008um"]
    sc.pp.neighbors(t8, n_neighbors=8, use_rep="X")
    sc.tl.leiden(t8, resolution=0.5, flavor="igraph", n_iterations=2, random_state=0)
    assert t8.obs["leiden"].nunique() >= 1 and len(t8.obs["leiden"]) == t8.n_obs

    t16 = sdata.tables["pixnet_square_016um"]
    sq.gr.spatial_neighbors_grid(t16, n_neighs=4)
    # grid neighbours of square bins: at most 4 each, and most interior bins have exactly 4
    deg = np.asarray(t16.obsp["spatial_connectivities"].sum(1)).ravel()
    assert deg.max() <= 4 and np.median(deg) == 4
    sq.gr.spatial_autocorr(t16, mode="moran", n_perms=None, show_progress_bar=False)
    moran = t16.uns["moranI"]
    assert set(moran.index) == set(t16.var_names) and np.isfinite(moran["I"]).all()

    import spatialdata_plot  # noqa: F401  (registers the .pl accessor)

    fig, ax = plt.subplots()
    sdata.pl.render_images("pixnet_dense", channel=gene).pl.show(ax=ax, coordinate_systems=cs)
    assert len(ax.get_images()) >= 1
    plt.close(fig)


def test_synthetic_predictions_feed_scanpy_squidpy_and_plot():
    slide = stp.datasets.synthetic(
        width_um=640, height_um=512, n_genes=6, seed=4, bins_um=(16,), visium_spots=False
    )
    model = PixNet(decoder_channels=16, train_mpp=2.0, tile_size=128)
    model.train(
        slide, tables="st_spots", n_top_genes=6, max_epochs=1, steps_per_epoch=3, batch_size=2, progress=False
    )
    stp.tl.predict_dense(slide, model, bins_um=(8, 16), progress=False)
    _downstream(slide, "synthetic", model.genes[0])


@pytest.mark.her2st
def test_her2st_predictions_feed_scanpy_squidpy_and_plot(her2st_dir):
    sdata = stp.datasets.her2st("C3", data_dir=her2st_dir, downsample=4)
    genes = list(sdata.tables["spots"].var_names[:5])
    model = PixNet(
        genes, decoder_channels=16, train_mpp=4.0, tile_size=128
    )  # untrained: wiring, not accuracy
    names = stp.tl.predict_dense(
        sdata, model, out_mpp=4.0, bins_um=(8, 16), shapes=["C3_spots"], progress=False
    )
    assert "pixnet_C3_spots" in names
    assert np.isfinite(sdata.tables["pixnet_C3_spots"].X).all()
    _downstream(sdata, "C3", genes[0])
