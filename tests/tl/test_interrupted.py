"""Killed runs (SIGKILL, in a subprocess) and failed overwrites never lose or corrupt a zarr store."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import spatialdata as sd

import stpredict as stp

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="SIGKILL is POSIX")

SMALL = {"encoder": "resnet18", "decoder_channels": 16, "train_mpp": 2.0, "tile_size": 128}

# Runs predict_dense(overwrite=True) on the store and SIGKILLs itself at one point of the write.
DRIVER = textwrap.dedent(
    """
    import os, signal, sys
    import spatialdata as sd
    import stpredict as stp

    store, ckpt, point = sys.argv[1], sys.argv[2], sys.argv[3]

    def die(*args, **kwargs):
        os.kill(os.getpid(), signal.SIGKILL)

    def kill_on_call(module, name, n=1, after=False):
        real = getattr(module, name)
        calls = {"n": 0}

        def wrapper(*args, **kwargs):
            calls["n"] += 1
            if calls["n"] == n and not after:
                die()
            out = real(*args, **kwargs)
            if calls["n"] == n and after:
                die()
            return out

        setattr(module, name, wrapper)

    if point == "map":  # while the dense map is being computed (second block)
        from stpredict.model._dense import DenseEngine
        kill_on_call(DenseEngine, "block", n=2)
    elif point == "table":  # a table's data written, its spatialdata attributes not yet
        import spatialdata._io.io_table as io_table
        kill_on_call(io_table, "write_adata", n=2, after=True)
    elif point == "between":  # the map and a table written, the next shapes element not started
        import spatialdata._io as sdio
        kill_on_call(sdio, "write_shapes", n=2)
    elif point == "swap":  # after the commit point: the first old element moved out, nothing moved in
        import stpredict._core._store as store_mod
        kill_on_call(store_mod.os, "rename", n=1, after=True)
    else:
        raise SystemExit(f"unknown point {point}")

    sdata = sd.read_zarr(store)
    model = stp.model.load(ckpt)
    stp.tl.predict_dense(
        sdata, model, bins_um=(8, 16), shapes=["visium"], chunk_size=128, overwrite=True, progress=False
    )
    print("NOT KILLED")
    """
)


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    """A store with the H&E, measured spots and an earlier prediction, and a checkpoint on disk."""
    torch = pytest.importorskip("torch")
    base = tmp_path_factory.mktemp("interrupted")
    slide = stp.datasets.synthetic(
        width_um=640, height_um=512, n_genes=6, seed=2, bins_um=(16,), st_spots=False
    )
    sdata = sd.SpatialData(
        images={"he": slide["synthetic_full_image"]},
        shapes={"visium": slide["synthetic_visium_spots"]},
    )
    measured = slide.tables["visium_spots"].copy()  # the measured spots, re-linked to the shapes "visium"
    measured.obs["region"] = measured.obs["region"].cat.rename_categories(["visium"])
    measured.uns["spatialdata_attrs"]["region"] = "visium"
    sdata.tables["measured"] = measured
    torch.manual_seed(0)
    model = stp.model.PixNet(list(slide.tables["visium_spots"].var_names[:4]), **SMALL)
    ckpt = model.save(base / "ckpt")
    sdata.write(base / "original.zarr")
    sdata = sd.read_zarr(base / "original.zarr")
    stp.tl.predict_dense(sdata, model, bins_um=(16,), shapes=["visium"], chunk_size=128, progress=False)
    (base / "driver.py").write_text(DRIVER)
    return base, ckpt, model


def _dense(X) -> np.ndarray:
    return np.asarray(X.toarray() if hasattr(X, "toarray") else X)


def _snapshot(s: sd.SpatialData) -> dict[str, np.ndarray]:
    return {
        "he": np.asarray(s.images["he"]["scale0"].image),
        "measured": _dense(s.tables["measured"].X),
        "pixnet_square_016um": np.asarray(s.tables["pixnet_square_016um"].X),
        "pixnet_visium": np.asarray(s.tables["pixnet_visium"].X),
        "pixnet_dense": np.asarray(s.images["pixnet_dense"]["scale0"].image),
    }


@pytest.mark.parametrize("point", ["map", "table", "between", "swap"])
def test_sigkill_leaves_a_readable_store_and_a_rerun_cleans_up(prepared, tmp_path, point):
    base, ckpt, model = prepared
    work = tmp_path / "run"
    work.mkdir()
    store = work / "s.zarr"
    shutil.copytree(base / "original.zarr", store)
    before = _snapshot(sd.read_zarr(store))

    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, str(base / "driver.py"), str(store), str(ckpt), point],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert proc.returncode == -signal.SIGKILL, (
        f"not killed at {point!r}: {proc.stdout[-500:]} {proc.stderr[-2000:]}"
    )

    # the store opens with plain spatialdata, and nothing was left next to it
    killed = sd.read_zarr(store)
    assert sorted(p.name for p in work.iterdir()) == ["s.zarr"]
    if point != "swap":
        # killed before the commit point: every earlier element intact, nothing new visible
        after = _snapshot(killed)
        for k, v in before.items():
            np.testing.assert_array_equal(after[k], v, err_msg=k)
        assert "pixnet_square_008um" not in killed.tables
    else:
        # killed after the commit point: the H&E and the measured data untouched; the rest rolls forward
        np.testing.assert_array_equal(np.asarray(killed.images["he"]["scale0"].image), before["he"])
        assert "measured" in killed.tables

    # a re-run (as a user would: read, predict with overwrite) succeeds and cleans up what the kill left
    s = sd.read_zarr(store)
    stp.tl.predict_dense(
        s, model, bins_um=(8, 16), shapes=["visium"], chunk_size=128, overwrite=True, progress=False
    )
    assert not list((store / ".stpredict").glob("tx-*"))
    back = sd.read_zarr(store)
    assert {"pixnet_square_008um", "pixnet_square_016um", "pixnet_visium", "measured"} <= set(back.tables)
    np.testing.assert_array_equal(np.asarray(back.images["he"]["scale0"].image), before["he"])
    np.testing.assert_allclose(np.asarray(back.tables["pixnet_visium"].X), before["pixnet_visium"], rtol=1e-5)


def test_recover_store_rolls_a_committed_write_forward(prepared, tmp_path):
    base, ckpt, _ = prepared
    store = tmp_path / "s.zarr"
    shutil.copytree(base / "original.zarr", store)
    proc = subprocess.run(
        [sys.executable, str(base / "driver.py"), str(store), str(ckpt), "swap"],
        capture_output=True,
        text=True,
        env={**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"},
        timeout=300,
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    assert len(list((store / ".stpredict").glob("tx-*"))) == 1
    done = stp.io.recover_store(store)
    assert len(done) == 1 and not list((store / ".stpredict").glob("tx-*"))
    back = sd.read_zarr(store)
    assert {"pixnet_square_008um", "pixnet_square_016um", "pixnet_visium", "measured"} <= set(back.tables)
    assert "pixnet_square_008um" in stp.io.written_elements(back)
    assert stp.io.recover_store(store) == []


def _failing_device_call(s, model):
    stp.tl.predict_dense(
        s, model, bins_um=(16,), shapes=["visium"], overwrite=True, device="cuda:7", progress=False
    )


def test_failed_overwrite_keeps_the_previous_results(prepared, tmp_path, monkeypatch):
    """Issue: overwrite=True with a device that fails deleted the previous map, bins and spots table."""
    base, _, model = prepared
    store = tmp_path / "s.zarr"
    shutil.copytree(base / "original.zarr", store)
    s = sd.read_zarr(store)
    before = _snapshot(s)
    with pytest.raises((RuntimeError, ValueError, AssertionError)):
        _failing_device_call(s, model)
    import stpredict.model._dense as dense_mod

    def oom(*args, **kwargs):
        raise MemoryError("simulated out of memory")

    monkeypatch.setattr(dense_mod.DenseEngine, "block", oom)
    with pytest.raises(MemoryError):
        stp.tl.predict_dense(s, model, bins_um=(16,), shapes=["visium"], overwrite=True, progress=False)
    for snap in (_snapshot(s), _snapshot(sd.read_zarr(store))):
        for k, v in before.items():
            np.testing.assert_array_equal(snap[k], v, err_msg=k)
    assert not list((store / ".stpredict").glob("tx-*"))


def test_overwrite_never_replaces_elements_stpredict_did_not_write(prepared, tmp_path):
    """Issue: key_added colliding with the user's measured elements replaced them with overwrite=True."""
    base, _, model = prepared
    store = tmp_path / "s.zarr"
    shutil.copytree(base / "original.zarr", store)
    s = sd.read_zarr(store)
    s.tables["mine_square_016um"] = s.tables["measured"].copy()  # a user table named like an output
    with pytest.raises(ValueError, match="not written by stpredict"):
        stp.tl.predict_dense(s, model, key_added="mine", bins_um=(16,), overwrite=True, progress=False)
    assert "mine_square_016um" in s.tables and "mine_dense" not in s.images
    with pytest.raises(ValueError, match="not written by stpredict"):
        stp.tl.aggregate(s, values="pixnet_dense", by="visium", key_added="measured", overwrite=True)
    np.testing.assert_array_equal(
        _dense(sd.read_zarr(store).tables["measured"].X), _dense(s.tables["measured"].X)
    )
    # an element that stpredict wrote is replaced with overwrite=True
    stp.tl.aggregate(s, values="pixnet_dense", by="visium", key_added="agg")
    stp.tl.aggregate(s, values="pixnet_dense", by="visium", key_added="agg", overwrite=True)
    assert stp.io.written_elements(s)["agg"]["by"] == "tl.aggregate"
    assert "agg" in sd.read_zarr(store).tables


def test_in_memory_scratch_of_dead_processes_is_swept(tmp_path, monkeypatch):
    import tempfile

    from stpredict._core import _store

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    dead = tmp_path / "stpredict-dead"
    dead.mkdir()
    proc = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    (dead / "owner.json").write_text(f'{{"pid": {int(proc.stdout)}, "host": "{socket.gethostname()}"}}')
    alive = tmp_path / "stpredict-alive"
    alive.mkdir()
    (alive / "owner.json").write_text(f'{{"pid": {os.getpid()}, "host": "{socket.gethostname()}"}}')
    new = _store.scratch_dir()
    assert not dead.exists() and alive.exists() and new.exists() and Path(new).parent == tmp_path


def test_recover_store_names_a_misspelt_path_or_what_is_not_a_store(tmp_path):
    """Issue: recover_store on a misspelt path returned [] ("nothing to recover")."""
    with pytest.raises(FileNotFoundError, match="does not exist"):
        stp.io.recover_store(tmp_path / "mistyped.zarr")
    (tmp_path / "file.zarr").write_text("x")
    with pytest.raises(ValueError, match="is a file, not a SpatialData zarr store"):
        stp.io.recover_store(tmp_path / "file.zarr")
    (tmp_path / "folder").mkdir()
    with pytest.raises(ValueError, match="without zarr metadata"):
        stp.io.recover_store(tmp_path / "folder")


def test_overwrite_checks_the_store_on_disk_not_only_the_object(prepared, tmp_path):
    """An element another session added to the store (not in this object) is never replaced either."""
    base, _, model = prepared
    store = tmp_path / "s.zarr"
    shutil.copytree(base / "original.zarr", store)
    s = sd.read_zarr(store)  # this session's object
    other = sd.read_zarr(store)  # another session adds its own table under a name the next call writes
    other.tables["mine_square_016um"] = other.tables["measured"].copy()
    other.write_element("mine_square_016um")
    assert "mine_square_016um" not in s.tables
    with pytest.raises(ValueError, match="not written by stpredict"):
        stp.tl.predict_dense(s, model, key_added="mine", bins_um=(16,), overwrite=True, progress=False)
    np.testing.assert_array_equal(
        _dense(sd.read_zarr(store).tables["mine_square_016um"].X), _dense(s.tables["measured"].X)
    )
