"""One table of a SpatialData zarr store with its ``X`` left on disk."""

from __future__ import annotations

import anndata as ad
import zarr

from .._core._files import check_dir
from ._utils import PathLike

__all__ = ["read_table"]


def read_table(path: PathLike, name: str, *, lazy: bool = True) -> ad.AnnData:
    """Read one table of a SpatialData zarr store, with ``X`` as a dask array read from disk.

    A table of bins one map pixel wide (the 2 µm bins of a 2 µm map from :func:`stpredict.tl.predict_dense`) stores
    no ``X`` of its own: its values are the map's pixels, and this reads ``X`` from the map
    (``uns["stpredict"]["X"]["map"]``), chunk by chunk (of a latent map, through its head: the genes).

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
        table = ad.io.read_elem(group)
        if table.X is None and (X := _x_from_map(path, {"uns": table.uns, "obs": table.obs})) is not None:
            table.X = X.compute()
        return table
    keys = set(group.keys())
    parts = {
        k: ad.io.read_elem(group[k])
        for k in ("obs", "var", "obsm", "varm", "obsp", "varp", "uns")
        if k in keys
    }
    X = ad.experimental.read_elem_lazy(group["X"]) if "X" in keys else _x_from_map(path, parts)
    layers = (
        {k: ad.experimental.read_elem_lazy(group["layers"][k]) for k in group["layers"]}
        if "layers" in keys
        else None
    )
    return ad.AnnData(X=X, layers=layers, **parts)


def _x_from_map(path, parts: dict):
    """``X`` of a table whose rows are pixels of a stored map (``uns["stpredict"]["X"]["map"]``), lazily; else None."""
    import dask.array as da

    from .._core._aggregate import map_pixel_values
    from .._core._image import level_paths
    from .._core._latent import apply_head, read_head

    src = (parts.get("uns") or {}).get("stpredict", {}).get("X", {})
    name = src.get("map") if isinstance(src, dict) else None
    if name is None:
        return None
    element = path / "images" / name
    if not element.is_dir():
        raise KeyError(
            f"The table's values are the pixels of the map {name!r}, which is not in the store {path} any more."
        )
    obs = parts["obs"]
    X = map_pixel_values(
        da.from_zarr(level_paths(element)[0]), obs["array_row"].to_numpy(), obs["array_col"].to_numpy()
    )
    head = read_head(path, name)  # a latent map: the genes are its linear head
    return X if head is None else apply_head(X, *head[:2])
