from __future__ import annotations

from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import spatialdata as sd
from spatialdata.models import TableModel

from stpredict._core import ElementWriter


def _files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _table(i: int) -> ad.AnnData:
    rng = np.random.default_rng(i)
    t = ad.AnnData(
        X=rng.normal(size=(50, 3)).astype(np.float32),
        obs=pd.DataFrame(
            {"array_row": np.arange(50), "region": pd.Categorical(["r"] * 50), "instance_id": np.arange(50)},
            index=pd.Index([f"b{j}" for j in range(50)]),
        ),
        var=pd.DataFrame(index=pd.Index(["G1", "G2", "G3"])),
    )
    t.obsm["spatial"] = rng.normal(size=(50, 2))
    shared = {"model": "PixNet", "recipe": {"target_sum": 1e4, "log1p": True}, "genes": ["G1", "G2", "G3"]}
    t.uns["stpredict"] = {
        **shared,
        "bin_um": 8 * (i + 1),
        "footprint": {"kind": "square bins", "n_bins": 50, "empty": {}},
        "values": f"table {i}",
        "weights": np.arange(4.0) * i,
        "flag": i == 0,
    }
    t.uns["other"] = {"note": "kept"}
    return TableModel.parse(t, region="r", region_key="region", instance_key="instance_id")


def test_tables_are_written_as_spatialdata_writes_them(tmp_path, monkeypatch):
    """The ElementWriter writes a table's small parts from memory and shared provenance leaves once: same files."""
    import spatialdata._io.io_table as io_table
    import zarr

    tables = {f"t{i}": _table(i) for i in range(3)}
    sd.SpatialData(tables=tables).write(tmp_path / "ref.zarr")
    s = sd.SpatialData()
    s.write(tmp_path / "s.zarr")
    s = sd.read_zarr(tmp_path / "s.zarr")
    stores = []  # spatialdata's writer is called on an in-memory group only: the fast path, X and all
    real = io_table.write_table
    monkeypatch.setattr(
        io_table, "write_table", lambda t, g, n, **k: (stores.append(g.store), real(t, g, n, **k))
    )
    with ElementWriter(s, list(tables), overwrite=False, by="test") as w:
        for n, t in tables.items():
            w.add(n, t)
    assert len(stores) == 3 and all(isinstance(st, zarr.storage.MemoryStore) for st in stores), stores
    for n in tables:
        assert _files(tmp_path / "s.zarr" / "tables" / n) == _files(tmp_path / "ref.zarr" / "tables" / n), n
        back = sd.read_zarr(tmp_path / "s.zarr").tables[n]
        assert back.uns["stpredict"]["values"] == tables[n].uns["stpredict"]["values"]
        np.testing.assert_array_equal(back.uns["stpredict"]["weights"], tables[n].uns["stpredict"]["weights"])
        np.testing.assert_array_equal(back.X, tables[n].X)
    # the objects in memory are the ones given, their uns whole
    assert s.tables["t1"] is tables["t1"] and s.tables["t1"].uns["other"] == {"note": "kept"}


def test_tables_with_raw_layers_or_odd_uns_names_are_written_by_spatialdata(tmp_path):
    """What the fast path does not encode itself (raw, layers, pairwise arrays) is written, not dropped."""
    t = _table(0)
    t.layers["counts"] = t.X * 2
    t.raw = t.copy()
    t.obsp["d"] = np.eye(50, dtype=np.float32)
    s = sd.SpatialData()
    s.write(tmp_path / "s.zarr")
    s = sd.read_zarr(tmp_path / "s.zarr")
    with ElementWriter(s, ["t"], overwrite=False, by="test") as w:
        w.add("t", t)
    back = sd.read_zarr(tmp_path / "s.zarr").tables["t"]
    np.testing.assert_array_equal(back.layers["counts"], t.layers["counts"])
    np.testing.assert_array_equal(back.raw.X, t.raw.X)
    np.testing.assert_array_equal(back.obsp["d"], t.obsp["d"])


def test_bin_names_are_row_col_strings_in_pandas_string_dtype():
    from stpredict._core._bins import bin_names

    rows, cols = np.array([0, 3, 12], dtype=np.int64), np.array([5, 0, 7], dtype=np.int32)
    names = bin_names(rows, cols)
    assert list(names) == ["0_5", "3_0", "12_7"]
    assert names.dtype == pd.Index(["a"]).dtype  # as pandas infers for names, and reads them back
    assert len(bin_names(rows[:0], cols[:0])) == 0
