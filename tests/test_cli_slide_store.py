"""`stpredict predict SLIDE --out S`: --overwrite replaces only what stpredict wrote; a kill at any point leaves
exactly one of the earlier or the new result, and the next command says which."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap

import geopandas as gpd
import numpy as np
import pytest
import shapely
import spatialdata as sd
from spatialdata.models import ShapesModel, TableModel

import stpredict as stp
from stpredict._cli import main

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="SIGKILL is POSIX")

# Runs the real command line in this process and SIGKILLs itself at one point of the write.
DRIVER = textwrap.dedent(
    """
    import os, signal, sys

    point, argv = sys.argv[1], sys.argv[2:]

    def kill_on_call(module, name, n=1, after=False):
        real = getattr(module, name)
        calls = {"n": 0}

        def wrapper(*args, **kwargs):
            calls["n"] += 1
            if calls["n"] == n and not after:
                os.kill(os.getpid(), signal.SIGKILL)
            out = real(*args, **kwargs)
            if calls["n"] == n and after:
                os.kill(os.getpid(), signal.SIGKILL)
            return out

        setattr(module, name, wrapper)

    if point == "create":  # the new store's root written, nothing else
        import stpredict.io._cli_stores as cli
        kill_on_call(cli, "_new_store", after=True)
    elif point == "map":  # while the dense map is being computed (the slide is one block)
        from stpredict.model._dense import DenseEngine
        kill_on_call(DenseEngine, "block", n=1)
    elif point == "staged":  # the H&E copy and the map staged, the tables not yet
        import spatialdata._io.io_table as io_table
        kill_on_call(io_table, "write_adata", n=1)
    elif point == "swap":  # after the commit point: the first earlier element moved out, nothing moved in
        import stpredict._core._store as store_mod
        kill_on_call(store_mod.os, "rename", n=1, after=True)
    elif point != "none":
        raise SystemExit(f"unknown point {point}")
    from stpredict._cli import main
    sys.exit(main(argv))
    """
)


@pytest.fixture(scope="module")
def slide(tmp_path_factory):
    """A slide file, a small PixNet, a footprint file and a store S written by a first `stpredict predict`."""
    torch = pytest.importorskip("torch")
    from stpredict.model import PixNet

    base = tmp_path_factory.mktemp("slide_store")
    syn = stp.datasets.synthetic(width_um=480, height_um=416, n_genes=5, seed=1, bins_um=(16,))
    path = stp.datasets.write_slide(syn, base / "scan.ome.tif")
    torch.manual_seed(0)
    PixNet(list(syn.tables["square_016um"].var_names[:3]), decoder_channels=16, train_mpp=2.0).save(
        base / "m1"
    )
    torch.manual_seed(1)
    PixNet(list(syn.tables["square_016um"].var_names[:3]), decoder_channels=16, train_mpp=2.0).save(
        base / "m2"
    )
    syn["synthetic_visium_spots"].to_file(base / "spots.geojson", driver="GeoJSON")
    argv = ["-q", "predict", str(path), "--bins", "16", "--shapes", str(base / "spots.geojson")]
    assert main([*argv, "--model", str(base / "m1"), "--out", str(base / "first.zarr")]) == 0
    (base / "driver.py").write_text(DRIVER)
    return base, path, argv


def _add_users_elements(store) -> dict[str, np.ndarray]:
    """What a user adds to S after the first run: an annotation polygon layer and a table of their own."""
    s = sd.read_zarr(store)
    polys = gpd.GeoDataFrame(geometry=[shapely.box(10, 10, 200, 150), shapely.box(300, 300, 400, 420)])
    t = sd.transformations.get_transformation(s.images["scan_full_image"], get_all=True)
    s.shapes["annotations"] = ShapesModel.parse(polys, transformations=t)
    s.write_element("annotations")
    import anndata as ad
    import pandas as pd

    table = ad.AnnData(
        X=np.array([[1.0, 2.0], [3.0, 4.0]], np.float32),
        obs=pd.DataFrame({"region": pd.Categorical(["annotations"] * 2), "id": [0, 1]}, index=["a", "b"]),
    )
    s.tables["my_labels"] = TableModel.parse(
        table, region="annotations", region_key="region", instance_key="id"
    )
    s.write_element("my_labels")
    return {"annotations": polys.geometry.area.to_numpy(), "my_labels": table.X.copy()}


def _check_users_elements(store, mine) -> None:
    back = sd.read_zarr(store)
    np.testing.assert_array_equal(back.shapes["annotations"].geometry.area.to_numpy(), mine["annotations"])
    np.testing.assert_array_equal(np.asarray(back.tables["my_labels"].X), mine["my_labels"])


def _maps(store) -> dict[str, np.ndarray]:
    back = sd.read_zarr(store)
    return {
        "dense": np.asarray(back.images["pixnet_dense"]["scale0"].image),
        "bins": np.asarray(back.tables["pixnet_square_016um"].X),
        "spots": np.asarray(back.tables["pixnet_spots"].X),
    }


def test_overwrite_keeps_the_users_elements(slide, tmp_path, capsys):
    """Issue: --overwrite on a slide's --out deleted the elements the user had added to it."""
    base, _, argv = slide
    store = tmp_path / "s.zarr"
    shutil.copytree(base / "first.zarr", store)
    mine = _add_users_elements(store)
    before = _maps(store)
    assert main([*argv, "--model", str(base / "m2"), "--out", str(store)]) == 2  # not without --overwrite
    assert "--overwrite" in capsys.readouterr().err
    assert main([*argv, "--model", str(base / "m2"), "--out", str(store), "--overwrite"]) == 0
    _check_users_elements(store, mine)
    after = _maps(store)
    assert not np.allclose(after["dense"], before["dense"])  # the predictions are the second model's
    written = stp.io.written_elements(sd.read_zarr(store))
    assert {"scan_full_image", "spots", "pixnet_dense", "pixnet_square_016um"} <= set(written)
    assert "annotations" not in written and "my_labels" not in written
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.zarr"]

    # a run without the footprint file and with another bin size removes the earlier run's other elements, only them
    assert (
        main([*argv[:3], "--bins", "8", "--model", str(base / "m1"), "--out", str(store), "--overwrite"]) == 0
    )
    back = sd.read_zarr(store)
    assert "pixnet_square_016um" not in back.tables and "pixnet_spots" not in back.tables
    assert "pixnet_square_008um" in back.tables and "spots" not in back.shapes
    _check_users_elements(store, mine)


def test_overwrite_refuses_to_replace_or_strand_the_users_elements(slide, tmp_path, capsys):
    base, _, argv = slide
    store = tmp_path / "s.zarr"
    shutil.copytree(base / "first.zarr", store)
    mine = _add_users_elements(store)
    before = _maps(store)
    # a footprint file named like the user's element
    shutil.copy(base / "spots.geojson", tmp_path / "annotations.geojson")
    shapes = ["--shapes", str(tmp_path / "annotations.geojson")]
    rc = main([*argv[:5], *shapes, "--model", str(base / "m2"), "--out", str(store), "--overwrite"])
    assert rc == 2 and "annotations" in capsys.readouterr().err
    # the user's elements sit on this slide: a different slide (here: another pixel size) is refused
    assert (
        main([*argv, "--model", str(base / "m2"), "--out", str(store), "--overwrite", "--mpp", "0.25"]) == 2
    )
    assert "would no longer match" in capsys.readouterr().err
    _check_users_elements(store, mine)
    for k, v in _maps(store).items():
        np.testing.assert_array_equal(v, before[k], err_msg=k)


def _run(base, point, argv, timeout=300):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    return subprocess.run(
        [sys.executable, str(base / "driver.py"), point, *argv],
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout,
    )


@pytest.mark.parametrize("point", ["map", "staged", "swap"])
def test_sigkill_during_overwrite_leaves_one_result_and_the_next_command_says_which(slide, tmp_path, point):
    """Issue: a kill during --overwrite left S with only the H&E and the earlier result hidden in .S.replaced."""
    base, _, argv = slide
    store = tmp_path / "s.zarr"
    shutil.copytree(base / "first.zarr", store)
    mine = _add_users_elements(store)
    before = _maps(store)
    run = [*argv, "--model", str(base / "m2"), "--out", str(store), "--overwrite"]
    proc = _run(base, point, run)
    assert proc.returncode == -signal.SIGKILL, (
        f"not killed at {point!r}: {proc.stdout[-500:]} {proc.stderr[-2000:]}"
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.zarr"]  # nothing set aside next to it

    # the next command (here: io.recover_store, as a user after a crash) leaves one result and says which
    import logging

    records = []
    handler = logging.Handler()
    handler.emit = records.append
    stp.logger.addHandler(handler)
    try:
        done = stp.io.recover_store(store)
    finally:
        stp.logger.removeHandler(handler)
    said = " ".join(r.getMessage() for r in records)
    assert len(done) == 1
    after = _maps(store)
    if point == "swap":  # after the commit point: the new result, complete
        assert "holds that run's result" in said
        assert not np.allclose(after["dense"], before["dense"])
    else:
        assert "holds what it held before" in said
        for k, v in before.items():
            np.testing.assert_array_equal(after[k], v, err_msg=k)
    _check_users_elements(store, mine)
    assert not list((store / ".stpredict").glob("tx-*"))
    # and the command run again finishes the job
    proc = _run(base, "none", run)
    assert proc.returncode == 0, proc.stderr[-2000:]
    _check_users_elements(store, mine)
    assert "pixnet_spots" in sd.read_zarr(store).tables


def test_sigkill_of_a_first_run_then_the_command_again(slide, tmp_path):
    """A kill of a run into a new --out leaves no half store; the rerun needs no --overwrite and says why."""
    base, _, argv = slide
    store = tmp_path / "new.zarr"
    run = [*argv, "--model", str(base / "m1"), "--out", str(store)]
    for point in ("create", "map"):
        proc = _run(base, point, run)
        assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
        assert sorted(p.name for p in tmp_path.iterdir()) == ["new.zarr"]  # no half-made store beside it
        assert not sd.read_zarr(store).tables and not sd.read_zarr(store).images  # opens, holds nothing yet
    proc = _run(base, "none", run)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "interrupted" in proc.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["new.zarr"]
    np.testing.assert_allclose(
        _maps(store)["dense"], _maps(base / "first.zarr")["dense"], rtol=1e-5, atol=1e-6
    )


def test_a_store_set_aside_by_an_older_version_is_put_back(slide, tmp_path, capsys):
    """stpredict 0.1 moved S to .S.replaced during --overwrite; after a kill the next command puts it back."""
    base, _, argv = slide
    store = tmp_path / "s.zarr"
    aside = tmp_path / ".s.zarr.replaced"
    shutil.copytree(base / "first.zarr", aside)
    partial = sd.read_zarr(base / "first.zarr")  # what the killed run had written: the H&E only
    partial.attrs["stpredict"]["written"] = {}
    sd.SpatialData(images={"scan_full_image": partial.images["scan_full_image"]}, attrs=partial.attrs).write(
        store
    )
    before = _maps(aside)
    assert stp.io.recover_store(store) == [".s.zarr.replaced"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.zarr"]
    for k, v in _maps(store).items():
        np.testing.assert_array_equal(v, before[k], err_msg=k)
    # through the command, with a failing run after it: the earlier result stays, nothing nested inside it
    shutil.move(store, aside)
    store.mkdir()
    (store / "zarr.json").write_text(
        json.dumps({"zarr_format": 3, "node_type": "group", "attributes": partial.attrs})
    )
    failing = ["--image-key", "nope"]  # fails inside the prediction, after the store was settled
    assert main([*argv, "--model", str(base / "m1"), "--out", str(store), "--overwrite", *failing]) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.zarr"]
    assert not (store / "s.zarr").exists() and not list(store.glob(".*replaced"))
    for k, v in _maps(store).items():
        np.testing.assert_array_equal(v, before[k], err_msg=k)


def test_read_st_overwrite_replaces_only_a_store_of_stpredicts_own(tmp_path, make_st_folder, capsys):
    """`stpredict read-st --out S --overwrite` deleted whatever S was (a folder, a store with the user's elements)."""
    files = make_st_folder(tmp_path / "st")
    argv = ["-q", "read-st", "--counts", str(files["counts"]), "--spots", str(files["spots"])]
    argv += ["--image", str(files["image"]), "--dataset-id", "S"]
    folder = tmp_path / "results"
    folder.mkdir()
    (folder / "notes.txt").write_text("mine")
    assert main([*argv, "--out", str(folder), "--overwrite"]) == 2
    assert (folder / "notes.txt").read_text() == "mine"
    store = tmp_path / "s.zarr"
    assert main([*argv, "--out", str(store)]) == 0
    assert main([*argv, "--out", str(store), "--overwrite"]) == 0  # its own store: replaced
    mine = _add_table(store)
    capsys.readouterr()
    assert main([*argv, "--out", str(store), "--overwrite"]) == 2
    assert "my_table" in capsys.readouterr().err
    np.testing.assert_array_equal(np.asarray(sd.read_zarr(store).tables["my_table"].X), mine)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["results", "s.zarr", "st"]


def _add_table(store) -> np.ndarray:
    import anndata as ad

    s = sd.read_zarr(store)
    s.tables["my_table"] = ad.AnnData(X=np.eye(3, dtype=np.float32))
    s.write_element("my_table")
    return np.eye(3, dtype=np.float32)


def _as_v01_store(store) -> None:
    """Turn a store of this version into one as stpredict 0.1 wrote it: no run id, H&E and footprints unregistered."""
    meta = json.loads((store / "zarr.json").read_text())
    rec = meta["attributes"]["stpredict"]
    rec["slide"].pop("run")
    rec["written"] = {
        n: {k: v for k, v in e.items() if k != "run"}
        for n, e in rec["written"].items()
        if e["by"] != "stpredict predict"
    }
    (store / "zarr.json").write_text(json.dumps(meta))


def test_overwrite_of_a_v01_store_keeps_the_users_shapes_and_later_predictions(slide, tmp_path):
    """A 0.1 store: the user's shapes, and stpredict output made later for them, survive --overwrite."""
    base, _, argv = slide
    store = tmp_path / "s.zarr"
    shutil.copytree(base / "first.zarr", store)
    mine = _add_users_elements(store)
    s = sd.read_zarr(store)
    stp.tl.aggregate(s, values="pixnet_dense", by="annotations", key_added="per_annotation")
    _as_v01_store(store)
    assert "scan_full_image" not in stp.io.written_elements(sd.read_zarr(store))
    assert main([*argv, "--model", str(base / "m2"), "--out", str(store), "--overwrite"]) == 0
    back = sd.read_zarr(store)
    _check_users_elements(store, mine)
    assert "per_annotation" in back.tables and "annotations" in back.shapes
    written = stp.io.written_elements(back)
    assert written["scan_full_image"]["by"] == "stpredict predict" and "annotations" not in written


def test_a_v01_run_killed_while_deleting_the_set_aside_store_keeps_its_result(slide, tmp_path):
    """0.1 deleted .S.replaced after a successful run: a kill then leaves the new result, whole, in S."""
    base, _, _ = slide
    store = tmp_path / "s.zarr"
    shutil.copytree(base / "first.zarr", store)  # the successful new result
    aside = tmp_path / ".s.zarr.replaced"
    shutil.copytree(base / "first.zarr", aside)
    shutil.rmtree(aside / "images")  # half deleted, zarr.json still there
    before = _maps(store)
    assert stp.io.recover_store(store) == [".s.zarr.replaced"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.zarr"]
    for k, v in _maps(store).items():
        np.testing.assert_array_equal(v, before[k], err_msg=k)


def test_a_v01_set_aside_store_is_settled_before_the_command_judges_out(slide, tmp_path, capsys):
    """0.1 killed while creating the new S: S is no slide store yet, the user's store sits in .S.replaced."""
    base, _, argv = slide
    store = tmp_path / "s.zarr"
    aside = tmp_path / ".s.zarr.replaced"
    shutil.copytree(base / "first.zarr", aside)
    store.mkdir()
    (store / "zarr.json").write_text(json.dumps({"zarr_format": 3, "node_type": "group", "attributes": {}}))
    before = _maps(aside)
    # a writer other than the command and recover_store leaves the set-aside store alone
    s = sd.read_zarr(store)
    s.path = store
    from stpredict._core._store import ElementWriter

    with ElementWriter(s, [], overwrite=False, by="test"):
        pass
    assert aside.exists()
    assert main([*argv, "--model", str(base / "m1"), "--out", str(store), "--overwrite"]) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.zarr"]
    np.testing.assert_allclose(_maps(store)["dense"], before["dense"], rtol=1e-5, atol=1e-6)


def test_a_partial_store_with_elements_added_since_is_not_swapped_back(slide, tmp_path):
    base, _, _ = slide
    store = tmp_path / "s.zarr"
    aside = tmp_path / ".s.zarr.replaced"
    shutil.copytree(base / "first.zarr", aside)
    partial = sd.read_zarr(base / "first.zarr")
    partial.attrs["stpredict"]["written"] = {}  # 0.1's new store had no predictions committed yet
    sd.SpatialData(images={"scan_full_image": partial.images["scan_full_image"]}, attrs=partial.attrs).write(
        store
    )
    _add_table(store)  # added to the partial store after the kill
    with pytest.raises(RuntimeError, match="holds more than the partial output"):
        stp.io.recover_store(store)
    assert aside.exists() and "my_table" in sd.read_zarr(store).tables
