from __future__ import annotations

import re
import shutil
import subprocess
import sys

import pytest
import spatialdata as sd

import stpredict as stp
from stpredict._cli import main

DEMO = ["--width-um", "480", "--height-um", "416", "--epochs", "1", "--steps", "2", "--genes", "5"]


def _demo(out, *extra):
    return main(["-q", "demo", "--out", str(out), *DEMO, *extra])


def test_demo_trains_predicts_and_writes_zarr_model_and_png(tmp_path, capsys):
    assert _demo(tmp_path) == 0
    out = capsys.readouterr().out
    assert "synthetic_full_image" in out and "0.5000 µm/px" in out
    assert "per-gene PCC of predicted vs true 8 µm bins" in out
    sdata = sd.read_zarr(tmp_path / "synthetic.zarr")
    assert {"square_008um", "pixnet_square_008um", "pixnet_square_002um"} <= set(sdata.tables)
    assert "pixnet_dense" in sdata.images
    pngs = list(tmp_path.glob("pixnet_*.png"))
    assert len(pngs) == 1 and pngs[0].stat().st_size > 10_000
    assert (tmp_path / "pixnet_model" / "config.json").is_file()
    # refuses to overwrite unless asked
    assert _demo(tmp_path) == 2


def test_train_and_predict_round_trip_a_zarr(tmp_path, capsys):
    path = tmp_path / "s.zarr"
    stp.datasets.synthetic(width_um=480, height_um=416, n_genes=5, seed=1, bins_um=(16,)).write(path)
    model_dir = tmp_path / "model"
    argv = ["-q", "train", str(path), "--tables", "st_spots", "--out", str(model_dir), "--preset", "cpu"]
    with pytest.warns(FutureWarning, match="--method"):  # the old spelling of --model still works
        assert main([*argv, "--epochs", "1", "--steps", "2", "--n-top-genes", "4", "--method", "pixnet"]) == 0
    argv = ["-q", "predict", str(path), "--model", str(model_dir), "--bins", "16"]
    assert main([*argv, "--shapes", "synthetic_visium_spots"]) == 0
    back = sd.read_zarr(path)
    assert {"pixnet_square_016um", "pixnet_synthetic_visium_spots"} <= set(back.tables)
    assert back.tables["pixnet_square_016um"].n_vars == 4
    assert main(argv) == 1  # a data error: one line, no traceback
    err = capsys.readouterr().err
    assert "`--overwrite`" in err and "overwrite=True" not in err  # the CLI's flag, not the Python argument
    assert main([*argv, "--key-added", "again", "--max-pixel-bins", "none"]) == 0
    with pytest.warns(FutureWarning, match="--key-added"):
        assert main([*argv, "--key", "old"]) == 0
    assert {"again_square_016um", "old_square_016um"} <= set(sd.read_zarr(path).tables)


def test_max_pixel_bins_flag_reads_a_count_or_none(capsys):
    from stpredict._cli import _count_or_none, build_parser

    assert _count_or_none("none") is None and _count_or_none("None") is None and _count_or_none("12") == 12
    args = build_parser().parse_args(["predict", "s.zarr", "--model", "m"])
    assert args.max_pixel_bins == 15_000_000  # tl.predict_dense's default
    with pytest.raises(SystemExit):
        build_parser().parse_args(["predict", "s.zarr", "--model", "m", "--max-pixel-bins", "many"])
    assert "expected a whole number or 'none'" in capsys.readouterr().err


def test_a_registered_model_trains_through_the_cli(tmp_path, monkeypatch, capsys):
    """`stpredict train --model KEY` takes any registered model class; a package's class is found by entry point."""
    import importlib.metadata

    from stpredict.model import PixNet, _base

    class ToyPixNet(PixNet):
        key = "test_toy"
        _FORMAT = "stpredict-test-toy"

    try:
        path = tmp_path / "s.zarr"
        stp.datasets.synthetic(width_um=480, height_um=416, n_genes=5, seed=1, bins_um=(16,)).write(path)
        argv = ["-q", "train", str(path), "--tables", "st_spots", "--preset", "cpu", "--n-top-genes", "3"]
        argv += ["--epochs", "1", "--steps", "1"]
        assert main([*argv, "--out", str(tmp_path / "m"), "--model", "test_toy"]) == 0
        back = stp.model.load(tmp_path / "m")
        assert type(back) is ToyPixNet and back.key == "test_toy"
        # a misspelt model: a usage error naming the registered ones, before anything is read or written
        assert main([*argv, "--out", str(tmp_path / "m2"), "--model", "test_tyo"]) == 2
        assert "'test_toy'" in capsys.readouterr().err and not (tmp_path / "m2").exists()

        # a model of another package: its `stpredict.models` entry point is imported on first use
        class EntryPoint:
            name, value = "test_plugin", "plugin.models:Plugin"

            def load(self):
                class Plugin(PixNet):
                    key = "test_plugin"
                    _FORMAT = "stpredict-test-plugin"

                return Plugin

        real = importlib.metadata.entry_points
        monkeypatch.setattr(
            importlib.metadata,
            "entry_points",
            lambda **kw: (
                [EntryPoint()] if kw == {"group": "stpredict.models", "name": "test_plugin"} else real(**kw)
            ),
        )
        assert stp.model.model_class("test_plugin").key == "test_plugin"
    finally:
        for key in ("test_toy", "test_plugin"):
            cls = _base._BY_NAME.pop(key, None)
            if cls is not None:
                _base._BY_FORMAT.pop(cls._FORMAT, None)


def test_train_and_predict_a_baseline(tmp_path):
    path = tmp_path / "s.zarr"
    stp.datasets.synthetic(width_um=480, height_um=416, n_genes=5, seed=1, bins_um=(16,)).write(path)
    model_dir = tmp_path / "spot"
    argv = ["-q", "train", str(path), "--tables", "visium_spots", "--out", str(model_dir), "--preset", "cpu"]
    assert (
        main([*argv, "--model", "spot_regressor", "--epochs", "1", "--steps", "1", "--n-top-genes", "3"]) == 0
    )
    predict = ["-q", "predict", str(path), "--model", str(model_dir)]
    assert main(predict) == 2
    assert main([*predict, "--shapes", "synthetic_visium_spots"]) == 0
    table = sd.read_zarr(path).tables["spot_regressor_synthetic_visium_spots"]
    assert table.n_vars == 3 and table.uns["stpredict"]["model"] == "SpotRegressor"


def test_info_and_entry_point(tmp_path):
    import anndata as ad
    import numpy as np
    import pandas as pd
    from spatialdata.models import Labels2DModel, TableModel

    sdata = stp.datasets.synthetic(width_um=320, height_um=320, n_genes=4, seed=1, bins_um=(16,))
    sdata.labels["bins_raster"] = Labels2DModel.parse(
        np.arange(1, 17, dtype=np.int32).reshape(4, 4), dims=("y", "x")
    )
    obs = pd.DataFrame({"region": pd.Categorical(["bins_raster"] * 16), "bin": np.arange(1, 17)})
    sdata.tables["raster_bins"] = TableModel.parse(
        ad.AnnData(np.ones((16, 2), dtype=np.float32), obs=obs),
        region="bins_raster",
        region_key="region",
        instance_key="bin",
    )
    sdata.write(tmp_path / "s.zarr")
    exe = shutil.which("stpredict")
    cmd = [exe] if exe else [sys.executable, "-m", "stpredict"]
    res = subprocess.run(
        [*cmd, "info", str(tmp_path / "s.zarr")], capture_output=True, text=True, check=False
    )
    assert res.returncode == 0, res.stderr
    assert "table  square_016um" in res.stdout and "µm/px" in res.stdout
    assert "counts" in res.stdout.split("table  square_016um")[1].splitlines()[0]
    assert (
        "labels bins_raster: 4 x 4 (y, x) int32 (a bin-id raster" in res.stdout
    )  # every element a table links to
    assert (
        "labels synthetic_domains: " in res.stdout
        and "int32 (a bin-id" not in res.stdout.split("synthetic_domains")[1].splitlines()[0]
    )
    assert "linked to bins_raster" in res.stdout
    assert "no parent found" not in res.stderr  # ome-zarr's warning about labels is silenced


def test_read_st_cli_needs_inputs(capsys):
    assert main(["read-st"]) == 2
    assert "--section" in capsys.readouterr().err


def test_info_says_predictions_are_not_counts(tmp_path, capsys):
    _demo(tmp_path)
    capsys.readouterr()
    assert main(["info", str(tmp_path / "synthetic.zarr")]) == 0
    lines = {ln.split(":")[0]: ln for ln in capsys.readouterr().out.splitlines()}
    assert "predicted log1p-normalised values" in lines["table  pixnet_square_008um"]
    assert "counts" not in lines["table  pixnet_square_008um"]
    assert "counts" in lines["table  square_008um"]


CHEAP_ERRORS = [
    (["predict", "{tmp}/nope.zarr", "--model", "{tmp}/m"], 1, "does not exist"),
    (
        ["predict", "{tmp}/s.zarr", "--model", "{tmp}/nomodel"],
        1,
        r"Model checkpoint folder not found.*does not exist",
    ),
    (["predict", "{tmp}/s.zarr", "--model", "{tmp}/empty"], 1, "not an stpredict checkpoint"),
    (["predict", "{tmp}/s.zarr", "--model", "{tmp}/m", "--bins", "0"], 2, r"`--bins` must be > 0; got 0"),
    (["predict", "{tmp}/s.zarr", "--model", "{tmp}/m", "--out-mpp", "-1"], 2, r"`--out-mpp` must be > 0"),
    (["predict", "{tmp}/s.zarr", "--model", "{tmp}/m", "--out", "x.zarr"], 2, "--out is for slide files"),
    (["predict", "{tmp}/slide.svs", "--model", "{tmp}/m", "--out", "o.zarr"], 1, "Slide file not found"),
    (
        ["train", "{tmp}/s.zarr", "{tmp}/nope.zarr", "--tables", "t", "--out", "{tmp}/new"],
        1,
        "does not exist",
    ),
    (
        ["train", "{tmp}/s.zarr", "--tables", "t", "--out", "{tmp}/empty", "--epochs", "0"],
        2,
        "`--epochs` must be >= 1",
    ),
    (["train", "{tmp}/s.zarr", "--tables", "t", "--out", "{tmp}/m"], 2, r"exists; pass --overwrite"),
    (
        ["train", "{tmp}/s.zarr", "--tables", "t", "--out", "{tmp}/mine", "--overwrite"],
        2,
        "holds no stpredict checkpoint",
    ),
    (["info", "{tmp}/s.zar"], 1, r"does not exist.*Did you mean .*s\.zarr"),
    (
        ["read-st", "--counts", "{tmp}/c.tsv", "--spots", "{tmp}/s.tsv", "--image", "{tmp}/he.jpg"],
        1,
        "MISSING counts",
    ),
]


def test_cheap_errors_come_before_the_heavy_imports(tmp_path):
    """A wrong path, a missing model folder or a zero size fails with neither SpatialData nor torch imported."""
    import json

    (tmp_path / "s.zarr").mkdir()
    (tmp_path / "s.zarr" / "zarr.json").write_text("{}")
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "config.json").write_text("{}")
    (tmp_path / "m" / "weights.pt").write_bytes(b"")
    (tmp_path / "empty").mkdir()
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("mine")
    cases = [([a.format(tmp=tmp_path) for a in argv], code, pattern) for argv, code, pattern in CHEAP_ERRORS]
    script = (
        "import json, sys\n"
        "from stpredict._cli import main\n"
        "out = []\n"
        "for argv, code, pattern in json.loads(sys.argv[1]):\n"
        "    out.append(main(['-q', *argv]))\n"
        "heavy = sorted(m for m in ('torch', 'spatialdata', 'anndata', 'dask', 'scanpy') if m in sys.modules)\n"
        "print(json.dumps({'rc': out, 'heavy': heavy}))\n"
    )
    res = subprocess.run(
        [sys.executable, "-c", script, json.dumps(cases)], capture_output=True, text=True, check=False
    )
    assert res.returncode == 0, res.stderr
    result = json.loads(res.stdout.strip().splitlines()[-1])
    assert result["heavy"] == [], f"imported before the error: {result['heavy']}"
    errors = [ln for ln in res.stderr.splitlines() if ": error: " in ln]
    assert len(errors) == len(cases), res.stderr
    for (argv, code, pattern), rc, err in zip(cases, result["rc"], errors, strict=True):
        assert rc == code and re.search(pattern, err), (argv, rc, err)


def test_every_option_has_help_and_errors_name_flags():
    from stpredict._cli import _message, build_parser

    parser = build_parser()
    for name, sub in parser._subparsers._group_actions[0].choices.items():
        for action in sub._actions:
            if action.help == "==SUPPRESS==" or isinstance(action, type(parser._actions[0])):
                continue
            assert action.help, f"stpredict {name} {action.option_strings or action.dest} has no help text"
        assert "--device" in sub._option_string_actions or name in ("info", "read-st"), name
    train = parser._subparsers._group_actions[0].choices["train"]
    msg = _message(ValueError("bad `max_epochs`; pass `overwrite=True` or `data_dir=`, see `seed`"), train)
    assert msg == "bad `--epochs`; pass `--overwrite` or `data_dir=`, see `--seed`"  # train has no --data-dir


def test_predict_a_slide_file_into_a_new_store(tmp_path, capsys):
    torch = pytest.importorskip("torch")
    from stpredict.model import PixNet

    slide = stp.datasets.synthetic(width_um=480, height_um=416, n_genes=5, seed=1, bins_um=(16,))
    svs = stp.datasets.write_slide(slide, tmp_path / "scan.ome.tif")
    torch.manual_seed(0)
    model = PixNet(list(slide.tables["square_016um"].var_names[:3]), decoder_channels=16, train_mpp=2.0)
    model.save(tmp_path / "model")
    slide["synthetic_visium_spots"].to_file(tmp_path / "spots.geojson", driver="GeoJSON")

    assert main(["info", str(svs)]) == 0
    out = capsys.readouterr().out
    assert "OME-TIFF" in out and "0.5000 µm/px" in out and "0.48 x 0.42 mm" in out and "level 1" in out

    store = tmp_path / "scan.zarr"
    argv = ["-q", "predict", str(svs), "--model", str(tmp_path / "model"), "--bins", "16"]
    assert main(argv) == 2  # a slide needs --out
    assert "--out" in capsys.readouterr().err
    assert main([*argv, "--out", str(store), "--shapes", str(tmp_path / "spots.geojson")]) == 0
    back = sd.read_zarr(store)
    assert {"scan_full_image", "pixnet_dense"} <= set(back.images)
    assert {"pixnet_square_016um", "pixnet_spots"} <= set(back.tables)
    assert stp.pp.get_mpp(back, "scan_full_image") == 0.5
    spots = back.tables["pixnet_spots"]
    assert spots.n_obs == len(slide["synthetic_visium_spots"]) and spots.n_vars == 3
    assert back.attrs["stpredict"]["slide"]["format"] == "OME-TIFF"

    assert main([*argv, "--out", str(store)]) == 2  # nothing replaced without --overwrite
    assert "--overwrite" in capsys.readouterr().err
    assert main([*argv, "--out", str(store), "--overwrite", "--no-image", "--mpp", "0.25"]) == 0
    back = sd.read_zarr(store)
    assert "scan_full_image" not in back.images and stp.pp.get_mpp(back, "pixnet_dense") == pytest.approx(2.0)
    assert back.tables["pixnet_square_016um"].uns["stpredict"]["mpp"] == 0.25
    not_zarr = tmp_path / "folder"
    not_zarr.mkdir()
    assert main([*argv, "--out", str(not_zarr), "--overwrite"]) == 2  # never deletes what is not a store
    assert not_zarr.is_dir()
    users = tmp_path / "users.zarr"  # a SpatialData store it did not write for a slide: never replaced
    stp.datasets.synthetic(width_um=320, height_um=320, n_genes=4, seed=1, bins_um=(16,)).write(users)
    assert main([*argv, "--out", str(users), "--overwrite"]) == 2
    assert "square_016um" in sd.read_zarr(users).tables
    # a run that fails leaves the store it was to replace: a missing shapes file and a zero bin size are refused
    # before anything is read or written, a wrong image key fails inside the prediction
    assert main([*argv, "--out", str(store), "--overwrite", "--shapes", str(tmp_path / "none.geojson")]) == 1
    assert main([*argv, "--out", str(store), "--overwrite", "--bins", "0"]) == 2
    assert main([*argv, "--out", str(store), "--overwrite", "--image-key", "nope"]) == 1  # fails part-way
    assert "pixnet_square_016um" in sd.read_zarr(store).tables
    assert not list(tmp_path.glob(".*replaced"))
    assert main([*argv, "--out", str(tmp_path / "new.zarr"), "--mpp", "-1"]) == 2
    assert not (tmp_path / "new.zarr").exists()
    assert main(["-q", "predict", str(store), "--model", str(tmp_path / "model"), "--out", "x.zarr"]) == 2


def test_train_offline_paper_preset_names_the_cli_fixes(tmp_path, capsys, monkeypatch):
    """Offline, the paper preset's ImageNet weights cannot be fetched: the error names the flags that fix it."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))  # an empty hub cache
    path = tmp_path / "s.zarr"
    stp.datasets.synthetic(width_um=320, height_um=320, n_genes=4, seed=1, bins_um=(16,)).write(path)
    argv = [
        "-q",
        "train",
        str(path),
        "--tables",
        "st_spots",
        "--out",
        str(tmp_path / "m"),
        "--preset",
        "paper",
    ]
    assert main([*argv, "--epochs", "1", "--steps", "1", "--n-top-genes", "3"]) == 1
    err = capsys.readouterr().err
    assert "`--no-pretrained`" in err and "`--encoder-weights" in err
    assert not (tmp_path / "m").exists()
