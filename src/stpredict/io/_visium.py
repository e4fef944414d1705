"""Visium (55 µm spots) reader: spatialdata-io's reader, the pixel size, true spot radii, micron coordinates."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy import sparse
from spatialdata import SpatialData

from .. import _constants as C
from .._core._files import check_dir, check_hdf5, check_image, corrupt_file_error, ends_mid_line, read_json
from .._core._image import full_resolution
from .._core._mpp import add_micron_cs, micron_cs_name
from .._core._validate import check_mpp_value, check_name, check_number
from .._logging import logger
from ._utils import PathLike, check_files

__all__ = ["read_visium"]

# 10x: ``spot_diameter_fullres`` is "the number of pixels that span the diameter of a theoretical 65µm spot in
# the original, full-resolution image" (Space Ranger 1.3 docs, scalefactors_json.json:
# https://support.10xgenomics.com/spatial-gene-expression/software/pipelines/1.3/output/images) — the 55 µm
# spot plus margin. It is a scale, not the spot size: mpp = 65 µm / spot_diameter_fullres.
SPOT_DIAMETER_FULLRES_UM = 65.0
# Visium array geometry: spots on a hexagonal grid, 100 µm centre to centre. Along a row ``array_col`` steps by
# 2 per spot (one step = 50 µm); rows are 100·√3/2 µm apart and offset by one ``array_col``.
_COL_STEP_UM = C.VISIUM_PITCH_UM / 2
_ROW_STEP_UM = C.VISIUM_PITCH_UM * np.sqrt(3) / 2
_MIN_GRID_SPOTS = 10
_AGREE_REL = 0.05
_SPATIAL = "spatial"
_POSITION_COLUMNS = (
    "barcode",
    "in_tissue",
    "array_row",
    "array_col",
    "pxl_row_in_fullres",
    "pxl_col_in_fullres",
)
#: The fix for a truncated or corrupt file of an ``outs/`` folder.
RECOPY_OUTS = (
    "Copy it again from Space Ranger's `outs/` folder (or download it again): a transfer cut short leaves such "
    "files."
)


def _counts_file(path: Path, counts_file: str) -> Path:
    """``path / counts_file``, or the single ``<library_id>_<counts_file>`` spatialdata-io also accepts."""
    plain = path / counts_file
    if plain.is_file():
        return plain
    prefixed = sorted(path.glob(f"*_{counts_file}"))
    return prefixed[0] if len(prefixed) == 1 else plain


def _positions_file(path: Path, tissue_positions_file: PathLike | None) -> Path:
    if tissue_positions_file is not None:
        return path / tissue_positions_file
    old = path / _SPATIAL / "tissue_positions_list.csv"  # Space Ranger < 2
    return old if old.is_file() else path / _SPATIAL / "tissue_positions.csv"


def _check_positions(path: Path) -> None:
    """A tissue positions CSV that parses into Space Ranger's six columns, its last row complete."""
    import pandas as pd

    what = "The tissue positions file"
    try:
        df = pd.read_csv(path, header=None, dtype=str)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise corrupt_file_error(path, what, exc, fix=RECOPY_OUTS) from exc
    if df.shape[1] != len(_POSITION_COLUMNS):
        raise corrupt_file_error(
            path,
            what,
            f"{df.shape[1]} column(s); Space Ranger writes {len(_POSITION_COLUMNS)}: {', '.join(_POSITION_COLUMNS)}",
            fix=RECOPY_OUTS,
        )
    if len(df) > 1 and ends_mid_line(path) and df.iloc[-1].isna().any() and df.iloc[:-1].notna().all().all():
        raise corrupt_file_error(
            path, what, "its last row is incomplete: the file was cut short", fix=RECOPY_OUTS
        )


def _check_outs_files(path: Path, files: dict[str, Path]) -> None:
    """Find a truncated or corrupt file of the ``outs/`` folder before spatialdata-io reads it."""
    check_hdf5(files["counts"], "The counts matrix", fix=RECOPY_OUTS)
    _check_positions(files["tissue positions"])
    for name in ("tissue_hires_image.png", "tissue_lowres_image.png"):
        if (path / _SPATIAL / name).is_file():
            check_image(path / _SPATIAL / name, "The image", fix=RECOPY_OUTS)
    if "full-resolution image" in files:
        check_image(files["full-resolution image"], "The full-resolution image")


def _rename_spots(sdata: SpatialData, dataset_id: str) -> None:
    """spatialdata-io's ``tables["table"]`` / ``shapes[dataset_id]`` as stpredict's ``"spots"`` / ``"{dataset_id}_spots"``.

    The names of :func:`stpredict.io.read_st` and :func:`stpredict.io.read_hest`, so one ``tables="spots"``
    trains on legacy ST, Visium and HEST sections together.
    """
    from spatialdata.models import TableModel

    shapes_key = f"{dataset_id}_{C.SPOTS_KEY}"
    table = sdata.tables["table"]
    attrs = table.uns["spatialdata_attrs"]
    sdata.shapes[shapes_key] = sdata.shapes[dataset_id]
    del sdata.shapes[dataset_id]
    del sdata.tables["table"]
    table.obs[attrs["region_key"]] = pd.Categorical([shapes_key] * table.n_obs)
    del table.uns["spatialdata_attrs"]
    sdata.tables[C.SPOTS_KEY] = TableModel.parse(
        table, region=shapes_key, region_key=attrs["region_key"], instance_key=attrs["instance_key"]
    )


def _mpp_from_grid(
    array_col: np.ndarray, array_row: np.ndarray, xy: np.ndarray
) -> tuple[float, float, float] | None:
    """Pixel size from the spot array: fit pixel = A·(array_col, array_row) + t by least squares.

    Rotation- and flip-invariant. Returns ``(mpp, row_to_col_ratio, rms_residual_px)`` — mpp from the
    100 µm pitch along a row (``|A[:, col]|`` px per 50 µm); ``row_to_col_ratio`` is the µm per row
    step implied by that mpp over the expected 100·√3/2 µm (1 on a true Visium grid) — or ``None``
    when the spots do not determine the fit.
    """
    n = len(array_col)
    design = np.c_[array_col, array_row, np.ones(n)]
    if n < _MIN_GRID_SPOTS or np.linalg.matrix_rank(design) < 3:
        return None
    coef, *_ = np.linalg.lstsq(design, xy, rcond=None)
    px_per_col, px_per_row = np.linalg.norm(coef[0]), np.linalg.norm(coef[1])
    if px_per_col <= 0 or px_per_row <= 0:
        return None
    mpp = _COL_STEP_UM / px_per_col
    ratio = px_per_row * mpp / _ROW_STEP_UM
    rms = float(np.sqrt(np.mean(np.sum((design @ coef - xy) ** 2, axis=1))))
    return float(mpp), float(ratio), rms


def read_visium(
    path: PathLike,
    *,
    dataset_id: str,
    counts_file: str = "filtered_feature_bc_matrix.h5",
    fullres_image_file: PathLike | None = None,
    mpp: float | None = None,
    spot_diameter_um: float = C.VISIUM_SPOT_DIAMETER_UM,
    **kwargs: Any,
) -> SpatialData:
    """Read a Space Ranger Visium (55 µm spot) ``outs/`` folder with :func:`spatialdata_io.visium`.

    On top of spatialdata-io's reader this

    - derives the pixel size (µm per full-resolution pixel): by default from the spot array — a
      least-squares fit of the spot centres (``pxl_col/row_in_fullres``) against their array
      positions, where neighbouring spots of a row (``array_col`` ± 2) are 100 µm apart. It is
      cross-checked against ``spot_diameter_fullres`` in ``scalefactors_json.json``, which 10x
      defines as the pixels spanning a *theoretical 65 µm* spot (mpp = 65 / ``spot_diameter_fullres``),
      with a warning when the two differ by more than 5%. With fewer than 10 spots, or spots off a
      regular grid, the scale factor alone is used; ``mpp=`` overrides both;
    - **replaces the circles' radius**: spatialdata-io draws them with radius
      ``spot_diameter_fullres / 2`` (a 65 µm disk); stpredict aggregates pixels over the true spot, so
      the radius becomes ``spot_diameter_um / 2 / mpp`` pixels (27.5 µm);
    - stores the counts as sparse int32 and records the pixel size in the table's ``uns["stpredict"]``;
    - adds the micron coordinate system ``"{dataset_id}_um"`` to every element in the pixel system
      ``dataset_id``, so :func:`stpredict.pp.get_mpp` works on the images.

    Parameters
    ----------
    path
        The ``outs/`` folder: ``filtered_feature_bc_matrix.h5``, ``spatial/scalefactors_json.json``,
        ``spatial/tissue_positions.csv`` (``tissue_positions_list.csv`` before Space Ranger 2) and
        usually ``spatial/tissue_hires_image.png`` / ``tissue_lowres_image.png``.
    dataset_id
        Name of the dataset (element names and pixel coordinate system). Required so that element
        names do not depend on file names.
    counts_file
        Counts file in ``path``, e.g. ``"raw_feature_bc_matrix.h5"`` for all spots (a
        ``"<library_id>_"`` prefix is found too).
    fullres_image_file
        The full-resolution H&E given to Space Ranger (TIFF, JPEG, …; relative to ``path`` or
        absolute). ``outs/`` has only downsampled PNGs (typically 2000 px wide, several µm per pixel),
        too coarse for training, so pass the original scan.
    mpp
        Microns per full-resolution pixel, when known from the scanner; overrides the estimate.
    spot_diameter_um
        Physical spot diameter in µm (55 for Visium).
    **kwargs
        Passed to :func:`spatialdata_io.visium` (e.g. ``tissue_positions_file``,
        ``scalefactors_file``, ``image_models_kwargs``).

    Returns
    -------
    spatialdata-io's object, with the spots under the names of :func:`read_st` and :func:`read_hest`:

    - ``images["{dataset_id}_full_image"]`` (with ``fullres_image_file``), ``images["{dataset_id}_hires_image"]``
      and ``images["{dataset_id}_lowres_image"]`` (when the PNGs exist);
    - ``shapes["{dataset_id}_spots"]``: the spot circles in full-resolution pixels, radius 27.5 µm / mpp
      (spatialdata-io's ``shapes["{dataset_id}"]``);
    - ``tables["spots"]``: (spatialdata-io's ``tables["table"]``) counts (sparse int32 ``X``, spots × genes), ``obs`` with ``in_tissue``,
      ``array_row``, ``array_col`` and the ``region`` / ``spot_id`` link to the circles, ``obsm["spatial"]``
      spot centres ``(x, y)`` in pixels, and ``uns["stpredict"]`` with ``mpp``, ``mpp_source``
      (``"spot grid"``, ``"spot_diameter_fullres"`` or ``"given"``), the estimates, ``spot_diameter_um``,
      ``pitch_um``, ``pixel_cs`` and ``micron_cs``.

    Every element is also in the ``"{dataset_id}_um"`` coordinate system. Train on it with
    ``stp.tl.train(sdata, tables="spots")``.

    Raises
    ------
    FileNotFoundError, NotADirectoryError, IsADirectoryError
        When ``path`` does not exist or is a file, or an expected file is missing or a folder (the message
        lists them).
    ValueError
        When a file is truncated or corrupt (the counts matrix, the tissue positions, the scale factors, the
        images; checked before anything is read, without decoding the images), or barcodes of the counts
        matrix have no position.

    """
    path = check_dir(path, "Visium folder", expected="the Space Ranger `outs/` folder of a Visium run")
    check_name("dataset_id", dataset_id)
    spot_diameter_um = check_number("spot_diameter_um", spot_diameter_um)
    if mpp is not None:
        mpp = check_mpp_value(mpp)
    sf_arg = kwargs.get("scalefactors_file")
    files = {
        "counts": _counts_file(path, counts_file),
        "scalefactors": path / sf_arg if sf_arg is not None else path / _SPATIAL / "scalefactors_json.json",
        "tissue positions": _positions_file(path, kwargs.get("tissue_positions_file")),
    }
    if fullres_image_file is not None:
        files["full-resolution image"] = path / fullres_image_file
    check_files(
        files,
        "read_visium",
        "\nPass the Space Ranger `outs/` folder of a Visium run (`counts_file=` names another matrix, "
        "`fullres_image_file=` the H&E given to Space Ranger).",
    )
    scalefactors = read_json(files["scalefactors"], "The scale factors file", fix=RECOPY_OUTS)
    needed = ("spot_diameter_fullres", "tissue_hires_scalef", "tissue_lowres_scalef")
    if not isinstance(scalefactors, dict):
        scalefactors = {}
    bad = [k for k in needed if not isinstance(scalefactors.get(k), int | float) or not scalefactors[k] > 0]
    if bad:
        raise ValueError(
            f"{files['scalefactors']} lacks positive value(s) for {bad}; Space Ranger writes {list(needed)}. "
            "Pass the `scalefactors_json.json` of this run (`scalefactors_file=`, relative to `path`)."
        )
    _check_outs_files(path, files)

    from spatialdata_io import visium  # heavy (imports scanpy): loaded when a Visium folder is read

    sdata = visium(
        path,
        dataset_id=dataset_id,
        counts_file=files["counts"].name,
        fullres_image_file=fullres_image_file,
        **kwargs,
    )
    table = sdata.tables["table"]
    shapes = sdata.shapes[dataset_id]

    # -- pixel size ------------------------------------------------------------------------------
    sdf = float(scalefactors["spot_diameter_fullres"])
    estimates = {"spot_diameter_fullres": SPOT_DIAMETER_FULLRES_UM / sdf}
    xy = np.asarray(table.obsm[_SPATIAL], dtype=float)
    ok = np.isfinite(xy).all(1)
    if not ok.all():
        raise ValueError(
            f"{int((~ok).sum())} of {len(ok)} barcodes of {files['counts'].name} (e.g. "
            f"{', '.join(map(repr, table.obs_names[~ok][:3]))}) have no row in {str(files['tissue positions'])!r}: the "
            f"positions file looks truncated or corrupt, or belongs to another run. {RECOPY_OUTS}"
        )
    grid = _mpp_from_grid(
        table.obs["array_col"].to_numpy(float)[ok], table.obs["array_row"].to_numpy(float)[ok], xy[ok]
    )
    if grid is not None:
        grid_mpp, ratio, rms = grid
        pitch_px = C.VISIUM_PITCH_UM / grid_mpp
        if rms > 0.1 * pitch_px or abs(ratio - 1) > _AGREE_REL:
            logger.warning(
                f"The spot centres of {dataset_id!r} do not lie on a regular Visium array (fit residual {rms:.1f} px "
                f"for a {pitch_px:.1f} px pitch; row spacing {ratio:.3f} x the expected 100·√3/2 µm): the pixel size is "
                "not taken from the spot grid. Pass `mpp=` if you know the scanner's pixel size."
            )
        else:
            estimates["spot grid"] = grid_mpp
    if mpp is not None:
        mpp_source = "given"
    elif "spot grid" in estimates:
        mpp, mpp_source = estimates["spot grid"], "spot grid"
        logger.info(
            f"Pixel size {mpp:.4f} µm/px from the spot pitch ({C.VISIUM_PITCH_UM / mpp:.2f} px = "
            f"{C.VISIUM_PITCH_UM:g} µm over {int(ok.sum())} spots); pass `mpp=` to override."
        )
    else:
        mpp, mpp_source = estimates["spot_diameter_fullres"], "spot_diameter_fullres"
        logger.info(
            f"Pixel size {mpp:.4f} µm/px from spot_diameter_fullres ({sdf:.2f} px = a theoretical "
            f"{SPOT_DIAMETER_FULLRES_UM:g} µm spot): no usable spot pitch (fewer than {_MIN_GRID_SPOTS} spots on a "
            "regular grid). Pass `mpp=` to override."
        )
    mpp = check_mpp_value(mpp, "mpp" if mpp_source == "given" else f"pixel size from the {mpp_source}")
    if len(estimates) == 2:
        a, b = estimates["spot grid"], estimates["spot_diameter_fullres"]
        if abs(a - b) > _AGREE_REL * a:
            logger.warning(
                f"{dataset_id!r}: the spot pitch gives {a:.4f} µm/px but spot_diameter_fullres ({sdf:.2f} px, "
                f"a theoretical {SPOT_DIAMETER_FULLRES_UM:g} µm spot) gives {b:.4f} µm/px ({100 * (b / a - 1):+.1f}%). "
                f"Using {mpp:.4f} µm/px ({mpp_source}); pass `mpp=` if you know the scanner's pixel size."
            )
    if mpp_source == "given":
        for source, value in estimates.items():
            if abs(value - mpp) > _AGREE_REL * mpp:
                logger.info(f"Using the given mpp={mpp:.4f}; the {source} suggests {value:.4f} µm/px.")

    # -- spots at their true size, integer counts, provenance -------------------------------------
    radius_px = spot_diameter_um / 2.0 / mpp
    shapes["radius"] = np.full(len(shapes), radius_px)
    X = sparse.csr_matrix(table.X)
    if X.nnz == 0 or (np.array_equal(X.data, np.round(X.data)) and X.data.max() < 2**31):
        table.X = X.astype(np.int32)
    table.uns[C.UNS_KEY] = {
        "reader": "read_visium",
        "mpp": float(mpp),
        "mpp_source": mpp_source,
        "mpp_estimates": {k: float(v) for k, v in estimates.items()},
        "spot_diameter_um": float(spot_diameter_um),
        "pitch_um": float(C.VISIUM_PITCH_UM),
        "pixel_cs": dataset_id,
        "micron_cs": micron_cs_name(dataset_id),
    }

    full_key = f"{dataset_id}_full_image"
    if full_key in sdata.images:
        H, W = full_resolution(sdata.images[full_key]).shape[-2:]
        outside = (xy[:, 0] < 0) | (xy[:, 0] >= W) | (xy[:, 1] < 0) | (xy[:, 1] >= H)
        if outside.all():
            raise ValueError(
                f"No spot centre of {dataset_id!r} lies on the full-resolution image ({W} x {H} px; centres x "
                f"{np.nanmin(xy[:, 0]):.0f}–{np.nanmax(xy[:, 0]):.0f}, y {np.nanmin(xy[:, 1]):.0f}–{np.nanmax(xy[:, 1]):.0f} "
                "px). `fullres_image_file` must be the image given to Space Ranger, not a downscaled copy or another section."
            )
        if outside.any():
            logger.warning(
                f"{int(outside.sum())} of {len(xy)} spot centres lie off the full-resolution image."
            )
    else:
        hires = f"{dataset_id}_hires_image"
        coarse = f" ({mpp / scalefactors['tissue_hires_scalef']:.2f} µm/px)" if hires in sdata.images else ""
        logger.warning(
            f"No full-resolution image for {dataset_id!r}: only Space Ranger's downsampled PNGs{coarse} were read. "
            "Pass `fullres_image_file=` (the H&E given to Space Ranger) to train or predict at full resolution."
        )
    _rename_spots(sdata, dataset_id)
    um_cs = add_micron_cs(sdata, dataset_id, unit_um=mpp)
    logger.info(
        f"Read Visium {dataset_id!r}: {table.n_obs} spots x {table.n_vars} genes at {mpp:.4f} µm/px ({mpp_source}); "
        f"micron coordinate system {um_cs!r}."
    )
    return sdata
