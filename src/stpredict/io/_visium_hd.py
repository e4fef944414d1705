"""Visium HD reader: spatialdata-io's reader plus the micron coordinate system."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from spatialdata import SpatialData

from .. import _constants as C
from .._core._mpp import add_micron_cs, micron_cs_name
from .._logging import logger
from ._utils import PathLike

__all__ = ["read_visium_hd"]


def _find_scalefactors(path: Path) -> Path:
    candidates = sorted(path.rglob("scalefactors_json.json"))
    if not candidates:
        raise FileNotFoundError(
            f"No 'scalefactors_json.json' under {path}. Pass the Space Ranger `outs/` folder of a Visium HD run "
            "(it holds spatial/scalefactors_json.json and binned_outputs/square_*um/)."
        )
    return candidates[0]


def read_visium_hd(
    path: PathLike,
    *,
    dataset_id: str,
    bin_size: int | list[int] | None = None,
    fullres_image_file: PathLike | None = None,
    filtered_counts_file: bool = True,
    **kwargs: Any,
) -> SpatialData:
    """Read a Space Ranger Visium HD ``outs/`` folder with :func:`spatialdata_io.visium_hd`.

    On top of spatialdata-io's reader this adds the micron coordinate system ``"{dataset_id}_um"``
    (from ``microns_per_pixel`` in ``scalefactors_json.json``) to every element in the pixel
    system ``dataset_id``, so :func:`stpredict.pp.get_mpp` works on the full-resolution image, and
    records the pixel size in each table's ``uns["stpredict"]``.

    Parameters
    ----------
    path
        The ``outs/`` folder.
    dataset_id
        Name of the dataset (element prefix and pixel coordinate system). Required so that element
        names do not depend on file names.
    bin_size
        Bin size(s) in µm to load (default: all found, e.g. 2, 8, 16).
    fullres_image_file
        Path to the full-resolution H&E when it is not in ``outs/microscope_image/``.
    filtered_counts_file
        Read ``filtered_feature_bc_matrix.h5`` (bins under tissue) rather than the raw matrix.
    **kwargs
        Passed to :func:`spatialdata_io.visium_hd`.

    Returns
    -------
    spatialdata-io's object: ``images["{dataset_id}_full_image"]`` (when present),
    ``shapes["{dataset_id}_square_00Xum"]`` and ``tables["square_00Xum"]``; every element also in
    the ``"{dataset_id}_um"`` coordinate system.

    """
    from spatialdata_io import visium_hd  # heavy (imports scanpy): loaded when a Visium HD folder is read

    path = Path(path)
    if not path.is_dir():
        raise FileNotFoundError(f"Visium HD folder not found: {path}.")
    if not dataset_id:
        raise ValueError("Pass a non-empty `dataset_id` (e.g. the sample name).")
    scalefactors_path = _find_scalefactors(path)
    scalefactors = json.loads(scalefactors_path.read_text())
    if "microns_per_pixel" not in scalefactors:
        raise ValueError(
            f"{scalefactors_path} has no 'microns_per_pixel' (Space Ranger >= 3 writes it). Read the data with "
            "`spatialdata_io.visium_hd` and set the pixel size with `stpredict.pp.set_mpp`."
        )
    mpp = float(scalefactors["microns_per_pixel"])
    kwargs.setdefault("load_segmentations_only", False)
    sdata = visium_hd(
        path,
        dataset_id=dataset_id,
        bin_size=bin_size,
        fullres_image_file=fullres_image_file,
        filtered_counts_file=filtered_counts_file,
        **kwargs,
    )
    um_cs = add_micron_cs(sdata, dataset_id, unit_um=mpp)
    for name, table in sdata.tables.items():
        record = {"reader": "read_visium_hd", "mpp": mpp, "mpp_source": str(scalefactors_path.name)}
        record.update({"pixel_cs": dataset_id, "micron_cs": micron_cs_name(dataset_id)})
        if name.startswith("square_"):
            record["bin_size_um"] = float(name[len("square_") : -2])
        table.uns[C.UNS_KEY] = record
    logger.info(f"Read Visium HD {dataset_id!r} at {mpp:.4f} µm/px; micron coordinate system {um_cs!r}.")
    return sdata
