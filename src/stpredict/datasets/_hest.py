"""HEST-1k samples: a local loader (no downloads) and a writer of faithful small samples for tests."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any, Literal

import anndata as ad
import numpy as np
import pandas as pd
from PIL import Image
from scipy import sparse
from spatialdata import SpatialData
from spatialdata.models import get_table_keys

from .. import _constants as C
from .._core._files import check_files
from .._core._image import default_image_key, full_resolution
from .._core._mpp import get_mpp
from .._core._validate import check_mpp_value, check_name
from ..io._hest import HEST_TECHNOLOGIES, hest_files, read_hest
from ._her2st import local_dir
from ._slide import write_slide
from ._visium_outs import _barcodes

__all__ = ["hest", "hest_dir", "write_hest_sample"]

_ENV = "STPREDICT_HEST_DIR"
#: Longest side of the thumbnail HEST stores in ``uns["spatial"]["ST"]["images"]["downscaled_fullres"]``
#: (``register_downscale_img(..., target_size=1000)`` in hest/utils.py).
_THUMBNAIL_PX = 1000

HestTechnology = Literal["Visium", "Spatial Transcriptomics", "Visium HD", "Xenium"]


def hest_dir(data_dir: str | os.PathLike | None = None) -> Path:
    """The HEST folder (the one holding ``wsis/``, ``st/`` and ``metadata/``).

    Resolution order: ``data_dir``; the ``STPREDICT_HEST_DIR`` environment variable;
    ``settings.datasetdir / "hest"``.

    Parameters
    ----------
    data_dir
        An explicit folder (returned as is).

    """
    return local_dir(data_dir, _ENV, "hest")


def hest(sample_id: str, *, data_dir: str | os.PathLike | None = None, **kwargs: Any) -> SpatialData:
    """Load one HEST-1k sample from a local HEST folder; nothing is downloaded.

    HEST-1k (Jaume et al., NeurIPS 2024; https://github.com/mahmoodlab/HEST) is on the Hugging Face
    Hub as ``MahmoodLab/hest`` (gated, CC BY-NC-SA 4.0). Download the samples you need with the HEST
    tools (``snapshot_download(..., allow_patterns=[f"*{id}[_.]**"])``), then point ``data_dir`` or
    ``STPREDICT_HEST_DIR`` at the folder. Cite the paper when you use the data.

    Parameters
    ----------
    sample_id
        The sample id, e.g. ``"TENX95"``; also the default ``dataset_id``.
    data_dir
        The HEST folder. Default: ``$STPREDICT_HEST_DIR``, else ``settings.datasetdir / "hest"``.
    **kwargs
        Passed to :func:`stpredict.io.read_hest` (``mpp=``, ``dataset_id=``, ...).

    Returns
    -------
    The sample as returned by :func:`stpredict.io.read_hest`: ``images["{id}_full_image"]``,
    ``shapes["{id}_spots"]`` and ``tables["spots"]``.

    """
    root = hest_dir(data_dir)
    sample_id = check_name("sample_id", sample_id)
    st = root / "st"
    found = sorted(p.stem for p in st.glob("*.h5ad")) if st.is_dir() else []
    if found:
        more = f", … ({len(found)} in all)" if len(found) > 10 else ""
        listing = f"\nSamples in {st}: {', '.join(found[:10])}{more}."
    else:
        listing = (
            f"\n{root} holds no HEST sample (no st/*.h5ad)."
            if root.is_dir()
            else f"\nThe folder {root} does not exist."
        )
    check_files(
        hest_files(root, sample_id),
        f"HEST sample {sample_id!r} in {root}",
        hint=(
            f"{listing}\nPass `data_dir=` or set {_ENV} to the folder holding wsis/, st/ and metadata/. stpredict "
            "downloads nothing: fetch samples from https://huggingface.co/datasets/MahmoodLab/hest with the HEST "
            "tools first."
        ),
    )
    return read_hest(root, sample_id, **kwargs)


def _magnification(mpp: float) -> str:
    """HEST's coarse magnification label for a pixel size (``pixel_size_to_mag`` in hest/utils.py)."""
    for limit, label in ((0.1, "60x"), (0.5, "40x"), (1.0, "20x"), (4.0, "10x")):
        if mpp <= limit:
            return label
    return "<10x"


def write_hest_sample(
    sdata: SpatialData,
    path: str | Path,
    sample_id: str,
    *,
    table: str = C.VISIUM_SPOTS_KEY,
    technology: HestTechnology | None = None,
    image_key: str | None = None,
    mpp: float | None = None,
    pixel_size_um_embedded: float | None = None,
    overwrite: bool = False,
) -> dict[str, Path]:
    """Write a spot table and its H&E as one HEST-1k sample, in the files and conventions HEST uses.

    Writes, under ``path``:

    - ``wsis/{sample_id}.tif``: the H&E as a tiled pyramidal TIFF (not OME) whose resolution tags give
      the pixel size (:func:`stpredict.datasets.write_slide` with ``ome=False``; HEST writes a generic
      pyramidal TIFF with pyvips, also with resolution tags);
    - ``st/{sample_id}.h5ad``: counts in ``X`` as HEST's readers leave them (Visium: sparse float32, as
      ``scanpy.read_10x_h5``; legacy ST: dense int64; Visium HD: dense float32; Xenium: dense uint16),
      ``obsm["spatial"]`` = spot centres ``(x, y)`` in full-resolution pixels, ``obs`` with
      ``in_tissue``, ``array_row``, ``array_col``, ``pxl_col_in_fullres``, ``pxl_row_in_fullres`` and
      QC metrics, and ``uns["spatial"]["ST"]`` with a ≤ 1000 px thumbnail and its scale factors.
      Spot ids follow HEST: 10x barcodes for Visium; ``"{a:03d}x{b:03d}"`` for legacy ST, where HEST
      sets ``array_row`` to the first number (the array *x*) and ``array_col`` to the second;
      ``"{row:04d}x{col:04d}"`` for pooled pseudo-spots;
    - ``metadata/{sample_id}.json``: ``id``, ``st_technology``, ``pixel_size_um_estimated`` (= the
      image's pixel size), ``pixel_size_um_embedded``, ``spot_diameter`` and ``inter_spot_dist`` in µm
      (Visium 55 / 100, ST 100 / 200; Visium HD 2 / 2 and Xenium ``null``, as in HEST's release),
      ``magnification``, ``fullres_px_width``/``height``, ``spots_under_tissue`` and a few more.

    Parameters
    ----------
    sdata
        Typically :func:`stpredict.datasets.synthetic`.
    path
        The HEST folder to write into (created; other samples in it are kept).
    sample_id
        The sample id (file stem).
    table
        The spot table: raw counts in ``X``, ``obs["array_row"/"array_col"]``, centres in
        ``obsm["spatial"]`` (pixels of the image) and circles (Visium, ST) or squares (Visium HD,
        Xenium pseudo-spots) as its shapes.
    technology
        HEST's ``st_technology``. Default: from the table name (``"visium_spots"`` → Visium,
        ``"st_spots"`` → Spatial Transcriptomics, ``"square_*"`` → Visium HD).
    image_key
        The H&E image. Default: the one image ending in ``"full_image"``.
    mpp
        Pixel size; default :func:`stpredict.pp.get_mpp` of the image.
    pixel_size_um_embedded
        The value written as ``pixel_size_um_embedded`` (the source file's metadata in HEST). Default:
        ``mpp``.
    overwrite
        Replace this sample's files if they exist.

    Returns
    -------
    The three paths written, keyed ``"wsi"``, ``"st"`` and ``"metadata"``.

    """
    root = Path(path)
    sample_id = check_name("sample_id", sample_id)
    files = hest_files(root, sample_id)
    existing = [str(p) for p in files.values() if p.exists()]
    if existing and not overwrite:
        raise FileExistsError(f"{existing} exist; pass `overwrite=True` to replace sample {sample_id!r}.")
    if table not in sdata.tables:
        raise KeyError(f"Table {table!r} not found; available tables: {list(sdata.tables)}.")
    if technology is None:
        if table == C.VISIUM_SPOTS_KEY:
            technology = "Visium"
        elif table == C.ST_SPOTS_KEY:
            technology = "Spatial Transcriptomics"
        elif table.startswith("square_"):
            technology = "Visium HD"
        else:
            raise ValueError(f"Pass `technology=` (one of {list(HEST_TECHNOLOGIES)}) for table {table!r}.")
    if technology not in HEST_TECHNOLOGIES:
        raise ValueError(f"`technology` must be one of {list(HEST_TECHNOLOGIES)}, got {technology!r}.")
    if image_key is None:
        keys = [k for k in sdata.images if k.endswith("full_image")]
        image_key = keys[0] if len(keys) == 1 else default_image_key(sdata)
    mpp = check_mpp_value(get_mpp(sdata, image_key) if mpp is None else mpp)
    embedded = mpp if pixel_size_um_embedded is None else check_mpp_value(pixel_size_um_embedded)
    adata = sdata.tables[table]
    if C.SPATIAL_KEY not in adata.obsm or not {"array_row", "array_col"} <= set(adata.obs):
        raise ValueError(f"Table {table!r} needs obs['array_row'], obs['array_col'] and obsm['spatial'].")
    xy = np.asarray(adata.obsm[C.SPATIAL_KEY], dtype=float)
    rows = adata.obs["array_row"].to_numpy(np.int64)
    cols = adata.obs["array_col"].to_numpy(np.int64)
    counts = sparse.csr_matrix(adata.X)

    square = technology in ("Visium HD", "Xenium")
    if square:
        region = get_table_keys(adata)[0]
        shapes_key = region if isinstance(region, str) else next(iter(region), None)
        if shapes_key not in sdata.shapes:
            raise ValueError(
                f"Cannot find the squares of table {table!r} ({shapes_key!r}) to size the pseudo-spots."
            )
        bounds = sdata.shapes[shapes_key].geometry.bounds.to_numpy()
        size_um = float(np.median(bounds[:, 2] - bounds[:, 0])) * mpp
        spot_diameter, inter_spot_dist = (2.0, 2.0) if technology == "Visium HD" else (None, None)
    elif technology == "Visium":
        size_um, spot_diameter, inter_spot_dist = C.VISIUM_SPOT_DIAMETER_UM, 55.0, 100.0
    else:
        size_um, spot_diameter, inter_spot_dist = C.ST_SPOT_DIAMETER_UM, 100.0, 200.0

    # -- obs, ids and X as HEST's readers leave them ---------------------------------------------
    if technology == "Visium":
        index = _barcodes(rows, cols)
        hest_rows, hest_cols = rows, cols
        X: Any = counts.astype(np.float32)
        in_tissue: Any = np.ones(len(rows), np.int64)
    elif technology == "Spatial Transcriptomics":
        # HEST's STReader: ids "{x}x{y}" → array_row = x (first number), array_col = y; zero-padded to 3 digits
        hest_rows, hest_cols = cols, rows
        index = np.array([f"{a:03d}x{b:03d}" for a, b in zip(hest_rows, hest_cols, strict=True)])
        X = counts.toarray().astype(np.int64)
        in_tissue = np.ones(len(rows), bool)
    else:
        hest_rows, hest_cols = rows, cols
        index = np.array([f"{r:04d}x{c:04d}" for r, c in zip(rows, cols, strict=True)])
        X = counts.toarray().astype(np.float32 if technology == "Visium HD" else np.uint16)
        in_tissue = np.ones(len(rows), bool)
    total = np.asarray(counts.sum(1)).ravel()
    n_genes = np.asarray((counts > 0).sum(1)).ravel()
    obs = pd.DataFrame(
        {
            "in_tissue": in_tissue,
            "array_row": hest_rows,
            "array_col": hest_cols,
            "pxl_col_in_fullres": xy[:, 0],
            "pxl_row_in_fullres": xy[:, 1],
            "n_genes_by_counts": n_genes.astype(np.int64),
            "total_counts": total.astype(np.float64),
            "log1p_total_counts": np.log1p(total.astype(np.float64)),
        },
        index=pd.Index(index),
    )
    var = pd.DataFrame(
        {"mito": adata.var_names.str.upper().str.startswith("MT-")},
        index=pd.Index(adata.var_names.astype(str)),
    )
    rgb = np.ascontiguousarray(
        np.asarray(full_resolution(sdata.images[image_key]).transpose("y", "x", "c").values)
    )
    height, width = rgb.shape[:2]
    scalef = min(1.0, _THUMBNAIL_PX / max(height, width))
    thumb = Image.fromarray(rgb).resize(
        (max(1, round(width * scalef)), max(1, round(height * scalef))), Image.Resampling.BOX
    )
    out = ad.AnnData(X=X, obs=obs, var=var)
    out.obsm["spatial"] = xy
    out.uns["spatial"] = {
        "ST": {
            "images": {"downscaled_fullres": np.asarray(thumb, dtype=np.uint8)},
            "scalefactors": {
                "spot_diameter_fullres": size_um / mpp,
                "tissue_downscaled_fullres_scalef": scalef,
            },
        }
    }

    # spot_estimate_dist: over how many pitches HEST's pixel-size estimate spanned (the longest array row)
    per_row = pd.Series(hest_cols).groupby(hest_rows).agg(lambda c: c.max() - c.min())
    span = int(per_row.max() // (2 if technology == "Visium" else 1)) if len(per_row) else 0
    meta = {
        "id": sample_id,
        "image_filename": f"{sample_id}.tif",
        "dataset_title": "stpredict synthetic slide",
        "organ": "Synthetic",
        "species": "Homo sapiens",
        "st_technology": technology,
        "inter_spot_dist": inter_spot_dist,
        "spot_diameter": spot_diameter,
        "spots_under_tissue": len(obs),
        "spot_estimate_dist": span,
        "nb_genes": int(adata.n_vars),
        "adata_nb_col": int(adata.n_vars),
        "pixel_size_um_embedded": float(embedded),
        "pixel_size_um_estimated": float(mpp),
        "magnification": _magnification(mpp),
        "fullres_px_width": int(width),
        "fullres_px_height": int(height),
    }

    for p in files.values():
        p.parent.mkdir(parents=True, exist_ok=True)
    write_slide(rgb, files["wsi"], mpp=mpp, ome=False, overwrite=True)
    tmp = files["st"].with_name(files["st"].name + ".partial")
    out.write_h5ad(tmp)
    shutil.move(tmp, files["st"])
    files["metadata"].write_text(json.dumps(meta, indent=1))
    return files
