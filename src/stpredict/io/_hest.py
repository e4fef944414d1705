"""Reader for one sample of HEST-1k (Jaume et al., NeurIPS 2024), the Mahmood lab's H&E + spatial transcriptomics set.

The on-disk layout, as the HEST library reads it (``hest.HESTData._read_st`` and ``read_HESTData`` in
https://github.com/mahmoodlab/HEST/blob/main/src/hest/HESTData.py; folder list in
``tutorials/1-Downloading-HEST-1k.ipynb``; ``.obs``/``.obsm`` described in
``tutorials/2-Interacting-with-HEST-1k.ipynb``)::

    {root}/wsis/{id}.tif          pyramidal generic (Big)TIFF, the H&E at the resolution the spots refer to
    {root}/st/{id}.h5ad           AnnData: counts in X; obsm["spatial"] = spot centres (x, y) in full-resolution
                                  WSI pixels; obs in_tissue, array_row, array_col, pxl_col_in_fullres (x),
                                  pxl_row_in_fullres (y) and scanpy QC metrics; uns["spatial"]["ST"] a thumbnail
    {root}/metadata/{id}.json     st_technology, pixel_size_um_estimated, pixel_size_um_embedded, spot_diameter,
                                  inter_spot_dist (µm), magnification, fullres_px_width/height, organ, species, ...

plus optional folders (``tissue_seg/``, ``cellvit_seg/``, ``patches/``, ``spatial_plots/``, ``thumbnails/``,
``transcripts/``, ``xenium_seg/``) that this reader does not need.

Pixel sizes: HEST works with ``pixel_size_um_estimated`` (``read_HESTData`` passes it as the sample's pixel size;
the readers in ``hest/readers.py`` derive it from the spot grid, ``find_pixel_size_from_spot_coords``, or from
the Xenium alignment) and writes it into the TIFF's resolution tags (``HESTData.save`` → ``tiff_save``).
``pixel_size_um_embedded`` is what the source image's metadata said, often a placeholder such as 1 or a
wrong 0.2125 (https://github.com/mahmoodlab/HEST/issues/106).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import anndata as ad
import numpy as np
import pandas as pd
import shapely
from geopandas import GeoDataFrame
from scipy import sparse
from scipy.spatial import cKDTree
from spatialdata import SpatialData
from spatialdata.models import ShapesModel, TableModel

from .. import _constants as C
from .._core._files import check_dir, check_hdf5, corrupt_file_error, read_json
from .._core._mpp import micron_cs_name, pixel_and_micron_transforms
from .._core._validate import check_int, check_mpp_value, check_name, check_number
from .._logging import logger
from .._types import WsiBackend
from ._utils import PathLike, check_files
from ._wsi import slide_info, slide_sdata

__all__ = ["HEST_TECHNOLOGIES", "hest_files", "read_hest"]

#: ``st_technology`` values of HEST-1k (``assets/HEST_v1_1_0.csv`` in the HEST repository).
HEST_TECHNOLOGIES = ("Visium", "Spatial Transcriptomics", "Visium HD", "Xenium")

# Spots HEST-1k keeps as measured (circles) and the spot diameter / centre-to-centre distance in µm its readers
# write when they assemble a sample (``VisiumReader.read``: 55 / 100; ``STReader.read``: 100 / 200, with
# exceptions such as 150 / 110 for GSE144239 — hence the metadata's values come first).
_CIRCLES = {
    "Visium": (C.VISIUM_SPOT_DIAMETER_UM, C.VISIUM_PITCH_UM),
    "Spatial Transcriptomics": (C.ST_SPOT_DIAMETER_UM, C.ST_PITCH_UM),
}
# Technologies HEST pools into square pseudo-spots on an axis-aligned grid in WSI pixels, centres in
# obsm["spatial"] (readers.py ``pool_transcripts_xenium``: 100 µm by default; ``pool_bins_visiumhd``: 128 µm by
# default). Their metadata does not give the pseudo-spot size (the release sets spot_diameter = inter_spot_dist
# = 2 for Visium HD, the raw bin, and None for Xenium; ``utils.create_meta_release``), so the side is the pitch of
# the centres.
_SQUARES = ("Visium HD", "Xenium")
_AGREE_REL = 0.05
_MIN_GRID_SPOTS = 3
#: The fix for a truncated or corrupt file of a HEST sample.
_REDOWNLOAD = (
    "Download the sample again (https://huggingface.co/datasets/MahmoodLab/hest): a download cut short leaves such "
    "files."
)


_EXPECTED = {
    "wsi": "the sample's whole-slide image",
    "st": "the sample's AnnData file",
    "metadata": "the sample's JSON metadata",
}


def hest_files(path: PathLike, sample_id: str) -> dict[str, Path]:
    """The three files of a HEST-1k sample: ``wsis/{id}.tif``, ``st/{id}.h5ad`` and ``metadata/{id}.json``.

    Parameters
    ----------
    path
        The HEST folder (with ``wsis/``, ``st/`` and ``metadata/``).
    sample_id
        The sample id (``"TENX95"``, ``"NCBI783"``, ...).

    """
    root = Path(path)
    return {
        "wsi": root / "wsis" / f"{sample_id}.tif",
        "st": root / "st" / f"{sample_id}.h5ad",
        "metadata": root / "metadata" / f"{sample_id}.json",
    }


def _technology(meta: dict[str, Any]) -> str | None:
    tech = meta.get("st_technology")
    if not isinstance(tech, str) or not tech.strip():
        return None
    by_lower = {t.lower(): t for t in HEST_TECHNOLOGIES} | {"st": "Spatial Transcriptomics"}
    return by_lower.get(tech.strip().lower(), tech.strip())


def _positive(meta: dict[str, Any], key: str) -> float | None:
    """``meta[key]`` as a positive finite float, or ``None`` (HEST writes ``null`` or leaves keys out)."""
    value = meta.get(key)
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        return None
    try:
        value = float(value)
    except ValueError:
        return None
    return value if math.isfinite(value) and value > 0 else None


def _pitch_px(xy: np.ndarray) -> float | None:
    """Median distance from each spot centre to its nearest neighbour, in pixels (the grid pitch)."""
    if len(xy) < _MIN_GRID_SPOTS:
        return None
    dist, _ = cKDTree(xy).query(xy, k=2)
    d = dist[:, 1]
    d = d[d > 0]
    return float(np.median(d)) if d.size else None


def _counts(adata: ad.AnnData, where: Path, var_names_make_unique: bool) -> sparse.csr_matrix:
    X = adata.X
    if X is None or adata.n_obs == 0 or adata.n_vars == 0:
        raise ValueError(f"{where} holds no counts ({adata.n_obs} spots x {adata.n_vars} genes).")
    X = sparse.csr_matrix(X)
    vals = np.asarray(X.data, dtype=np.float64)
    raw = " (`.raw` exists: check what it holds)" if adata.raw is not None else ""
    if not np.isfinite(vals).all() or (vals < 0).any() or not np.array_equal(vals, np.round(vals)):
        raise ValueError(
            f"{where}: X holds negative, non-integer or non-finite values; HEST-1k's st/*.h5ad hold raw counts in X "
            f"and stpredict expects raw counts (it normalises them itself){raw}. Was the file normalised or "
            "log-transformed after download?"
        )
    if vals.size and vals.max() >= 2**31:
        raise ValueError(f"{where}: counts up to {vals.max():.0f} do not fit in int32.")
    dup = adata.var_names[adata.var_names.duplicated()].unique()
    if len(dup) and not var_names_make_unique:
        raise ValueError(
            f"{where} has {len(dup)} duplicated gene name(s) (e.g. {list(dup[:5])}). Pass "
            "`var_names_make_unique=True` to suffix repeats with '-1', '-2', … as anndata does."
        )
    return X.astype(np.int32)


def read_hest(
    path: PathLike,
    sample_id: str,
    *,
    dataset_id: str | None = None,
    mpp: float | None = None,
    spot_diameter_um: float | None = None,
    backend: WsiBackend = "auto",
    chunks: int = 1024,
    var_names_make_unique: bool = False,
) -> SpatialData:
    """Read one HEST-1k sample (H&E whole-slide image + spots + counts) from a local HEST folder.

    HEST-1k (Jaume et al., *HEST-1k: A Dataset for Spatial Transcriptomics and Histology Image
    Analysis*, NeurIPS 2024; https://github.com/mahmoodlab/HEST, data on the Hugging Face Hub as
    ``MahmoodLab/hest``) stores each sample as ``wsis/{id}.tif``, ``st/{id}.h5ad`` and
    ``metadata/{id}.json``. Nothing is downloaded: fetch the samples you need with the HEST tools first.

    - **Image**: the pyramidal TIFF, read lazily with :func:`stpredict.io.read_wsi`.
    - **Pixel size**: ``mpp=``, else the metadata's ``pixel_size_um_estimated`` — the value the HEST
      library itself works with (``read_HESTData`` passes it as the sample's pixel size; it is derived
      from the spot grid, or from the Xenium alignment, and written into the TIFF's resolution tags),
      else the TIFF's own pixel size, else the spot pitch. ``pixel_size_um_embedded`` (the source
      file's metadata) is only recorded: it is often a placeholder
      (https://github.com/mahmoodlab/HEST/issues/106). A warning is
      logged when the WSI's pixel size or the spot pitch (``inter_spot_dist`` over the nearest-neighbour
      distance of the centres) disagrees with the value used by more than 5 %.
    - **Spots**: Visium and legacy ST spots become circles of the true diameter (the metadata's
      ``spot_diameter``, else 55 µm for Visium and 100 µm for ST). Visium HD and Xenium samples hold
      square pseudo-spots that HEST pooled on an axis-aligned grid; they become squares whose side is
      the pitch of their centres (HEST's metadata does not record it).

    Parameters
    ----------
    path
        The HEST folder: the one holding ``wsis/``, ``st/`` and ``metadata/``.
    sample_id
        The sample id, e.g. ``"TENX95"`` or ``"NCBI783"``.
    dataset_id
        Section name: element prefix and coordinate systems ``dataset_id`` (full-resolution pixels)
        and ``"{dataset_id}_um"``. Default: ``sample_id``.
    mpp
        Microns per full-resolution pixel; overrides the metadata.
    spot_diameter_um
        Spot diameter (circles) or pseudo-spot side (squares) in µm; overrides the metadata.
    backend
        How to read the TIFF (see :func:`stpredict.io.read_wsi`).
    chunks
        Side of the image's dask chunks in pixels.
    var_names_make_unique
        Suffix duplicated gene names instead of raising an error.

    Returns
    -------
    A SpatialData object with

    - ``images["{dataset_id}_full_image"]``: the H&E as a lazy multiscale ``(c, y, x)`` uint8 image,
    - ``shapes["{dataset_id}_spots"]``: the spots in full-resolution pixels at their true size (circles
      with ``radius``, or axis-aligned squares), integer index,
    - ``tables["spots"]``: the counts (sparse int32 ``X``, spots × genes) with HEST's ``obs`` columns
      (``in_tissue``, ``array_row``, ``array_col``, ``pxl_col_in_fullres``, ``pxl_row_in_fullres``, QC
      metrics), the ``region``/``instance_id`` link to the shapes, ``obsm["spatial"]`` = spot centres
      ``(x, y)`` in pixels and ``uns["stpredict"]`` recording the reader, ``sample_id``, ``technology``,
      ``mpp``, ``mpp_source``, ``mpp_estimates``, ``spot_diameter_um``, ``spot_shape``, ``pitch_um``
      and the coordinate systems;

    ``attrs["stpredict"]["hest"]`` holds the sample's metadata and ``attrs["stpredict"]["slide"]`` the
    TIFF's record. Every element has the pixel and the micron coordinate system.

    Raises
    ------
    FileNotFoundError
        When a file is missing (the message lists the three and which are missing).
    NotADirectoryError, IsADirectoryError
        When ``path`` is a file, or a sample file is a folder.
    ValueError
        When a file is truncated or corrupt, X does not hold raw counts, the pixel size is unknown, or no spot
        lies on the image.

    Examples
    --------
    >>> sdata = stp.io.read_hest("hest_data", "TENX95")  # doctest: +SKIP
    >>> stp.tl.train(sdata, tables="spots")  # doctest: +SKIP

    """
    root = Path(path)
    sample_id = check_name("sample_id", sample_id)
    dataset_id = sample_id if dataset_id is None else check_name("dataset_id", dataset_id)
    if mpp is not None:
        mpp = check_mpp_value(mpp)
    if spot_diameter_um is not None:
        spot_diameter_um = check_number("spot_diameter_um", spot_diameter_um)
    check_dir(root, "HEST folder", expected="the HEST folder, the one holding wsis/, st/ and metadata/")
    files = hest_files(root, sample_id)
    check_files(
        files,
        f"read_hest({str(root)!r}, {sample_id!r})",
        "\nPass the HEST folder (the one holding wsis/, st/ and metadata/) and a sample id it contains; stpredict "
        "downloads nothing (https://huggingface.co/datasets/MahmoodLab/hest).",
        expected=_EXPECTED,
    )
    meta = read_json(files["metadata"], "The sample's metadata", fix=_REDOWNLOAD)
    if not isinstance(meta, dict):
        raise ValueError(f"{files['metadata']} must hold a JSON object (HEST's per-sample metadata).")
    technology = _technology(meta)
    check_hdf5(files["st"], "The sample's counts file", fix=_REDOWNLOAD)
    try:
        adata = ad.read_h5ad(files["st"])
    except OSError as exc:  # h5py: an object of the file cannot be read
        raise corrupt_file_error(files["st"], "The sample's counts file", exc, fix=_REDOWNLOAD) from exc
    X = _counts(adata, files["st"], var_names_make_unique)
    if C.SPATIAL_KEY not in adata.obsm:
        raise ValueError(
            f"{files['st']} has no obsm['spatial']; HEST-1k stores the spot centres (x, y) in full-resolution WSI "
            "pixels there."
        )
    xy = np.asarray(adata.obsm[C.SPATIAL_KEY], dtype=float)
    if xy.ndim != 2 or xy.shape != (adata.n_obs, 2) or not np.isfinite(xy).all():
        raise ValueError(
            f"{files['st']}: obsm['spatial'] must be finite (x, y) pixel centres, one row per spot; got shape "
            f"{xy.shape}."
        )

    # -- pixel size --------------------------------------------------------------------------------
    info = slide_info(files["wsi"], backend=backend)
    height, width = info.shape
    pitch_px = _pitch_px(xy)
    square = technology in _SQUARES
    estimates: dict[str, float] = {}
    if (v := _positive(meta, "pixel_size_um_estimated")) is not None:
        estimates["pixel_size_um_estimated"] = v
    if info.mpp is not None:
        estimates["slide file"] = float(info.mpp)
    pitch_um = None if square else _positive(meta, "inter_spot_dist")
    if pitch_um is None and technology in _CIRCLES:
        pitch_um = _CIRCLES[technology][1]
    if pitch_um is not None and pitch_px is not None:
        estimates["spot grid"] = pitch_um / pitch_px
    if mpp is not None:
        mpp_source = "given"
    else:
        source = next(
            (s for s in ("pixel_size_um_estimated", "slide file", "spot grid") if s in estimates), None
        )
        if source is None:
            raise ValueError(
                f"The pixel size of HEST sample {sample_id!r} is unknown: {files['metadata'].name} has no "
                f"pixel_size_um_estimated, the TIFF records none ({info.mpp_source}) and there is no spot pitch to "
                "infer it from. Pass `mpp=` (µm per full-resolution pixel)."
            )
        mpp = estimates[source]
        mpp_source = f"metadata {source}" if source == "pixel_size_um_estimated" else source
        if source == "slide file":
            mpp_source = f"slide file ({info.mpp_source})"
    mpp = check_mpp_value(mpp, "mpp" if mpp_source == "given" else f"pixel size from the {mpp_source}")
    embedded = _positive(meta, "pixel_size_um_embedded")
    for source, value in estimates.items():
        if abs(value - mpp) <= _AGREE_REL * mpp:
            continue
        if source == "spot grid":
            what = f"the spot pitch ({pitch_px:.1f} px for inter_spot_dist {pitch_um:g} µm)"
        elif source == "slide file":
            what = f"the WSI file ({info.mpp_source})"
        else:
            what = "the metadata's pixel_size_um_estimated"
        msg = (
            f"HEST sample {sample_id!r}: {what} gives {value:.4f} µm/px but {mpp:.4f} µm/px ({mpp_source}) is used "
            f"({100 * (value / mpp - 1):+.1f}%)."
        )
        if mpp_source == "given":
            logger.info(msg)
        else:
            logger.warning(msg + " Check the sample, or pass `mpp=` if you know the scanner's pixel size.")
    if embedded is not None and abs(embedded - mpp) > _AGREE_REL * mpp:
        logger.info(
            f"HEST sample {sample_id!r}: pixel_size_um_embedded is {embedded:.4f} µm/px (the source file's metadata, "
            f"often a placeholder); using {mpp:.4f} µm/px ({mpp_source})."
        )

    # -- spot geometry -----------------------------------------------------------------------------
    spot_source = "given"
    if spot_diameter_um is None and square:
        if pitch_px is None:
            raise ValueError(
                f"HEST sample {sample_id!r} ({technology}) holds square pseudo-spots whose size its metadata does not "
                f"record, and it has too few spots ({len(xy)}) to infer it from their pitch. Pass `spot_diameter_um=` "
                "(the pseudo-spot side in µm)."
            )
        spot_diameter_um, spot_source = pitch_px * mpp, "pitch of the pseudo-spot centres"
        listed = _positive(meta, "spot_diameter")
        if listed is not None and abs(listed - spot_diameter_um) > _AGREE_REL * spot_diameter_um:
            logger.info(
                f"HEST sample {sample_id!r}: spot_diameter {listed:g} µm in the metadata describes the raw "
                f"{technology} measurement, not the {spot_diameter_um:.1f} µm pseudo-spots HEST pooled into st/."
            )
    elif spot_diameter_um is None:
        spot_diameter_um, spot_source = _positive(meta, "spot_diameter"), "metadata spot_diameter"
        if spot_diameter_um is None and technology in _CIRCLES:
            spot_diameter_um, spot_source = _CIRCLES[technology][0], f"{technology} default"
        if spot_diameter_um is None:
            raise ValueError(
                f"HEST sample {sample_id!r}: the metadata gives no spot_diameter and the technology "
                f"{technology!r} has no default (stpredict knows {list(HEST_TECHNOLOGIES)}). Pass `spot_diameter_um=`."
            )
    if square:
        pitch_um = float(spot_diameter_um)

    outside = (xy[:, 0] < 0) | (xy[:, 0] >= width) | (xy[:, 1] < 0) | (xy[:, 1] >= height)
    if outside.all():
        raise ValueError(
            f"No spot centre of HEST sample {sample_id!r} lies on {files['wsi'].name} ({width} x {height} px; centres "
            f"x {xy[:, 0].min():.0f}–{xy[:, 0].max():.0f}, y {xy[:, 1].min():.0f}–{xy[:, 1].max():.0f} px). "
            "obsm['spatial'] must be in the full-resolution pixels of wsis/{id}.tif: is the TIFF a downscaled copy "
            "or another sample's?"
        )
    if outside.any():
        logger.warning(
            f"{int(outside.sum())} of {len(xy)} spot centres of HEST sample {sample_id!r} lie off the {width} x "
            f"{height} px image (e.g. {list(adata.obs_names[outside][:3])}); training ignores spots not on the image."
        )

    # -- elements ----------------------------------------------------------------------------------
    sdata = slide_sdata(
        info, mpp=mpp, mpp_source="given", dataset_id=dataset_id, chunks=check_int("chunks", chunks)
    )
    n = adata.n_obs
    shapes_key = f"{dataset_id}_{C.SPOTS_KEY}"
    transformations = pixel_and_micron_transforms(dataset_id, mpp=mpp)
    size_px = spot_diameter_um / mpp
    if square:
        h = size_px / 2
        boxes = shapely.box(xy[:, 0] - h, xy[:, 1] - h, xy[:, 0] + h, xy[:, 1] + h)
        shapes = ShapesModel.parse(
            GeoDataFrame(geometry=boxes, index=pd.RangeIndex(n)), transformations=transformations
        )
    else:
        shapes = ShapesModel.parse(
            xy,
            geometry=0,
            radius=np.full(n, size_px / 2),
            index=pd.RangeIndex(n),
            transformations=transformations,
        )

    obs = adata.obs.copy()
    obs.index = pd.Index(adata.obs_names.astype(str), name="spot_id")
    for col in ("array_row", "array_col"):
        if col in obs:
            obs[col] = pd.to_numeric(obs[col]).round().astype(int)
    obs["in_tissue"] = obs["in_tissue"].astype(int) if "in_tissue" in obs else 1
    obs[C.REGION_KEY] = pd.Categorical([shapes_key] * n)
    obs[C.INSTANCE_KEY] = np.arange(n)
    table = ad.AnnData(X=X, obs=obs, var=adata.var.copy())
    if var_names_make_unique:
        table.var_names_make_unique()
    table.var.index.name = "gene"
    table.obsm[C.SPATIAL_KEY] = xy
    record = {
        "reader": "read_hest",
        "sample_id": sample_id,
        "technology": technology or "unknown",
        "mpp": float(mpp),
        "mpp_source": mpp_source,
        "mpp_estimates": {k: float(v) for k, v in estimates.items()},
        "spot_diameter_um": float(spot_diameter_um),
        "spot_diameter_source": spot_source,
        "spot_shape": "square" if square else "circle",
        "pixel_cs": dataset_id,
        "micron_cs": micron_cs_name(dataset_id),
    }
    if pitch_um is not None:
        record["pitch_um"] = float(pitch_um)
    if embedded is not None:
        record["pixel_size_um_embedded"] = float(embedded)
    table.uns[C.UNS_KEY] = record
    table = TableModel.parse(table, region=shapes_key, region_key=C.REGION_KEY, instance_key=C.INSTANCE_KEY)

    sdata.shapes[shapes_key] = shapes
    sdata.tables[C.SPOTS_KEY] = table
    sdata.attrs.setdefault(C.UNS_KEY, {})["hest"] = {
        k: v
        for k, v in meta.items()
        if isinstance(v, str | int | bool) or (isinstance(v, float) and math.isfinite(v))
    }
    shape_words = f"{spot_diameter_um:.1f} µm squares" if square else f"{spot_diameter_um:g} µm circles"
    logger.info(
        f"Read HEST sample {sample_id!r} ({technology}): {n} spots ({shape_words}) x {table.n_vars} genes; "
        f"{width} x {height} px at {mpp:.4f} µm/px ({mpp_source})."
    )
    return sdata
