"""One table of a SpatialData zarr store with its ``X`` left on disk."""

from __future__ import annotations

import anndata as ad
import zarr

from .._core._files import check_dir
from ._utils import PathLike

__all__ = ["read_table"]


def read_table(path: PathLike, name: str, *, lazy: bool = True) -> ad.AnnData:
    """Read one table of a SpatialData zarr store, with ``X`` as a dask array read from disk.

    :func:`spatialdata.read_zarr` loads every table's ``X`` into memory; the 2 µm bins of a whole Visium HD capture
    area (~10.6 million × 250 genes) are ~10 GB of float32. This reads ``obs``, ``var``, ``obsm`` and ``uns`` as
    usual and ``X`` (and every layer) lazily, chunk by chunk, so scanpy functions that accept dask arrays, slicing
    and reductions read only what they need.

    Parameters
    ----------
    path
        The zarr store (``.zarr`` folder) of a SpatialData.
    name
        Table name, e.g. ``"pixnet_square_002um"``.
    lazy
        ``False``: read ``X`` into memory as well (as :func:`spatialdata.read_zarr` does).

    Returns
    -------
    The table as :class:`~anndata.AnnData` (``X`` a :class:`dask.array.Array` when ``lazy``), with its spatialdata
    annotation (``uns["spatialdata_attrs"]``) as written.

    Raises
    ------
    FileNotFoundError
        When ``path`` does not exist (the message suggests near names: a typo is not "no tables").
    NotADirectoryError
        When ``path`` is a file.
    ValueError
        When ``path`` is a folder without zarr metadata.
    KeyError
        When the store has no table ``name`` (the message lists its tables).

    Examples
    --------
    ::

        bins = stp.io.read_table("slide.zarr", "pixnet_square_002um")
        bins.X[:, bins.var_names.get_loc("ERBB2")].mean().compute()

    """
    path = check_dir(path, "SpatialData zarr store", expected="a `.zarr` folder written by SpatialData.write")
    if not ((path / "zarr.json").is_file() or (path / ".zgroup").is_file()):
        raise ValueError(
            f"{str(path)!r} is a folder without zarr metadata (zarr.json), not a SpatialData zarr store. Pass the "
            "`.zarr` folder written by `SpatialData.write`."
        )
    group_path = path / "tables" / name
    if not group_path.is_dir():
        tables = (
            sorted(p.name for p in (path / "tables").iterdir() if p.is_dir())
            if (path / "tables").is_dir()
            else []
        )
        raise KeyError(f"No table {name!r} in the store {path}; its tables: {tables}.")
    group = zarr.open_group(str(group_path), mode="r")
    if not lazy:
        return ad.io.read_elem(group)
    keys = set(group.keys())
    parts = {
        k: ad.io.read_elem(group[k])
        for k in ("obs", "var", "obsm", "varm", "obsp", "varp", "uns")
        if k in keys
    }
    X = ad.experimental.read_elem_lazy(group["X"]) if "X" in keys else None
    layers = (
        {k: ad.experimental.read_elem_lazy(group["layers"][k]) for k in group["layers"]}
        if "layers" in keys
        else None
    )
    return ad.AnnData(X=X, layers=layers, **parts)
