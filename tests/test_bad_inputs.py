"""A catalogue of bad and edge inputs at every public entry point: each gets an error that names the problem.

Every case is ``(id, call, exception type, pattern)``; the pattern must appear in the message, so a cryptic
error (an ``IndexError`` deep in a library, a ``MemoryError``) or a silent success fails the test.
"""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import spatialdata as sd
from spatialdata.models import Image2DModel

import stpredict as stp
from stpredict._core import pixel_and_micron_transforms

torch = pytest.importorskip("torch")

SMALL = {"encoder": "resnet18", "decoder_channels": 16, "train_mpp": 2.0, "tile_size": 128}
SPOTS = "synthetic_visium_spots"


def _image_sdata(arr: np.ndarray, mpp: float | None = 0.5) -> sd.SpatialData:
    ts = pixel_and_micron_transforms("px", mpp=mpp) if mpp is not None else None
    el = Image2DModel.parse(arr, dims=("c", "y", "x"), transformations=ts)
    return sd.SpatialData(images={"he": el})


@pytest.fixture(scope="module")
def env(tmp_path_factory, st_folder_writer):
    tmp = tmp_path_factory.mktemp("bad")
    slide = stp.datasets.synthetic(width_um=320, height_um=288, n_genes=8, seed=3, bins_um=(16,))
    genes = list(slide.tables["st_spots"].var_names[:4])
    torch.manual_seed(0)
    model = stp.model.PixNet(genes, **SMALL)
    stp.tl.predict_shapes(slide, model, shapes=[SPOTS])
    rgb = np.asarray(slide.images["synthetic_full_image"]["scale0"].image)
    ckpt = model.save(tmp / "ckpt")
    spot_ckpt = stp.model.SpotRegressor(genes, encoder="resnet18", train_mpp=2.0).save(tmp / "spot_ckpt")
    store = tmp / "slide.zarr"
    slide.write(store)
    (tmp / "not_a_store").mkdir()
    write_st_folder = st_folder_writer
    return SimpleNamespace(
        write_st_folder=write_st_folder,
        tmp=tmp,
        slide=slide,
        genes=genes,
        model=model,
        rgb=rgb,
        ckpt=ckpt,
        spot_ckpt=spot_ckpt,
        store=store,
    )


def _slide_with(env, table: str = "st_spots", **changes):
    """A shallow copy of the slide whose table ``table`` is modified by ``changes`` (X, var_names, n_obs)."""
    s = sd.SpatialData(
        images={"synthetic_full_image": env.slide["synthetic_full_image"]},
        shapes={k: env.slide.shapes[k] for k in env.slide.shapes},
        tables={table: env.slide.tables[table].copy()},
    )
    t = s.tables[table]
    if "X" in changes:
        t.X = changes["X"](np.asarray(t.X.toarray() if hasattr(t.X, "toarray") else t.X, dtype=np.float64))
    if changes.get("dup_genes"):
        t.var_names = [t.var_names[0]] * 2 + list(t.var_names[2:])
    if changes.get("empty"):
        s.tables[table] = t[:, :0].copy()
    return s


def _fresh(env) -> sd.SpatialData:
    return sd.SpatialData(
        images={"synthetic_full_image": env.slide["synthetic_full_image"]},
        shapes={SPOTS: env.slide.shapes[SPOTS]},
    )


def _pd(env, s=None, **kw):
    kw.setdefault("bins_um", (16,))
    kw.setdefault("progress", False)
    return stp.tl.predict_dense(_fresh(env) if s is None else s, env.model, **kw)


def _train(env, s=None, **kw):
    kw.setdefault("n_top_genes", 4)
    kw.setdefault("progress", False)
    kw.setdefault("preset", "cpu")
    kw.setdefault("tables", "st_spots")
    return stp.tl.train(env.slide if s is None else s, **kw)


def _off_image(env):
    """Measured spots whose shapes were moved off the image (misaligned transformations)."""
    from spatialdata.models import ShapesModel

    s = _slide_with(env, table="visium_spots")
    far = s.shapes[SPOTS].copy()
    far.geometry = far.geometry.translate(100_000, 100_000)
    s.shapes[SPOTS] = ShapesModel.parse(far)
    return _train(env, s, tables="visium_spots")


def _collide(env):
    s = _fresh(env)
    s.tables["pixnet_square_016um"] = env.slide.tables["square_016um"].copy()  # the user's own table
    return _pd(env, s, overwrite=True)


def _twice(env):
    s = _fresh(env)
    _pd(env, s)
    return _pd(env, s)


def _eval_with(env, pred_fn=None, truth_fn=None, **kw):
    s = sd.SpatialData(
        shapes={SPOTS: env.slide.shapes[SPOTS]},
        tables={
            "pred": env.slide.tables[f"pixnet_{SPOTS}"].copy(),
            "truth": env.slide.tables["visium_spots"].copy(),
        },
    )
    if pred_fn:
        s.tables["pred"].X = pred_fn(np.asarray(s.tables["pred"].X))
    if truth_fn:
        t = s.tables["truth"]
        X = np.asarray(t.X.toarray() if hasattr(t.X, "toarray") else t.X, dtype=np.float64)
        t.X = truth_fn(X)
    return stp.tl.evaluate(s, pred="pred", truth="truth", ari=False, **kw)


def _settings(name, value):
    old = copy.copy(stp.settings.__dict__)
    try:
        setattr(stp.settings, name, value)
    finally:
        stp.settings.__dict__.update(old)


def _swapped_st(env):
    files = env.write_st_folder(env.tmp / "swapped", n_x=6, n_y=5, pitch_px=50.0)
    spots = pd.read_csv(files["spots"], sep="\t")
    spots["pixel_x"], spots["pixel_y"] = spots["pixel_y"].to_numpy(), spots["pixel_x"].to_numpy()
    spots.to_csv(files["spots"], sep="\t", index=False)
    return stp.io.read_st(files["counts"], files["spots"], files["image"])


def _st_files(env, **kw):
    files = env.write_st_folder(env.tmp / f"st_{len(list(env.tmp.iterdir()))}")
    return stp.io.read_st(files["counts"], files["spots"], files["image"], **kw)


def _bad_config(env):
    import shutil

    path = env.tmp / "bad_ckpt"
    shutil.rmtree(path, ignore_errors=True)
    shutil.copytree(env.ckpt, path)
    cfg = json.loads((path / "config.json").read_text())
    del cfg["recipe"]
    (path / "config.json").write_text(json.dumps(cfg))
    return stp.model.load(path)


def _plot(env, **kw):
    s = _fresh(env)
    _pd(env, s)
    return stp.pl.expression_map(s, kw.pop("gene", env.genes[0]), **kw)


def _cli(env, argv):
    from stpredict._cli import main

    return main(argv)


u8 = lambda env: env.rgb  # noqa: E731
CASES = [
    # ---- predict_dense: the model
    (
        "pd-model-path-str",
        lambda e: stp.tl.predict_dense(_fresh(e), str(e.ckpt)),
        TypeError,
        "load a checkpoint",
    ),
    (
        "pd-model-pathlike",
        lambda e: stp.tl.predict_dense(_fresh(e), Path(e.ckpt)),
        TypeError,
        "load a checkpoint",
    ),
    (
        "pd-model-not-model",
        lambda e: stp.tl.predict_dense(_fresh(e), 42),
        TypeError,
        "trained stpredict model",
    ),
    (
        "pd-spot-model",
        lambda e: stp.tl.predict_dense(_fresh(e), stp.model.load(e.spot_ckpt)),
        TypeError,
        "predict_shapes",
    ),
    (
        "pd-untrained",
        lambda e: stp.tl.predict_dense(_fresh(e), stp.model.PixNet(**SMALL)),
        RuntimeError,
        "no genes yet",
    ),
    # ---- predict_dense: the image
    (
        "pd-uint16",
        lambda e: _pd(e, _image_sdata(e.rgb.astype(np.uint16) * 257)),
        ValueError,
        "uint16.*img_as_ubyte",
    ),
    ("pd-float01", lambda e: _pd(e, _image_sdata(e.rgb / 255.0)), ValueError, r"float.*255"),
    ("pd-gray", lambda e: _pd(e, _image_sdata(e.rgb[:1])), ValueError, "grayscale"),
    ("pd-rgba", lambda e: _pd(e, _image_sdata(np.concatenate([e.rgb, e.rgb[:1]]))), ValueError, "RGBA"),
    (
        "pd-gray-explicit-key",
        lambda e: _pd(e, _image_sdata(e.rgb[:1]), image_key="he"),
        ValueError,
        "grayscale",
    ),
    ("pd-missing-image-key", lambda e: _pd(e, image_key="nope"), KeyError, "not found"),
    ("pd-no-mpp", lambda e: _pd(e, _image_sdata(e.rgb, mpp=None)), ValueError, "no known pixel size"),
    ("pd-mpp-100", lambda e: _pd(e, _image_sdata(e.rgb, mpp=100)), ValueError, "plausible range"),
    ("pd-mpp-tiny", lambda e: _pd(e, _image_sdata(e.rgb, mpp=0.0005)), ValueError, "plausible range"),
    ("pd-no-tissue", lambda e: _pd(e, _image_sdata(np.full_like(e.rgb, 255))), ValueError, "No tissue"),
    ("pd-threshold-nothing", lambda e: _pd(e, tissue_threshold=1.0), ValueError, "No tissue"),
    (
        "pd-image-smaller-than-tile",
        lambda e: _pd(e, _image_sdata(np.full((3, 8, 8), 255, np.uint8))),
        ValueError,
        "No tissue",
    ),
    # ---- predict_dense: sizes and names
    ("pd-out-mpp-0", lambda e: _pd(e, out_mpp=0), ValueError, "`out_mpp` must be > 0"),
    ("pd-out-mpp-str", lambda e: _pd(e, out_mpp="2"), TypeError, "`out_mpp` must be a number"),
    ("pd-out-mpp-nan", lambda e: _pd(e, out_mpp=float("nan")), ValueError, "finite"),
    ("pd-chunk-0", lambda e: _pd(e, chunk_size=0), ValueError, "`chunk_size` must be >= 16"),
    ("pd-chunk-frac", lambda e: _pd(e, chunk_size=100.5), TypeError, "whole number"),
    ("pd-margin-neg", lambda e: _pd(e, margin=-1), ValueError, "`margin` must be >= 0"),
    ("pd-bins-frac", lambda e: _pd(e, bins_um=(8.5,)), TypeError, "`bins_um` must be a whole number"),
    ("pd-bins-not-multiple", lambda e: _pd(e, bins_um=(3,)), ValueError, "multiple of out_mpp"),
    ("pd-bins-zero", lambda e: _pd(e, bins_um=(0,)), ValueError, "`bins_um` must be >= 1"),
    ("pd-bins-dup", lambda e: _pd(e, bins_um=(16, 16)), ValueError, "duplicate"),
    ("pd-bins-str", lambda e: _pd(e, bins_um="16"), TypeError, "list of values"),
    ("pd-shapes-missing", lambda e: _pd(e, shapes=["nope"]), KeyError, "not found"),
    ("pd-shapes-path", lambda e: _pd(e, shapes=Path("spots.parquet")), TypeError, "name or a list of names"),
    ("pd-shapes-dup", lambda e: _pd(e, shapes=[SPOTS, SPOTS]), ValueError, "duplicate"),
    (
        "pd-threshold-range",
        lambda e: _pd(e, tissue_threshold=1.5),
        ValueError,
        "`tissue_threshold` must be <= 1",
    ),
    ("pd-tiles-missing", lambda e: _pd(e, tiles="nope"), KeyError, "not found"),
    ("pd-max-in-memory-neg", lambda e: _pd(e, max_in_memory=-1), ValueError, "max_in_memory"),
    ("pd-key-empty", lambda e: _pd(e, key_added=""), ValueError, "not a valid element name"),
    ("pd-key-slash", lambda e: _pd(e, key_added="a/b"), ValueError, "not a valid element name"),
    ("pd-key-int", lambda e: _pd(e, key_added=5), TypeError, "`key_added` must be a name"),
    ("pd-exists", _twice, ValueError, "already exist.*overwrite=True"),
    ("pd-collides-with-user-data", _collide, ValueError, "not written by stpredict"),
    ("pd-device-cuda-x", lambda e: _pd(e, device="cuda:x"), ValueError, "cuda:N"),
    ("pd-device-gpu", lambda e: _pd(e, device="gpu"), ValueError, "device must be one of"),
    # ---- predict_shapes
    (
        "ps-shapes-int",
        lambda e: stp.tl.predict_shapes(_fresh(e), e.model, shapes=123),
        TypeError,
        "name or a list of names",
    ),
    (
        "ps-batch-0",
        lambda e: stp.tl.predict_shapes(_fresh(e), e.model, shapes=SPOTS, batch_size=0),
        ValueError,
        "`batch_size` must be >= 1",
    ),
    (
        "ps-model-str",
        lambda e: stp.tl.predict_shapes(_fresh(e), "pixnet", shapes=SPOTS),
        TypeError,
        "load a checkpoint",
    ),
    (
        "ps-uint16",
        lambda e: stp.tl.predict_shapes(_image_sdata(e.rgb.astype(np.uint16)), e.model, shapes=[]),
        ValueError,
        "uint16",
    ),
    # ---- train: data
    ("tr-path", lambda e: _train(e, str(e.store)), TypeError, "read it first"),
    ("tr-table-missing", lambda e: _train(e, tables="nope"), KeyError, "not found in section"),
    (
        "tr-nan-counts",
        lambda e: _train(e, _slide_with(e, X=lambda X: np.where(X > 0, np.nan, X))),
        ValueError,
        "NaN",
    ),
    ("tr-negative", lambda e: _train(e, _slide_with(e, X=lambda X: X - X.max() - 1)), ValueError, "negative"),
    (
        "tr-lognormalised",
        lambda e: _train(e, _slide_with(e, X=lambda X: np.log1p(X / X.sum(1, keepdims=True) * 1e4))),
        ValueError,
        "already normalised",
    ),
    (
        "tr-dup-var-names",
        lambda e: _train(e, _slide_with(e, dup_genes=True)),
        ValueError,
        "duplicate gene names",
    ),
    ("tr-empty-table", lambda e: _train(e, _slide_with(e, empty=True)), ValueError, "empty"),
    ("tr-uint16-image", lambda e: _train(e, _uint16_slide(e)), ValueError, "uint16"),
    ("tr-shapes-off-image", _off_image, ValueError, "lies on image.*not aligned"),
    # ---- train: arguments
    ("tr-genes-dup", lambda e: _train(e, genes=[e.genes[0], e.genes[0]]), ValueError, "duplicate"),
    ("tr-n-top-neg", lambda e: _train(e, n_top_genes=-1), ValueError, "`n_top_genes` must be >= 1"),
    ("tr-n-top-zero", lambda e: _train(e, n_top_genes=0), ValueError, "`n_top_genes` must be >= 1"),
    ("tr-epochs-0", lambda e: _train(e, max_epochs=0), ValueError, "`max_epochs` must be >= 1"),
    ("tr-steps-0", lambda e: _train(e, steps_per_epoch=0), ValueError, "`steps_per_epoch` must be >= 1"),
    ("tr-batch-0", lambda e: _train(e, batch_size=0), ValueError, "`batch_size` must be >= 1"),
    ("tr-lr-0", lambda e: _train(e, lr=0), ValueError, "`lr` must be > 0"),
    ("tr-lr-str", lambda e: _train(e, lr="fast"), TypeError, "`lr` must be a number"),
    ("tr-progress-str", lambda e: _train(e, progress="no"), TypeError, "progress"),
    ("tr-validation-range", lambda e: _train(e, validation=5), ValueError, "validation must index"),
    ("tr-model-name", lambda e: _train(e, model="stnet"), ValueError, "model must be one of"),
    ("tr-unknown-kwarg", lambda e: _train(e, epochs=3), TypeError, "epochs"),
    # ---- aggregate
    (
        "ag-values-missing",
        lambda e: stp.tl.aggregate(_fresh(e), values="nope", by=SPOTS),
        KeyError,
        "not found",
    ),
    (
        "ag-by-missing",
        lambda e: stp.tl.aggregate(_fresh(e), values="synthetic_full_image", by="nope"),
        KeyError,
        "not found",
    ),
    (
        "ag-how",
        lambda e: stp.tl.aggregate(_fresh(e), values="synthetic_full_image", by=SPOTS, how="median"),
        ValueError,
        "how",
    ),
    (
        "ag-channels",
        lambda e: stp.tl.aggregate(_fresh(e), values="synthetic_full_image", by=SPOTS, channels=["nope"]),
        KeyError,
        "nope",
    ),
    # ---- evaluate
    (
        "ev-truth-normalised",
        lambda e: _eval_with(e, truth_fn=lambda X: np.log1p(X)),
        ValueError,
        "already normalised",
    ),
    (
        "ev-all-nan",
        lambda e: _eval_with(e, pred_fn=lambda X: np.full_like(X, np.nan)),
        ValueError,
        "finite prediction",
    ),
    ("ev-domain-missing", lambda e: _eval_with(e, domain_key="nope"), KeyError, "domain_key"),
    ("ev-layer-missing", lambda e: _eval_with(e, layer="nope"), KeyError, "Layer 'nope'"),
    # ---- settings
    (
        "set-progress-str",
        lambda e: _settings("progress_bar", "no"),
        TypeError,
        "progress_bar must be True or False",
    ),
    ("set-unknown", lambda e: _settings("progres_bar", False), AttributeError, "no setting 'progres_bar'"),
    ("set-verbosity", lambda e: _settings("verbosity", 5), ValueError, "verbosity"),
    ("set-device", lambda e: _settings("device", "cuda:x"), ValueError, "cuda:N"),
    ("set-n-jobs", lambda e: _settings("n_jobs", 0), ValueError, "n_jobs"),
    # ---- pp
    ("mpp-str", lambda e: stp.pp.set_mpp(_image_sdata(e.rgb, None), "he", "0.5"), TypeError, "string"),
    (
        "mpp-100",
        lambda e: stp.pp.set_mpp(_image_sdata(e.rgb, None), "he", 100),
        ValueError,
        "plausible range",
    ),
    (
        "mpp-neg",
        lambda e: stp.pp.set_mpp(_image_sdata(e.rgb, None), "he", -1),
        ValueError,
        "`mpp` must be > 0",
    ),
    (
        "tiles-size-0",
        lambda e: stp.pp.select_tiles(_fresh(e), tile_um=0),
        ValueError,
        "`tile_um` must be > 0",
    ),
    ("tiles-method", lambda e: stp.pp.select_tiles(_fresh(e), method="entropy"), ValueError, "method"),
    (
        "tiles-bigger-than-image",
        lambda e: stp.pp.select_tiles(_fresh(e), tile_um=5000),
        ValueError,
        "smaller than one",
    ),
    (
        "tiles-key-slash",
        lambda e: stp.pp.select_tiles(_fresh(e), key_added="a/b"),
        ValueError,
        "valid element name",
    ),
    # ---- io
    ("st-swapped-xy", _swapped_st, ValueError, "swapped"),
    ("st-mpp-str", lambda e: _st_files(e, mpp="0.7"), TypeError, "string"),
    ("st-mpp-range", lambda e: _st_files(e, mpp=33.6), ValueError, "plausible range"),
    ("st-dataset-id", lambda e: _st_files(e, dataset_id=""), ValueError, "valid element name"),
    ("st-downsample-0", lambda e: _st_files(e, downsample=0), ValueError, "`downsample` must be >= 1"),
    ("st-missing-files", lambda e: stp.io.read_st("a.tsv", "b.tsv", "c.jpg"), FileNotFoundError, "MISSING"),
    # ---- checkpoints
    (
        "load-not-ckpt",
        lambda e: stp.model.load(e.tmp / "not_a_store"),
        FileNotFoundError,
        "not an stpredict checkpoint",
    ),
    ("load-missing-keys", _bad_config, ValueError, r"lacks the key\(s\) \['recipe'\]"),
    ("load-other-class", lambda e: stp.model.PixNet.load(e.spot_ckpt), ValueError, "not a PixNet checkpoint"),
    # ---- pl
    ("pl-crop-outside", lambda e: _plot(e, crop=(5000, 5000, 6000, 6000)), ValueError, "does not overlap"),
    ("pl-crop-3", lambda e: _plot(e, crop=(0, 0, 10)), ValueError, r"\(x0, y0, x1, y1\)"),
    ("pl-gene-missing", lambda e: _plot(e, gene="NOPE"), KeyError, "not in the map"),
    ("pl-key-missing", lambda e: stp.pl.expression_map(_fresh(e), "x", key="nope"), KeyError, "No dense map"),
]


def _uint16_slide(env):
    s = _slide_with(env)
    img = np.asarray(env.rgb).astype(np.uint16) * 257
    s.images["synthetic_full_image"] = Image2DModel.parse(
        img, dims=("c", "y", "x"), transformations=pixel_and_micron_transforms("synthetic", mpp=0.5)
    )
    return s


def test_catalogue_is_large():
    assert len(CASES) >= 60 and len({c[0] for c in CASES}) == len(CASES)


@pytest.mark.parametrize(("call", "exc", "pattern"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_is_named(env, call, exc, pattern):
    with pytest.raises(exc) as info:
        call(env)
    msg = info.value.args[0] if isinstance(info.value, KeyError) else str(info.value)
    assert re.search(pattern, str(msg)), f"message does not name the problem: {msg!r}"


CLI_CASES = [
    ("info-missing", lambda e: ["info", str(e.tmp / "nope.zarr")], 1, "does not exist"),
    ("info-not-zarr", lambda e: ["info", str(e.tmp / "not_a_store")], 1, "not a SpatialData zarr store"),
    (
        "train-epochs-0",
        lambda e: [
            "train",
            str(e.store),
            "--tables",
            "st_spots",
            "--out",
            str(e.tmp / "m"),
            "--epochs",
            "0",
            "--n-top-genes",
            "3",
            "--preset",
            "cpu",
        ],
        2,  # a wrong use of the command, found before anything is imported
        "`--epochs`",  # the CLI's flag, not the Python argument max_epochs
    ),
    (
        "predict-no-ckpt",
        lambda e: ["predict", str(e.store), "--model", str(e.tmp / "not_a_store")],
        1,
        "not an stpredict checkpoint",
    ),
    (
        "predict-bins-frac",
        lambda e: ["predict", str(e.store), "--model", str(e.ckpt), "--bins", "8.5"],
        2,
        "invalid int value",
    ),
    ("read-st-nothing", lambda e: ["read-st"], 2, "--section"),
]


@pytest.mark.parametrize(
    ("argv", "code", "pattern"), [c[1:] for c in CLI_CASES], ids=[c[0] for c in CLI_CASES]
)
def test_cli_errors_are_one_line(env, capsys, argv, code, pattern):
    from stpredict._cli import main

    try:
        rc = main(["-q", *argv(env)])
    except SystemExit as exc:  # argparse's own usage errors
        rc = exc.code
    err = capsys.readouterr().err
    assert rc == code, err
    assert re.search(pattern, err), err
    errors = [line for line in err.splitlines() if ": error: " in line]
    assert "Traceback" not in err and len(errors) == 1 and re.search(pattern, errors[0]), err
