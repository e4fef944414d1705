"""Write binned tables and an H&E image as a Space Ranger Visium HD ``outs/`` folder."""

from __future__ import annotations

import json
import shutil
from collections.abc import Sequence
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
from anndata import AnnData
from PIL import Image
from scipy import sparse
from spatialdata import SpatialData

from .. import _constants as C
from .._core._image import full_resolution
from .._core._mpp import get_mpp

__all__ = ["write_visium_hd_outs"]

_IDENTITY_3x3 = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0]


def _write_10x_h5(adata: AnnData, path: Path) -> None:
    """Write counts in the Cell Ranger / Space Ranger v3 HDF5 matrix format."""
    X = sparse.csr_matrix(adata.X)  # barcodes x genes == features x barcodes stored column-wise
    X.sort_indices()
    n_bins, n_genes = X.shape
    with h5py.File(path, "w") as f:
        f.attrs["filetype"] = "matrix"
        f.attrs["version"] = 2
        g = f.create_group("matrix")
        g.create_dataset("barcodes", data=np.asarray(adata.obs_names, dtype="S"))
        g.create_dataset("data", data=X.data.astype(np.int32))
        g.create_dataset("indices", data=X.indices.astype(np.int64))
        g.create_dataset("indptr", data=X.indptr.astype(np.int64))
        g.create_dataset("shape", data=np.array([n_genes, n_bins], dtype=np.int32))
        feats = g.create_group("features")
        feats.create_dataset("_all_tag_keys", data=np.array([b"genome"]))
        feats.create_dataset("feature_type", data=np.array([b"Gene Expression"] * n_genes))
        feats.create_dataset("genome", data=np.array([b"synthetic"] * n_genes))
        feats.create_dataset("id", data=np.asarray([f"SYN{i:08d}" for i in range(n_genes)], dtype="S"))
        feats.create_dataset("name", data=np.asarray(adata.var_names, dtype="S"))


#: The file that marks a folder written by ``write_visium_outs``/``write_visium_hd_outs`` (only those are replaced).
MARKER = ".stpredict-outs"


def fresh_folder(path: str | Path, overwrite: bool) -> Path:
    """``path`` as a folder about to be written: an existing one is an error unless ``overwrite`` (then removed).

    ``overwrite`` replaces only a folder that these writers wrote (it holds :data:`MARKER`, written first) or an empty
    one, never a file or another folder (a real Space Ranger ``outs/``, say). Files put into a marked folder later
    are replaced with it.
    """
    path = Path(path)
    if path.exists():
        if not overwrite:
            raise FileExistsError(f"{path} exists; pass `overwrite=True` to replace it.")
        if not path.is_dir():
            raise FileExistsError(
                f"{path} is a file; `overwrite=True` replaces only a folder this function wrote."
            )
        if any(path.iterdir()) and not (path / MARKER).is_file():
            raise FileExistsError(
                f"{path} is a folder that stpredict did not write (no {MARKER} file in it), so even "
                "`overwrite=True` does not replace it: it may be a real Space Ranger output. Choose another path."
            )
        shutil.rmtree(path)
    path.mkdir(parents=True, exist_ok=True)
    return mark_written(path)  # first: a write killed part-way leaves a folder overwrite=True may replace


def mark_written(path: Path) -> Path:
    """Mark ``path`` as a folder stpredict's ``outs/`` writers write (and ``overwrite=True`` may replace)."""
    (path / MARKER).write_text("written by stpredict.datasets; overwrite=True may replace this folder\n")
    return path


def write_visium_hd_outs(
    sdata: SpatialData,
    path: str | Path,
    *,
    image_key: str | None = None,
    tables: Sequence[str] | None = None,
    mpp: float | None = None,
    overwrite: bool = False,
) -> Path:
    """Write square-bin tables and the H&E as a minimal Space Ranger Visium HD ``outs/`` folder.

    The folder has what :func:`spatialdata_io.visium_hd` (and so
    :func:`stpredict.io.read_visium_hd`) parses: ``feature_slice.h5`` whose ``metadata_json``
    attribute holds an ``hd_layout_json``, ``spatial/scalefactors_json.json`` with
    ``microns_per_pixel``, hires/lowres PNGs, ``tissue_image.png`` (full resolution) and, per bin
    size, ``binned_outputs/square_00Xum/`` with ``filtered_feature_bc_matrix.h5`` (10x HDF5 v3),
    ``spatial/tissue_positions.parquet`` and ``spatial/scalefactors_json.json``. Useful to test
    pipelines on the synthetic slide exactly as on real Visium HD output.

    Parameters
    ----------
    sdata
        Typically :func:`stpredict.datasets.synthetic`; tables named ``square_00Xum`` with
        ``obs["array_row"/"array_col"]`` and ``obsm["spatial"]`` bin centres in image pixels.
    path
        Output folder (created).
    image_key
        The full-resolution H&E. Default: the only image ending in ``"full_image"``.
    tables
        Which ``square_*`` tables to write (default: all).
    mpp
        Pixel size; default :func:`stpredict.pp.get_mpp` of the image.
    overwrite
        Replace an existing folder.

    Returns
    -------
    The folder path.

    """
    path = fresh_folder(path, overwrite)
    if image_key is None:
        keys = [k for k in sdata.images if k.endswith("full_image")]
        if len(keys) != 1:
            raise ValueError(f"Pass `image_key=`; images ending in 'full_image': {keys}.")
        image_key = keys[0]
    mpp = get_mpp(sdata, image_key) if mpp is None else float(mpp)
    tables = [t for t in sdata.tables if t.startswith("square_")] if tables is None else list(tables)
    if not tables:
        raise ValueError("No square-bin table (named 'square_00Xum') to write.")

    data = full_resolution(sdata.images[image_key])
    rgb = np.moveaxis(np.asarray(data.transpose("c", "y", "x").values), 0, -1)
    hires_scalef, lowres_scalef = 0.25, 0.0625
    spatial = path / "spatial"
    spatial.mkdir(parents=True)
    Image.fromarray(rgb).save(path / "tissue_image.png")
    for name, f in (("tissue_hires_image.png", hires_scalef), ("tissue_lowres_image.png", lowres_scalef)):
        im = Image.fromarray(rgb)
        im.resize((max(1, round(im.width * f)), max(1, round(im.height * f))), Image.Resampling.BOX).save(
            spatial / name
        )
    base_sf = {
        "tissue_hires_scalef": hires_scalef,
        "tissue_lowres_scalef": lowres_scalef,
        "microns_per_pixel": mpp,
        "regist_target_img_scalef": hires_scalef,
    }
    (spatial / "scalefactors_json.json").write_text(
        json.dumps(
            {
                **base_sf,
                "spot_diameter_fullres": 2.0 / mpp,
                "bin_size_um": 2.0,
                "fiducial_diameter_fullres": 0.0,
            }
        )
    )
    metadata = {
        "hd_layout_json": json.dumps({"file_format": "1.0", "transform": _IDENTITY_3x3}),
        "transform_matrices": {
            k: _IDENTITY_3x3
            for k in (
                "cytassist_colrow_to_spot_colrow",
                "spot_colrow_to_cytassist_colrow",
                "microscope_colrow_to_spot_colrow",
                "spot_colrow_to_microscope_colrow",
            )
        },
    }
    with h5py.File(path / "feature_slice.h5", "w") as f:
        f.attrs["metadata_json"] = json.dumps(metadata)

    for name in tables:
        adata = sdata.tables[name]
        bin_um = float(name[len("square_") : -2])
        bdir = path / "binned_outputs" / name
        (bdir / "spatial").mkdir(parents=True)
        _write_10x_h5(adata, bdir / "filtered_feature_bc_matrix.h5")
        xy = np.asarray(adata.obsm[C.SPATIAL_KEY], dtype=float)
        pd.DataFrame(
            {
                "barcode": np.asarray(adata.obs_names),
                "in_tissue": np.ones(adata.n_obs, dtype=np.int32),
                "array_row": adata.obs["array_row"].to_numpy(np.int64),
                "array_col": adata.obs["array_col"].to_numpy(np.int64),
                "pxl_row_in_fullres": xy[:, 1],
                "pxl_col_in_fullres": xy[:, 0],
            }
        ).to_parquet(bdir / "spatial" / "tissue_positions.parquet", index=False)
        (bdir / "spatial" / "scalefactors_json.json").write_text(
            json.dumps({**base_sf, "spot_diameter_fullres": bin_um / mpp, "bin_size_um": bin_um})
        )
    return path
