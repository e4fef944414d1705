"""Write a spot table and an H&E image as a Space Ranger (standard, 55 µm spot) Visium ``outs/`` folder."""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import tifffile
from anndata import AnnData
from PIL import Image
from scipy import sparse
from spatialdata import SpatialData

from .. import _constants as C
from .._core._image import full_resolution
from .._core._mpp import get_mpp
from ._visium_hd_outs import _write_10x_h5, fresh_folder

__all__ = ["write_visium_outs"]

#: Name of the full-resolution TIFF written next to ``spatial/`` (Space Ranger takes it as an input; it is not
#: part of a real ``outs/`` folder). Pass it to :func:`stpredict.io.read_visium` as ``fullres_image_file``.
FULLRES_IMAGE_FILE = "tissue_image.tif"

# 10x defines ``spot_diameter_fullres`` as the pixels spanning "a theoretical 65µm spot" (Space Ranger docs,
# https://support.10xgenomics.com/spatial-gene-expression/software/pipelines/1.3/output/images), i.e. the 55 µm
# spot plus margin. In 10x's example file fiducial_diameter_fullres / spot_diameter_fullres = 144.4773 / 89.4383
# = 21/13, so the fiducial diameter is written as 105 µm on the same scale.
_SPOT_DIAMETER_FULLRES_UM = 65.0
_FIDUCIAL_DIAMETER_FULLRES_UM = 105.0


def _barcodes(rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """Unique 10x-style barcodes (16 nt + ``-1``), a deterministic bijection of the array position."""
    key = (rows.astype(np.uint64) << np.uint64(16)) | cols.astype(np.uint64)
    # odd multiplier then xor: both bijective mod 2**32
    v = ((key * np.uint64(2654435761)) & np.uint64(0xFFFFFFFF)) ^ np.uint64(0x5A3C96E1)
    digits = (v[:, None] >> (np.uint64(2) * np.arange(15, -1, -1, dtype=np.uint64))) & np.uint64(3)
    letters = np.array(list("ACGT"))[digits.astype(np.int64)]
    return np.array(["".join(row) + "-1" for row in letters])


def _grid_fit(array_cols: np.ndarray, array_rows: np.ndarray, xy: np.ndarray) -> np.ndarray:
    """Least-squares affine map ``[array_col, array_row, 1] -> (x, y)`` (3 x 2)."""
    design = np.c_[array_cols, array_rows, np.ones(len(array_cols))]
    if np.linalg.matrix_rank(design) < 3:
        raise ValueError(
            "The spot table's array coordinates do not span a grid (fewer than three spots not on one line); "
            "cannot lay out the Visium spot array."
        )
    coef, *_ = np.linalg.lstsq(design, xy, rcond=None)
    return coef


def write_visium_outs(
    sdata: SpatialData,
    path: str | Path,
    *,
    table: str = C.VISIUM_SPOTS_KEY,
    image_key: str | None = None,
    mpp: float | None = None,
    fullres_image: bool = True,
    hires_scalef: float = 0.25,
    lowres_scalef: float = 0.0625,
    library_id: str = "synthetic",
    overwrite: bool = False,
) -> Path:
    """Write a spot table and the H&E as a minimal Space Ranger (v2 layout) Visium ``outs/`` folder.

    The folder has what :func:`spatialdata_io.visium` (and so :func:`stpredict.io.read_visium`)
    parses, in the formats Space Ranger writes:

    - ``filtered_feature_bc_matrix.h5``: the spots' counts in the 10x HDF5 (v3) matrix format, with
      10x-style barcodes (``"ACGT…-1"``, a fixed function of the array position);
    - ``spatial/tissue_positions.csv`` (with header ``barcode, in_tissue, array_row, array_col,
      pxl_row_in_fullres, pxl_col_in_fullres``): every position of the spot array whose centre lies
      on the image, ``in_tissue = 1`` for the spots of ``table`` and 0 for the others, as Space
      Ranger lists all spots of the capture area; pixel positions are written as floats;
    - ``spatial/scalefactors_json.json``: ``spot_diameter_fullres`` = 65 µm / ``mpp`` (10x defines it
      as the diameter of a theoretical 65 µm spot, not the 55 µm spot), ``fiducial_diameter_fullres``,
      ``tissue_hires_scalef`` and ``tissue_lowres_scalef``;
    - ``spatial/tissue_hires_image.png`` and ``spatial/tissue_lowres_image.png``: box-filtered
      downsampled copies of the H&E;
    - ``tissue_image.tif`` (with ``fullres_image=True``): the full-resolution H&E, the image Space
      Ranger takes as input; pass it to :func:`~stpredict.io.read_visium` as ``fullres_image_file``.

    Useful to test pipelines on the synthetic slide exactly as on real Visium output.

    Parameters
    ----------
    sdata
        Typically :func:`stpredict.datasets.synthetic`, whose ``"visium_spots"`` table lies on the
        Visium hexagonal array (``array_col`` steps of 2 = 100 µm along a row, rows 100·√3/2 µm apart,
        ``array_row + array_col`` even).
    path
        Output folder (created).
    table
        The spot table: raw counts in ``X``, ``obs["array_row"/"array_col"]`` and spot centres
        ``(x, y)`` in full-resolution image pixels in ``obsm["spatial"]``.
    image_key
        The full-resolution H&E. Default: the only image ending in ``"full_image"``.
    mpp
        Pixel size; default :func:`stpredict.pp.get_mpp` of the image.
    fullres_image
        Also write the full-resolution H&E as ``tissue_image.tif``.
    hires_scalef, lowres_scalef
        Downsampling factors of the PNGs. Space Ranger picks them so that the PNGs are 2000 and
        600 px on their longest side; fixed factors keep them smaller than a small synthetic slide.
    library_id
        Written to the HDF5 file's ``library_ids`` attribute.
    overwrite
        Replace an existing folder.

    Returns
    -------
    The folder path.

    """
    path = fresh_folder(path, overwrite)
    if table not in sdata.tables:
        raise KeyError(f"Table {table!r} not found; available tables: {list(sdata.tables)}.")
    if image_key is None:
        keys = [k for k in sdata.images if k.endswith("full_image")]
        if len(keys) != 1:
            raise ValueError(f"Pass `image_key=`; images ending in 'full_image': {keys}.")
        image_key = keys[0]
    mpp = get_mpp(sdata, image_key) if mpp is None else float(mpp)
    for name, f in (("hires_scalef", hires_scalef), ("lowres_scalef", lowres_scalef)):
        if not 0 < f <= 1:
            raise ValueError(f"`{name}` must be in (0, 1], got {f!r}.")
    adata = sdata.tables[table]
    missing = [c for c in ("array_row", "array_col") if c not in adata.obs]
    if missing or C.SPATIAL_KEY not in adata.obsm:
        raise ValueError(
            f"Table {table!r} needs obs['array_row'], obs['array_col'] and obsm['spatial'] (spot centres in image "
            "pixels) to be written as a Visium spot array."
        )

    data = full_resolution(sdata.images[image_key])
    rgb = np.ascontiguousarray(np.moveaxis(np.asarray(data.transpose("c", "y", "x").values), 0, -1))
    height, width = rgb.shape[:2]

    # the whole spot array on the image: the table's spots plus the positions around them (in_tissue = 0)
    rows = adata.obs["array_row"].to_numpy(np.int64)
    cols = adata.obs["array_col"].to_numpy(np.int64)
    xy = np.asarray(adata.obsm[C.SPATIAL_KEY], dtype=float)
    coef = _grid_fit(cols, rows, xy)
    parity = int((rows[0] + cols[0]) % 2)
    corners = np.array([[0, 0], [width, 0], [0, height], [width, height]], dtype=float)
    inv = np.linalg.inv(coef[:2].T)  # (x, y) - t -> (col, row)
    grid = (corners - coef[2]) @ inv.T
    c_all, r_all = np.meshgrid(
        np.arange(max(0, int(np.floor(grid[:, 0].min()))), int(np.ceil(grid[:, 0].max())) + 1),
        np.arange(max(0, int(np.floor(grid[:, 1].min()))), int(np.ceil(grid[:, 1].max())) + 1),
    )
    c_all, r_all = c_all.ravel(), r_all.ravel()
    on_grid = (r_all + c_all) % 2 == parity
    c_all, r_all = c_all[on_grid], r_all[on_grid]
    xy_all = np.c_[c_all, r_all, np.ones(len(c_all))] @ coef
    on_image = (xy_all[:, 0] >= 0) & (xy_all[:, 0] < width) & (xy_all[:, 1] >= 0) & (xy_all[:, 1] < height)
    c_all, r_all, xy_all = c_all[on_image], r_all[on_image], xy_all[on_image]
    measured = pd.MultiIndex.from_arrays([rows, cols])
    if not measured.is_unique:
        raise ValueError(f"Table {table!r} has several spots at the same array position.")
    others = ~pd.MultiIndex.from_arrays([r_all, c_all]).isin(measured)
    r_out = np.r_[rows, r_all[others]]
    c_out = np.r_[cols, c_all[others]]
    xy_out = np.r_[xy, xy_all[others]]  # the table's own centres, exactly
    positions = pd.DataFrame(
        {
            "barcode": _barcodes(r_out, c_out),
            "in_tissue": np.r_[np.ones(len(rows), np.int64), np.zeros(int(others.sum()), np.int64)],
            "array_row": r_out,
            "array_col": c_out,
            "pxl_row_in_fullres": xy_out[:, 1],
            "pxl_col_in_fullres": xy_out[:, 0],
        }
    ).sort_values(["array_row", "array_col"], kind="stable")

    spatial = path / "spatial"
    spatial.mkdir(parents=True)
    positions.to_csv(spatial / "tissue_positions.csv", index=False)

    # counts: barcodes sorted as in Space Ranger's matrices
    barcodes = _barcodes(rows, cols)
    order = np.argsort(barcodes, kind="stable")
    counts = AnnData(
        X=sparse.csr_matrix(adata.X)[order],
        obs=pd.DataFrame(index=pd.Index(barcodes[order])),
        var=pd.DataFrame(index=pd.Index(adata.var_names)),
    )
    _write_10x_h5(counts, path / "filtered_feature_bc_matrix.h5")
    with h5py.File(path / "filtered_feature_bc_matrix.h5", "a") as f:
        f.attrs["library_ids"] = np.array([library_id.encode()])
        f.attrs["chemistry_description"] = "Spatial 3' v1"

    (spatial / "scalefactors_json.json").write_text(
        json.dumps(
            {
                "tissue_hires_scalef": float(hires_scalef),
                "tissue_lowres_scalef": float(lowres_scalef),
                "fiducial_diameter_fullres": _FIDUCIAL_DIAMETER_FULLRES_UM / mpp,
                "spot_diameter_fullres": _SPOT_DIAMETER_FULLRES_UM / mpp,
            }
        )
    )
    im = Image.fromarray(rgb)
    for name, f in (("tissue_hires_image.png", hires_scalef), ("tissue_lowres_image.png", lowres_scalef)):
        size = (max(1, round(width * f)), max(1, round(height * f)))
        im.resize(size, Image.Resampling.BOX).save(spatial / name)
    if fullres_image:
        tifffile.imwrite(path / FULLRES_IMAGE_FILE, rgb, photometric="rgb")
    return path
