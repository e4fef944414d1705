"""Reader for legacy Spatial Transcriptomics data in the HER2ST layout."""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
from anndata.utils import make_index_unique
from scipy import sparse
from spatialdata import SpatialData
from spatialdata.models import ShapesModel, TableModel

from .. import _constants as C
from .._core._files import corrupt_file_error, ends_mid_line
from .._core._image import parse_rgb_image
from .._core._mpp import micron_cs_name, pixel_and_micron_transforms
from .._core._validate import check_int, check_mpp_value, check_name, check_number
from .._logging import logger
from ._utils import PathLike, check_files, load_rgb

__all__ = ["read_st"]

_SPOT_COLUMNS = ("x", "y", "pixel_x", "pixel_y")
_EXPECTED = {
    "counts": "the tab-separated counts table, .tsv or .tsv.gz",
    "spots": "the tab-separated spot table, .tsv",
    "image": "the full-resolution H&E image, JPEG, PNG or TIFF",
}


def _examples(values, n: int = 5) -> str:
    values = list(values)
    more = f", … ({len(values)} in all)" if len(values) > n else ""
    return ", ".join(map(repr, values[:n])) + more


def _read_tsv(path: PathLike, what: str, **kwargs) -> pd.DataFrame:
    """A tab-separated file; one that does not decompress or parse, or whose last row is cut, is named as such."""
    try:
        df = pd.read_csv(path, sep="\t", **kwargs)
    except (
        EOFError,
        OSError,
        UnicodeDecodeError,
        zlib.error,
        pd.errors.ParserError,
        pd.errors.EmptyDataError,
    ) as exc:
        raise corrupt_file_error(path, what, exc) from exc
    if len(df) > 1 and ends_mid_line(path):
        # a file cut mid-line leaves its last row without the values of the last column(s)
        short = df.columns[df.iloc[-1].isna().to_numpy() & df.iloc[:-1].notna().all().to_numpy()]
        if len(short):
            raise corrupt_file_error(
                path,
                what,
                f"its last row ({df.index[-1]!r}) has no value in column(s) {_examples(short)} that every other "
                "row has: the file was cut short",
            )
    return df


def _read_counts(counts: PathLike | pd.DataFrame, var_names_make_unique: bool) -> pd.DataFrame:
    if isinstance(counts, pd.DataFrame):
        df = counts
    else:
        df = _read_tsv(counts, "The counts table", index_col=0)
    if df.shape[0] == 0 or df.shape[1] == 0:
        raise ValueError(
            f"The counts table {'' if isinstance(counts, pd.DataFrame) else repr(str(counts)) + ' '}is empty "
            f"({df.shape[0]} spots x {df.shape[1]} genes). Expected one row per spot and one column per gene."
        )
    df.index = df.index.astype(str)
    df.columns = df.columns.astype(str)
    if df.index.duplicated().any():
        raise ValueError(
            f"The counts table has duplicated spot ids: {_examples(df.index[df.index.duplicated()].unique())}."
        )
    dup = df.columns[df.columns.duplicated()].unique()
    if len(dup):
        if not var_names_make_unique:
            raise ValueError(
                f"The counts table has {len(dup)} duplicated gene name(s): {_examples(dup)}. Rename them, or pass "
                "`var_names_make_unique=True` to suffix repeats with '-1', '-2', … as anndata does."
            )
        df.columns = make_index_unique(pd.Index(df.columns))
    values = df.to_numpy()
    if not np.issubdtype(values.dtype, np.number):
        raise ValueError("The counts table has non-numeric values; expected raw UMI counts (spots x genes).")
    if (values < 0).any() or not np.array_equal(values, np.round(values)):
        raise ValueError(
            "The counts table holds negative or non-integer values; stpredict expects raw UMI counts. "
            "Pass the raw counts, not normalised or log-transformed values."
        )
    return df


def _read_spots(spots: PathLike | pd.DataFrame) -> pd.DataFrame:
    df = spots if isinstance(spots, pd.DataFrame) else _read_tsv(spots, "The spot table")
    missing = [c for c in _SPOT_COLUMNS if c not in df.columns]
    if missing:
        raise ValueError(
            f"The spot table lacks column(s) {missing}; it has {list(df.columns)}. Expected the HER2ST layout: "
            "`x, y` array coordinates and `pixel_x, pixel_y` spot centres in full-resolution image pixels."
        )
    if len(df) == 0:
        raise ValueError("The spot table is empty.")
    blank = df[list(_SPOT_COLUMNS)].isna().any(axis=1).to_numpy()
    if blank.any():
        raise ValueError(
            f"{int(blank.sum())} row(s) of the spot table (e.g. row(s) {_examples(np.flatnonzero(blank))}) have no "
            f"value in {list(_SPOT_COLUMNS)}; every spot needs its array position and its pixel centre."
        )
    df = df.copy()
    df.index = df["x"].astype(int).astype(str) + "x" + df["y"].astype(int).astype(str)
    if df.index.duplicated().any():
        raise ValueError(
            f"The spot table has duplicated array positions: {_examples(df.index[df.index.duplicated()].unique())}."
        )
    return df


def infer_mpp_from_grid(spots: pd.DataFrame, pitch_um: float) -> tuple[float, float]:
    """Microns per pixel from a spot grid: fit pixel = a·array + b on both axes.

    Returns
    -------
    ``(mpp, pitch_px)``.

    """
    slopes = []
    for arr_col, px_col in (("x", "pixel_x"), ("y", "pixel_y")):
        a = spots[arr_col].to_numpy(float)
        if np.unique(a).size >= 2:
            slopes.append(abs(np.polyfit(a, spots[px_col].to_numpy(float), 1)[0]))
    if not slopes or min(slopes) <= 0:
        raise ValueError(
            "Cannot infer the pixel size from the spot grid (fewer than two distinct array positions on both "
            "axes); pass `mpp=` (microns per pixel of the full-resolution image)."
        )
    if len(slopes) == 2 and abs(slopes[0] - slopes[1]) > 0.25 * max(slopes):
        raise ValueError(
            f"The spot grid is inconsistent: pixel_x changes by {slopes[0]:.3g} px per array column and pixel_y by "
            f"{slopes[1]:.3g} px per array row, but spots are on a square grid. Are the x/y (or pixel_x/pixel_y) "
            "columns swapped or mislabelled? Fix the spot table, or pass `mpp=` if you know the pixel size."
        )
    if len(slopes) == 2 and abs(slopes[0] - slopes[1]) > 0.05 * max(slopes):
        logger.warning(
            f"Spot pitch differs between x ({slopes[0]:.1f} px) and y ({slopes[1]:.1f} px); using the mean. "
            "Pass `mpp=` if you know the scanner's pixel size."
        )
    pitch_px = float(np.mean(slopes))
    return pitch_um / pitch_px, pitch_px


def read_st(
    counts: PathLike | pd.DataFrame,
    spots: PathLike | pd.DataFrame,
    image: PathLike | np.ndarray,
    *,
    dataset_id: str = "st",
    mpp: float | None = None,
    spot_diameter_um: float = C.ST_SPOT_DIAMETER_UM,
    pitch_um: float = C.ST_PITCH_UM,
    selected_only: bool = True,
    downsample: int = 1,
    scale_factors: Sequence[int] | None = None,
    var_names_make_unique: bool = False,
) -> SpatialData:
    """Read a legacy Spatial Transcriptomics section (HER2ST layout) into SpatialData.

    Parameters
    ----------
    counts
        Tab-separated UMI counts, one row per spot and one column per gene; the first column holds
        the spot id ``"{x}x{y}"`` (array coordinates). A DataFrame in that shape is accepted too.
    spots
        Tab-separated spot table with columns ``x, y`` (array coordinates), ``pixel_x, pixel_y``
        (spot centre in full-resolution image pixels, x = column) and optionally ``selected``
        (1 under tissue).
    image
        The full-resolution H&E image the pixel coordinates refer to (JPEG, PNG or TIFF), or a
        ``(y, x, 3)`` uint8 array.
    dataset_id
        Section name. Element names get it as a prefix (``"{dataset_id}_full_image"``,
        ``"{dataset_id}_spots"``) and the coordinate systems are ``dataset_id`` (full-resolution
        pixels) and ``"{dataset_id}_um"`` (microns).
    mpp
        Microns per full-resolution pixel. Default: inferred from the spot grid
        (``pitch_um`` / fitted pitch in pixels), and logged.
    spot_diameter_um
        Physical spot diameter in µm (100 for legacy ST); the circles get radius
        ``spot_diameter_um / 2 / mpp`` pixels.
    pitch_um
        Centre-to-centre distance of neighbouring array positions in µm (200 for legacy ST).
    selected_only
        Keep only spots flagged ``selected == 1`` (under tissue) when the column exists.
    downsample
        Integer factor to box-downsample the image by while reading (shapes stay in full-resolution
        pixels; the image gets a ``Scale(downsample)`` to the pixel system, so they still align).
    scale_factors
        Pyramid factors for the multiscale image. Default: halve until the coarsest level is ≤ 512 px.
    var_names_make_unique
        Suffix duplicated gene names instead of raising an error.

    Returns
    -------
    A SpatialData object with

    - ``images["{dataset_id}_full_image"]``: the H&E as a multiscale ``(c, y, x)`` uint8 image,
    - ``shapes["{dataset_id}_spots"]``: spot circles (full-resolution pixels, true radius), integer index,
    - ``tables["spots"]``: counts (sparse int32 ``X``, spots × genes), ``obs`` with ``array_col``
      (= x), ``array_row`` (= y), ``in_tissue`` and the ``region``/``instance_id`` link to the
      shapes, ``obsm["spatial"]`` = spot centres ``(x, y)`` in pixels, ``uns["stpredict"]`` with
      the pixel size and where it came from.

    Every element has the pixel and the micron coordinate system, so
    :func:`stpredict.pp.get_mpp` works on the image.

    """
    files = {
        name: Path(f)
        for name, f in (("counts", counts), ("spots", spots), ("image", image))
        if not isinstance(f, pd.DataFrame | np.ndarray)
    }
    check_files(files, "read_st", expected=_EXPECTED)
    check_name("dataset_id", dataset_id)
    downsample = check_int("downsample", downsample)
    spot_diameter_um = check_number("spot_diameter_um", spot_diameter_um)
    pitch_um = check_number("pitch_um", pitch_um)
    pixel_cs = dataset_id
    prefix = f"{dataset_id}_"
    count_df = _read_counts(counts, var_names_make_unique)
    spot_df = _read_spots(spots)

    missing = count_df.index.difference(spot_df.index)
    if len(missing):
        raise ValueError(
            f"{len(missing)} of {len(count_df)} spot ids in the counts table have no row in the spot table "
            f"(e.g. {_examples(missing)}; spot table ids look like {_examples(spot_df.index[:3])}). Counts ids must "
            "be '{x}x{y}' with the spot table's array coordinates; check that both files belong to the same section."
        )
    spot_df = spot_df.loc[count_df.index]
    if selected_only and "selected" in spot_df.columns:
        keep = spot_df["selected"].to_numpy() == 1
        if not keep.all():
            logger.info(f"Dropping {int((~keep).sum())} spot(s) not under tissue (selected != 1).")
        spot_df, count_df = spot_df[keep], count_df[keep]
        if len(spot_df) == 0:
            raise ValueError(
                "No spot is under tissue (selected == 1); pass `selected_only=False` to keep them all."
            )

    arr, full_shape = load_rgb(image, downsample=downsample)
    height, width = full_shape
    xy = spot_df[["pixel_x", "pixel_y"]].to_numpy(float)
    outside = (xy[:, 0] < 0) | (xy[:, 0] >= width) | (xy[:, 1] < 0) | (xy[:, 1] >= height)
    if outside.any():
        raise ValueError(
            f"{int(outside.sum())} of {len(xy)} spot centre(s) lie outside the {width} x {height} px image "
            f"(e.g. {_examples(spot_df.index[outside])}). The spot pixel coordinates must refer to the "
            "full-resolution image passed as `image`; check that it is not a downscaled copy or another section."
        )

    if mpp is None:
        mpp, pitch_px = infer_mpp_from_grid(spot_df, pitch_um)
        mpp_source = "spot grid"
        logger.info(
            f"Inferred pixel size {mpp:.4f} µm/px from the spot pitch ({pitch_px:.1f} px = {pitch_um:g} µm); "
            "pass `mpp=` to override."
        )
    else:
        mpp_source = "given"
    mpp = check_mpp_value(mpp, "mpp" if mpp_source == "given" else "pixel size inferred from the spot grid")

    img = parse_rgb_image(
        arr,
        pixel_and_micron_transforms(pixel_cs, mpp=mpp, pixel_scale=downsample),
        scale_factors=scale_factors,
    )
    radius_px = spot_diameter_um / 2.0 / mpp
    n = len(spot_df)
    shapes_key = f"{prefix}{C.SPOTS_KEY}"
    circles = ShapesModel.parse(
        xy,
        geometry=0,
        radius=np.full(n, radius_px),
        index=pd.RangeIndex(n),
        transformations=pixel_and_micron_transforms(pixel_cs, mpp=mpp),
    )

    obs = pd.DataFrame(
        {
            "array_col": spot_df["x"].to_numpy(int),
            "array_row": spot_df["y"].to_numpy(int),
            "in_tissue": (spot_df["selected"].to_numpy(int) if "selected" in spot_df else np.ones(n, int)),
            C.REGION_KEY: pd.Categorical([shapes_key] * n),
            C.INSTANCE_KEY: np.arange(n),
        },
        index=pd.Index(spot_df.index, name="spot_id"),
    )
    X = sparse.csr_matrix(count_df.to_numpy().astype(np.int32))
    adata = ad.AnnData(X=X, obs=obs, var=pd.DataFrame(index=pd.Index(count_df.columns, name="gene")))
    adata.obsm[C.SPATIAL_KEY] = xy
    adata.uns[C.UNS_KEY] = {
        "reader": "read_st",
        "mpp": mpp,
        "mpp_source": mpp_source,
        "spot_diameter_um": float(spot_diameter_um),
        "pitch_um": float(pitch_um),
        "pixel_cs": pixel_cs,
        "micron_cs": micron_cs_name(pixel_cs),
    }
    table = TableModel.parse(adata, region=shapes_key, region_key=C.REGION_KEY, instance_key=C.INSTANCE_KEY)
    logger.info(f"Read {n} spots x {adata.n_vars} genes; image {width} x {height} px at {mpp:.4f} µm/px.")
    return SpatialData(
        images={f"{prefix}full_image": img},
        shapes={shapes_key: circles},
        tables={C.SPOTS_KEY: table},
    )
