"""One progress style: tqdm bars named by section, for training and for the dense map's dask computation."""

from __future__ import annotations

import stpredict as stp
from stpredict.model import PixNet


def test_training_and_prediction_show_tqdm_bars_named_by_section(capsys):
    sdata = stp.datasets.synthetic(width_um=320, height_um=320, n_genes=4, seed=2, bins_um=(16,))
    model = PixNet(decoder_channels=8, train_mpp=4.0, tile_size=64)
    model.train(sdata, tables="visium_spots", n_top_genes=3, max_epochs=1, steps_per_epoch=1, progress=True)
    err = capsys.readouterr().err
    assert "training PixNet on synthetic" in err and "1/1" in err
    assert model.training_params["sections"] == ["synthetic"]
    stp.tl.predict_dense(sdata, model, bins_um=[16], progress=True)
    out, err = capsys.readouterr()
    assert "predicting synthetic" in err
    assert "% Completed" not in out + err  # not dask's own ProgressBar (which prints to stdout)


def test_progress_follows_the_setting(capsys, monkeypatch):
    sdata = stp.datasets.synthetic(width_um=320, height_um=320, n_genes=4, seed=2, bins_um=(16,))
    model = PixNet(decoder_channels=8, train_mpp=4.0, tile_size=64)
    monkeypatch.setattr(stp.settings, "progress_bar", False)
    model.train(sdata, tables="visium_spots", n_top_genes=3, max_epochs=1, steps_per_epoch=1)
    stp.tl.predict_dense(sdata, model, bins_um=[16])
    err = capsys.readouterr().err
    assert "training PixNet" not in err and "predicting synthetic" not in err
