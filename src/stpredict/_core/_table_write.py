"""Tables written as spatialdata writes them, their small parts encoded in memory (the store's fast path)."""

from __future__ import annotations

import ctypes
from pathlib import Path
from typing import Any

import numpy as np
from spatialdata import SpatialData


def _plain_key(key: Any) -> bool:
    """Whether ``key`` is a name anndata writes as a folder of its own (else the slow path, where anndata decides)."""
    return (
        isinstance(key, str)
        and key not in ("", ".", "..")
        and "/" not in key
        and "\\" not in key
        and not key.startswith(".z")
        and key != "zarr.json"
    )


def _in_memory(zarr_format: int, prefix: str, write: Any) -> dict[str, Any]:
    """The files ``write(group)`` makes under ``prefix/`` of an in-memory zarr group: relative path -> bytes-like."""
    import zarr

    files: dict[str, Any] = {}
    write(zarr.open_group(zarr.storage.MemoryStore(files), mode="w", zarr_format=zarr_format))
    n = len(prefix) + 1
    return {k[n:]: b.as_numpy_array() for k, b in files.items() if k.startswith(f"{prefix}/")}  # no copies


class _Encoder:
    """anndata's on-disk encoding of ``uns`` entries, each distinct leaf encoded once (per :func:`_write_new_store`).

    anndata writes every entry of a dict as a zarr array of its own, ~5 ms each even in memory (zarr's asynchronous
    API); the tables of one write share most of their provenance record (model, recipe, tiling, genes), so a leaf
    already encoded is not encoded again. The bytes are anndata's own.
    """

    def __init__(self, zarr_format: int) -> None:
        self.zarr_format = zarr_format
        self.cache: dict[Any, dict[str, Any]] = {}

    def _encode(self, value: Any) -> dict[str, Any]:
        import anndata as ad

        return _in_memory(self.zarr_format, "v", lambda group: ad.io.write_elem(group, "v", value))

    def files(self, value: Any) -> dict[str, Any]:
        """The files of ``value`` written under a key: paths relative to the key's folder -> their bytes."""
        if isinstance(value, dict) and all(_plain_key(k) for k in value):
            out = dict(self._cached(("dict",), {}))  # the group
            for k, v in value.items():
                out.update({f"{k}/{rel}": b for rel, b in self.files(v).items()})
            return out
        key: Any = None
        if isinstance(value, str | bool | int | float | np.generic):
            key = (type(value).__name__, value)
        elif isinstance(value, list | tuple) and all(isinstance(v, str | bool | int | float) for v in value):
            key = (type(value).__name__, tuple((type(v).__name__, v) for v in value))
        return self._encode(value) if key is None else self._cached(key, value)

    def _cached(self, key: Any, value: Any) -> dict[str, Any]:
        if key not in self.cache:
            self.cache[key] = self._encode(value)
        return self.cache[key]


def release_memory() -> None:
    """Give the memory freed by the block tasks back to the system (glibc's ``malloc_trim``; elsewhere nothing).

    Blocks are computed in dask's threads, each with its own malloc arena; what they free stays in those arenas,
    where the main thread's allocations (the tables) cannot use it, so the process's peak RSS would be the sum of
    high-water marks rather than of what is alive (as ``dask.distributed`` does on its workers).
    """
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def _write_table(tables: Path, name: str, table: Any, encoder: _Encoder) -> None:
    """Write ``table`` as spatialdata does into the ``tables`` group folder of a store, its small parts at once.

    spatialdata writes a table through anndata, which writes every column, index and ``uns`` entry as a zarr array
    of its own through zarr's asynchronous local store: ~10 ms each, ~0.6 s for a table with a provenance record
    whatever its size. Here ``obs``, ``var``, ``obsm`` and ``varm`` are encoded in memory by the same writer, ``uns``
    by ``encoder``, and written as plain files (the same files); ``X`` (possibly larger than memory, e.g. a dask
    array) is written by anndata into the store as usual. A table with ``raw``, layers or pairwise arrays (which
    may be large) is written by spatialdata as it is.
    """
    import anndata as ad
    import zarr
    from spatialdata._io.io_table import write_table

    if (
        table.raw is not None
        or any(k is not None for k in table.layers)  # anndata >= 0.13 lists X as the layer None
        or len(table.obsp)
        or len(table.varp)
        or not all(_plain_key(k) for k in table.uns)
    ):  # parts that may be large, or names anndata should judge: spatialdata's own write, into the store
        write_table(table, zarr.open_group(str(tables), mode="r+"), name)
        return
    attrs = {k: v for k, v in table.uns.items() if k == "spatialdata_attrs"}
    small = ad.AnnData(obs=table.obs, var=table.var, uns=attrs, obsm=table.obsm, varm=table.varm)
    out = _in_memory(encoder.zarr_format, name, lambda group: write_table(small, group, name))
    for key, value in table.uns.items():
        if key != "spatialdata_attrs":
            out.update({f"uns/{key}/{rel}": b for rel, b in encoder.files(value).items()})
    folder = tables / name
    for k in list(out):
        path = folder / k
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(out.pop(k))
    if table.X is not None:
        ad.io.write_elem(zarr.open_group(str(folder), mode="r+"), "X", table.X)


def _write_new_store(sdata: SpatialData, path: Path) -> None:
    """``sdata.write(path)`` into a new store (not consolidated), its tables with :func:`_write_table`."""
    import zarr

    others = SpatialData()
    for kind, name, el in sdata.gen_elements():
        if kind != "tables":
            others[name] = el
    others.write(path, consolidate_metadata=False, update_sdata_path=False)
    if sdata.tables:
        group = zarr.open_group(str(path), mode="r+")
        group.require_group("tables")
        encoder = _Encoder(3 if (path / "tables" / "zarr.json").is_file() else 2)
        release_memory()  # what the computation freed, before the tables' encodings
        for name, table in sdata.tables.items():
            _write_table(path / "tables", name, table, encoder)
