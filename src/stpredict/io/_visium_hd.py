"""Visium HD reader: spatialdata-io's reader plus the micron coordinate system and bin-id rasters."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import numpy as np
from spatialdata import SpatialData

from .. import _constants as C
from .._core._bins import bin_id_raster
from .._core._files import (
    check_dir,
    check_file,
    check_files,
    check_hdf5,
    check_image,
    check_parquet,
    read_json,
)
from .._core._mpp import add_micron_cs, micron_cs_name
from .._logging import logger
from .._types import BinsAs, check_choice
from ._utils import PathLike
from ._visium import RECOPY_OUTS

__all__ = ["read_visium_hd"]

#: ``bins_as="auto"`` reads bins smaller than this (µm) as a bin-id raster (2 µm: ~10 million bins per slide).
LABELS_BELOW_UM = 8

BIN_ID_KEY = "bin_id"  # instance key of tables annotating a bin-id raster

_IMAGE_SUFFIXES = (".tif", ".tiff", ".btf", ".jpg", ".jpeg", ".png")

_POSITIONS = ("barcode", "in_tissue", "array_row", "array_col", "pxl_row_in_fullres", "pxl_col_in_fullres")


def _find_scalefactors(path: Path) -> Path:
    candidates = sorted(path.rglob("scalefactors_json.json"))
    if not candidates:
        raise FileNotFoundError(
            f"No 'scalefactors_json.json' under {path}. Pass the Space Ranger `outs/` folder of a Visium HD run "
            "(it holds spatial/scalefactors_json.json and binned_outputs/square_*um/)."
        )
    return candidates[0]


def _bin_folders(path: Path) -> dict[int, Path]:
    """``{bin size in µm: binned_outputs/square_00Xum}``, found as spatialdata-io finds them."""
    root = path / "binned_outputs"
    if not root.is_dir():
        found = sorted(p for p in path.rglob("binned_outputs") if p.is_dir())
        root = found[-1] if found else path
    out = {}
    for d in sorted(root.iterdir()):
        if d.is_dir() and d.name.startswith("square_") and d.name.endswith("um") and d.name[7:-2].isdigit():
            out[int(d.name[7:-2])] = d
    return out


def _check_outs_files(
    path: Path,
    folders: dict[int, Path],
    sizes: list[int],
    *,
    counts_file: str,
    fullres_image_file: Path | None,
    kwargs: dict[str, Any],
) -> None:
    """Find a missing, truncated or corrupt file of the ``outs/`` folder before anything reads it.

    Checks what spatialdata-io and :func:`_read_bins_as_labels` read: ``feature_slice.h5``, per bin size the
    counts matrix, ``tissue_positions.parquet`` and ``scalefactors_json.json``, the images and the cell
    segmentation's matrix. Each check is cheap (an HDF5 superblock, a Parquet footer, a TIFF's tile offsets, a
    PNG's end chunk); the segmentation GeoJSON files are not parsed twice.
    """
    required = {}
    for size in sizes:
        required[f"{size} µm counts"] = folders[size] / counts_file
        required[f"{size} µm positions"] = folders[size] / "spatial" / "tissue_positions.parquet"
    check_files(
        required,
        "read_visium_hd",
        "\nEvery bin size read needs its counts matrix and spatial/tissue_positions.parquet; pass `bin_size=` to "
        "read the others, or copy the missing files again from Space Ranger's `outs/` folder.",
    )
    for f in sorted(path.glob("*feature_slice.h5")):
        check_hdf5(f, "The feature slice file", fix=RECOPY_OUTS)
    for size in sizes:
        check_hdf5(required[f"{size} µm counts"], "The counts matrix", fix=RECOPY_OUTS)
        check_parquet(required[f"{size} µm positions"], "The tissue positions file", fix=RECOPY_OUTS)
    for sf in path.rglob("scalefactors_json.json"):
        read_json(sf, "The scale factors file", fix=RECOPY_OUTS)
    images = [p for name in ("tissue_hires_image.png", "tissue_lowres_image.png") for p in path.rglob(name)]
    if kwargs.get("load_all_images"):
        images += [p for p in path.rglob("*cytassist_image.tif*") if p.is_file()]
    if fullres_image_file is not None:
        images.append(fullres_image_file)
    else:  # where spatialdata-io looks for it
        candidates = sorted((path / "microscope_image").glob("*")) + sorted(path.glob("*tissue_image.*"))
        images += [p for p in candidates if p.is_file() and p.suffix.lower() in _IMAGE_SUFFIXES]
    for image in images:
        check_image(image, "The image", fix=RECOPY_OUTS)
    segmented = path / "segmented_outputs"
    if (cells := segmented / "filtered_feature_cell_matrix.h5").is_file():
        check_hdf5(cells, "The cell counts matrix", fix=RECOPY_OUTS)
    if kwargs.get("load_nucleus_segmentations"):
        for f in path.rglob("*barcode_mappings.parquet"):
            check_parquet(f, "The barcode mappings file", fix=RECOPY_OUTS)


def _select_sizes(available: dict[int, Path], bin_size: int | list[int] | None) -> list[int]:
    if bin_size is None:
        return sorted(available)
    wanted = [bin_size] if isinstance(bin_size, int) else [int(b) for b in bin_size]
    if not wanted:
        return sorted(available)
    missing = [b for b in wanted if b not in available]
    if missing:
        if len(missing) == len(wanted):
            raise ValueError(f"No bins of size {wanted} µm; available: {sorted(available)} µm.")
        warnings.warn(
            f"Requested bin size(s) {missing} µm not found (available {sorted(available)} µm); ignoring them.",
            UserWarning,
            stacklevel=3,
        )
    return [b for b in wanted if b in available]


def _pixel_transformations(dataset_id: str, scalefactors: dict) -> dict[str, Any]:
    """The transformations spatialdata-io gives bins: full-res pixels and the hires/lowres image systems."""
    from spatialdata.transformations import Identity, Scale

    hi, lo = float(scalefactors["tissue_hires_scalef"]), float(scalefactors["tissue_lowres_scalef"])
    return {
        dataset_id: Identity(),
        f"{dataset_id}_downscaled_hires": Scale([hi, hi], axes=("x", "y")),
        f"{dataset_id}_downscaled_lowres": Scale([lo, lo], axes=("x", "y")),
    }


def _fit_grid(
    rows: np.ndarray, cols: np.ndarray, px: np.ndarray, py: np.ndarray, chunk: int = 1 << 21
) -> tuple[np.ndarray, float]:
    """Least-squares affine (3×3) from bin-grid cell centres ``(col + 0.5, row + 0.5)`` to full-res pixels.

    Returns the matrix and the largest residual in pixels. Computed from centred sums over slices of
    ``chunk`` bins, so ~10 million bins need a few tens of MB beyond the columns themselves.
    """
    n = rows.size
    if n < 3:
        raise ValueError("At least 3 bins are needed to place the bin grid on the image.")
    mu = np.array([cols.mean(dtype=np.float64), rows.mean(dtype=np.float64)]) + 0.5
    mp = np.array([px.mean(dtype=np.float64), py.mean(dtype=np.float64)])

    def centred(s: slice) -> tuple[np.ndarray, np.ndarray]:
        uv = np.stack([cols[s], rows[s]], axis=1).astype(np.float64) + (0.5 - mu)
        xy = np.stack([px[s], py[s]], axis=1).astype(np.float64) - mp
        return uv, xy

    G, B = np.zeros((2, 2)), np.zeros((2, 2))
    for i in range(0, n, chunk):
        uv, xy = centred(slice(i, i + chunk))
        G += uv.T @ uv
        B += uv.T @ xy
    if abs(np.linalg.det(G)) <= 1e-9 * max(1.0, float(np.trace(G))) ** 2:
        raise ValueError("The bins lie on one line of the grid: the bin grid cannot be placed on the image.")
    L = np.linalg.solve(G, B).T  # xy - mp = L @ (uv - mu)
    M = np.eye(3)
    M[:2, :2] = L
    M[:2, 2] = mp - L @ mu
    # nanopixels are far below any measurement: rounding keeps exact grids exact (no -1e-15 px bin edges)
    M[:2] = np.round(M[:2], 9) + 0.0
    residual = 0.0
    for i in range(0, n, chunk):
        s = slice(i, i + chunk)
        uv = np.stack([cols[s], rows[s]], axis=1) + 0.5
        xy = np.stack([px[s], py[s]], axis=1).astype(np.float64)
        residual = max(residual, float(np.sqrt(((uv @ M[:2, :2].T + M[:2, 2] - xy) ** 2).sum(axis=1)).max()))
    return M, residual


def _read_bins_as_labels(
    folder: Path,
    *,
    dataset_id: str,
    counts_file: str,
    transformations: dict[str, Any],
    gex_only: bool,
    anndata_kwargs: dict[str, Any],
    var_names_make_unique: bool,
) -> tuple[Any, Any, dict[str, Any]]:
    """A size's table and its bin-id raster, without one polygon per bin. Returns ``(labels, table, record)``."""
    import pandas as pd
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq
    import scanpy as sc
    from spatialdata.models import Labels2DModel, TableModel
    from spatialdata.transformations import Affine, Identity, Sequence

    name = folder.name
    labels_name = f"{dataset_id}_{name}_labels"
    adata = sc.read_10x_h5(folder / counts_file, gex_only=gex_only, **anndata_kwargs)
    positions = pq.read_table(folder / "spatial" / "tissue_positions.parquet", columns=list(_POSITIONS))
    grid_rows = positions.column("array_row").to_numpy()
    grid_cols = positions.column("array_col").to_numpy()
    if grid_rows.size == 0 or grid_rows.min() < 0 or grid_cols.min() < 0:
        raise ValueError(
            f"{folder}/spatial/tissue_positions.parquet has no bins or negative array_row/array_col."
        )
    M, residual = _fit_grid(
        grid_rows,
        grid_cols,
        positions.column("pxl_col_in_fullres").to_numpy(),
        positions.column("pxl_row_in_fullres").to_numpy(),
    )
    n_rows, n_cols = int(grid_rows.max()) + 1, int(grid_cols.max()) + 1
    del grid_rows, grid_cols
    # the table's bins in the positions file, matched in Arrow (no Python dict of ~10 million barcodes)
    pos = pc.index_in(
        pa.array(adata.obs_names.to_numpy(dtype=object), type=pa.string()), value_set=positions["barcode"]
    )
    if pos.null_count:
        missing = adata.obs_names[np.asarray(pos.is_null())][:3].tolist()
        raise ValueError(
            f"{pos.null_count} barcode(s) of {counts_file} not in tissue_positions.parquet (e.g. {missing})."
        )
    pos = pos.to_numpy(zero_copy_only=False)
    take = positions.drop_columns(["barcode"]).take(pa.array(pos))
    del positions, pos
    rows = take.column("array_row").to_numpy()
    cols = take.column("array_col").to_numpy()
    try:  # ids array_row * n_cols + array_col + 1, as predict_dense numbers its bins
        ids, raster = bin_id_raster(rows, cols, (n_rows, n_cols))
    except ValueError:
        raise ValueError(
            f"{name}: several barcodes of {counts_file} share a grid position (array_row, array_col)."
        ) from None

    # the obs spatialdata-io writes (barcodes; in_tissue, array_row, array_col; location_id; region) + the bin ids
    for col in ("in_tissue", "array_row", "array_col"):
        adata.obs[col] = take.column(col).to_numpy()
    adata.obsm["spatial"] = np.c_[
        take.column("pxl_col_in_fullres").to_numpy(), take.column("pxl_row_in_fullres").to_numpy()
    ]
    adata.obs["location_id"] = np.arange(adata.n_obs)
    adata.obs[BIN_ID_KEY] = ids
    adata.obs["region"] = pd.Categorical.from_codes(np.zeros(adata.n_obs, np.int8), categories=[labels_name])
    del take
    to_px = Affine(M, input_axes=("x", "y"), output_axes=("x", "y"))
    labels = Labels2DModel.parse(
        raster,
        dims=("y", "x"),
        transformations={
            cs: to_px if isinstance(t, Identity) else Sequence([to_px, t])
            for cs, t in transformations.items()
        },
        chunks=(min(4096, n_rows), min(4096, n_cols)),
    )
    table = TableModel.parse(adata, region=labels_name, region_key="region", instance_key=BIN_ID_KEY)
    if var_names_make_unique:
        table.var_names_make_unique()
    side = float(np.sqrt(abs(np.linalg.det(M[:2, :2]))))
    level = logger.warning if residual > 0.25 * side else logger.info
    level(
        f"{name}: bin-id raster {labels_name!r} of {n_rows} x {n_cols} bins ({table.n_obs} in the table); the grid "
        f"is placed on the image by a least-squares affine ({side:.3f} px per bin; largest residual {residual:.3g} px)."
    )
    record = {"bins_as": "labels", "labels": labels_name, "grid_max_residual_px": residual}
    return labels, table, record


def read_visium_hd(
    path: PathLike,
    *,
    dataset_id: str,
    bin_size: int | list[int] | None = None,
    bins_as: BinsAs = "auto",
    fullres_image_file: PathLike | None = None,
    filtered_counts_file: bool = True,
    **kwargs: Any,
) -> SpatialData:
    """Read a Space Ranger Visium HD ``outs/`` folder, with :func:`spatialdata_io.visium_hd` for images and shapes.

    On top of spatialdata-io's reader this adds the micron coordinate system ``"{dataset_id}_um"``
    (from ``microns_per_pixel`` in ``scalefactors_json.json``) to every element in the pixel
    system ``dataset_id``, so :func:`stpredict.pp.get_mpp` works on the full-resolution image, and
    records the pixel size in each table's ``uns["stpredict"]``.

    Bins read as labels (``bins_as``; by default the 2 µm bins, ~10 million per capture area) are not
    drawn as one polygon each: their table annotates a bin-id raster with one pixel per bin, read
    directly from ``filtered_feature_bc_matrix.h5`` and ``spatial/tissue_positions.parquet``. Raster
    pixel ``(i, j)`` is grid bin ``array_row == i``, ``array_col == j``, with id
    ``i * n_cols + j + 1`` (0: no bin in the table), and its centre ``(j + 0.5, i + 0.5)`` is placed on
    the bin centre ``(pxl_col_in_fullres, pxl_row_in_fullres)`` by an affine fitted to all bins by
    least squares (the grid is slightly rotated on the image). Such tables train models
    (:meth:`stpredict.model.PixNet.train`) exactly like shapes and spatialdata-plot draws the raster
    with ``render_labels``.

    Parameters
    ----------
    path
        The ``outs/`` folder.
    dataset_id
        Name of the dataset (element prefix and pixel coordinate system). Required so that element
        names do not depend on file names.
    bin_size
        Bin size(s) in µm to load (default: all found, e.g. 2, 8, 16). Sizes not found are ignored
        with a warning; none found is an error.
    bins_as
        ``"shapes"``: every bin a square polygon (spatialdata-io's
        ``shapes["{dataset_id}_square_00Xum"]``). ``"labels"``: a bin-id raster
        ``labels["{dataset_id}_square_00Xum_labels"]``, about 4 bytes per grid bin (≈ 45 MB for
        the 2 µm grid of a 6.5 mm capture area) instead of one polygon per bin (several GB).
        ``"auto"`` (default): labels for bins smaller than 8 µm, shapes otherwise.
    fullres_image_file
        Path to the full-resolution H&E when it is not in ``outs/microscope_image/``.
    filtered_counts_file
        Read ``filtered_feature_bc_matrix.h5`` (bins under tissue) rather than the raw matrix.
    **kwargs
        Passed to :func:`spatialdata_io.visium_hd`. ``gex_only``, ``anndata_kwargs`` and
        ``var_names_make_unique`` also apply to the bins read as labels.

    Returns
    -------
    ``images["{dataset_id}_full_image"]`` (when present) and the other images of spatialdata-io's
    reader; per bin size ``tables["square_00Xum"]`` (barcodes as ``obs_names``; obs columns
    ``in_tissue``, ``array_row``, ``array_col``, ``location_id`` and ``region``; counts in ``X``; bin
    centres in full-res pixels in ``obsm["spatial"]``), annotating ``shapes["{dataset_id}_square_00Xum"]`` or, read as
    labels, ``labels["{dataset_id}_square_00Xum_labels"]`` through ``obs["bin_id"]``. Every element
    is also in the ``"{dataset_id}_um"`` coordinate system.

    Raises
    ------
    FileNotFoundError, NotADirectoryError, IsADirectoryError
        When ``path`` or ``fullres_image_file`` does not exist or is the wrong kind (file / folder), or a bin
        size read lacks its counts matrix or ``tissue_positions.parquet``.
    ValueError
        When a file it reads is truncated or corrupt (checked before anything is read, without decoding the
        images).

    """
    from spatialdata_io import visium_hd  # heavy (imports scanpy): loaded when a Visium HD folder is read

    path = check_dir(path, "Visium HD folder", expected="the Space Ranger `outs/` folder of a Visium HD run")
    if not dataset_id:
        raise ValueError("Pass a non-empty `dataset_id` (e.g. the sample name).")
    check_choice("bins_as", bins_as, BinsAs)
    if fullres_image_file is not None:
        fullres_image_file = check_file(
            fullres_image_file, "Full-resolution image file", expected="the H&E image given to Space Ranger"
        )
    scalefactors_path = _find_scalefactors(path)
    scalefactors = read_json(scalefactors_path, "The scale factors file", fix=RECOPY_OUTS)
    if not isinstance(scalefactors, dict) or "microns_per_pixel" not in scalefactors:
        raise ValueError(
            f"{scalefactors_path} has no 'microns_per_pixel' (Space Ranger >= 3 writes it). Read the data with "
            "`spatialdata_io.visium_hd` and set the pixel size with `stpredict.pp.set_mpp`."
        )
    mpp = float(scalefactors["microns_per_pixel"])
    kwargs.setdefault("load_segmentations_only", False)
    folders: dict[int, Path] = {}
    if kwargs["load_segmentations_only"]:
        sizes: list[int] = []
    else:
        folders = _bin_folders(path)
        sizes = _select_sizes(folders, bin_size) if folders else []
    counts_file = "filtered_feature_bc_matrix.h5" if filtered_counts_file else "raw_feature_bc_matrix.h5"
    _check_outs_files(
        path, folders, sizes, counts_file=counts_file, fullres_image_file=fullres_image_file, kwargs=kwargs
    )
    as_labels = [s for s in sizes if bins_as == "labels" or (bins_as == "auto" and s < LABELS_BELOW_UM)]
    as_shapes = [s for s in sizes if s not in as_labels]
    sdata = visium_hd(
        path,
        dataset_id=dataset_id,
        bin_size=as_shapes if as_shapes else None,
        fullres_image_file=fullres_image_file,
        filtered_counts_file=filtered_counts_file,
        **{**kwargs, "load_segmentations_only": kwargs["load_segmentations_only"] or not as_shapes},
    )
    records: dict[str, dict[str, Any]] = {}
    for size in as_labels:
        labels, table, records[folders[size].name] = _read_bins_as_labels(
            folders[size],
            dataset_id=dataset_id,
            counts_file=counts_file,
            transformations=_pixel_transformations(dataset_id, scalefactors),
            gex_only=kwargs.get("gex_only", False),
            anndata_kwargs=dict(kwargs.get("anndata_kwargs", {})),
            var_names_make_unique=kwargs.get("var_names_make_unique", True),
        )
        sdata.labels[records[folders[size].name]["labels"]] = labels
        sdata.tables[folders[size].name] = table
    um_cs = add_micron_cs(sdata, dataset_id, unit_um=mpp)
    for name, table in sdata.tables.items():
        record = {"reader": "read_visium_hd", "mpp": mpp, "mpp_source": str(scalefactors_path.name)}
        record.update({"pixel_cs": dataset_id, "micron_cs": micron_cs_name(dataset_id)})
        if name.startswith("square_"):
            record["bin_size_um"] = float(name[len("square_") : -2])
            record.update(records.get(name, {"bins_as": "shapes"}))
        table.uns[C.UNS_KEY] = record
    logger.info(f"Read Visium HD {dataset_id!r} at {mpp:.4f} µm/px; micron coordinate system {um_cs!r}.")
    return sdata
