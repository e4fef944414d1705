"""Pixel sizes (microns per pixel) and micron coordinate systems.

The contract every stpredict function relies on: the pixel size of an image is the scale of
its transformation to a *micron coordinate system*. A micron coordinate system is one named
``"um"`` or ending in ``"_um"``; readers write one next to the pixel system (``"C2"`` and
``"C2_um"``) and :func:`set_mpp` adds one to data from elsewhere. Because the value lives in a
transformation, it is saved with the zarr store and shapes, images and predictions line up by
transformation rather than by convention.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from spatialdata import SpatialData
from spatialdata.transformations import Identity, Scale, Sequence, get_transformation, set_transformation

from .._constants import DEFAULT_PIXEL_CS, MICRON_CS_SUFFIX
from .._logging import logger
from ._validate import check_mpp_value

__all__ = [
    "add_micron_cs",
    "get_mpp",
    "is_micron_cs",
    "micron_cs_name",
    "pixel_and_micron_transforms",
    "set_mpp",
]

_REL_TOL = 1e-3


def is_micron_cs(name: str) -> bool:
    """Whether a coordinate system name marks a micron coordinate system (``"um"`` or ``"*_um"``).

    Parameters
    ----------
    name
        A coordinate system name.

    """
    return name == MICRON_CS_SUFFIX or name.endswith(f"_{MICRON_CS_SUFFIX}")


def micron_cs_name(pixel_cs: str) -> str:
    """Name of the micron coordinate system that belongs to the pixel system ``pixel_cs``.

    ``"global"`` maps to ``"um"``; any other name ``"X"`` maps to ``"X_um"``.

    Parameters
    ----------
    pixel_cs
        Name of a pixel coordinate system.

    """
    return MICRON_CS_SUFFIX if pixel_cs == DEFAULT_PIXEL_CS else f"{pixel_cs}_{MICRON_CS_SUFFIX}"


def _xy_scale(transformation) -> tuple[float, float]:
    """Length of the x and y unit vectors after an affine transformation (rotation-invariant)."""
    matrix = np.asarray(
        transformation.to_affine_matrix(input_axes=("x", "y"), output_axes=("x", "y")), dtype=float
    )
    return float(np.hypot(matrix[0, 0], matrix[1, 0])), float(np.hypot(matrix[0, 1], matrix[1, 1]))


def _isotropic_scale(transformation, what: str) -> float:
    sx, sy = _xy_scale(transformation)
    if sx <= 0 or sy <= 0 or not np.isfinite([sx, sy]).all():
        raise ValueError(f"{what} has a degenerate transformation (x scale {sx}, y scale {sy}).")
    if abs(sx - sy) > _REL_TOL * max(sx, sy):
        raise ValueError(
            f"{what} has anisotropic pixels (x: {sx:.6g}, y: {sy:.6g} per pixel). stpredict needs square "
            "pixels: resample the image so that x and y pixel sizes agree."
        )
    return (sx + sy) / 2


def _get_element(sdata: SpatialData, key: str, kind: str = "images"):
    elements = getattr(sdata, kind)
    if key not in elements:
        available = list(elements.keys())
        raise KeyError(
            f"{kind[:-1].capitalize()} {key!r} not found in the SpatialData object; available {kind}: {available}."
        )
    return elements[key]


def get_mpp(sdata: SpatialData, image_key: str, *, coordinate_system: str | None = None) -> float:
    """Microns per pixel of an image.

    Reads the scale of the image's transformation to a micron coordinate system (``"um"`` or a
    name ending in ``"_um"``), which the stpredict readers and :func:`set_mpp` write. For a
    multiscale image the value refers to its full-resolution level (``scale0``).

    Parameters
    ----------
    sdata
        The SpatialData object.
    image_key
        Name of the image element in ``sdata.images``.
    coordinate_system
        Which micron coordinate system to read when the image has several that disagree.

    Returns
    -------
    The pixel size in µm (e.g. ``0.5`` for a 20x scan, ``0.25`` for 40x).

    Raises
    ------
    KeyError
        If the image does not exist.
    ValueError
        If the pixel size is unknown (no micron coordinate system) or ambiguous; the message says
        how to set it with :func:`stpredict.pp.set_mpp`.

    """
    element = _get_element(sdata, image_key)
    transformations = get_transformation(element, get_all=True)
    if coordinate_system is not None:
        if coordinate_system not in transformations:
            raise ValueError(
                f"Image {image_key!r} has no transformation to coordinate system {coordinate_system!r}; "
                f"it has {sorted(transformations)}."
            )
        candidates = {coordinate_system: transformations[coordinate_system]}
    else:
        candidates = {cs: t for cs, t in transformations.items() if is_micron_cs(cs)}
    if not candidates:
        raise ValueError(
            f"Image {image_key!r} has no known pixel size (microns per pixel): none of its coordinate systems "
            f"{sorted(transformations)} is a micron coordinate system (named 'um' or ending in '_um'). "
            f"Set it once with `stpredict.pp.set_mpp(sdata, {image_key!r}, mpp=...)` using the scanner's "
            "value (about 0.25 for 40x and 0.5 for 20x scans), or read the data with an stpredict reader "
            "(`stpredict.io.read_st`, `stpredict.io.read_visium_hd`), which records it."
        )
    values = {
        cs: _isotropic_scale(t, f"Image {image_key!r} (coordinate system {cs!r})")
        for cs, t in candidates.items()
    }
    first = next(iter(values.values()))
    if any(abs(v - first) > _REL_TOL * first for v in values.values()):
        raise ValueError(
            f"Image {image_key!r} has micron coordinate systems with different pixel sizes {values}; "
            "pass `coordinate_system=` to choose one."
        )
    return first


def set_mpp(
    sdata: SpatialData,
    image_key: str,
    mpp: float,
    *,
    pixel_cs: str | None = None,
    overwrite: bool = False,
) -> str:
    """Record the pixel size of an image by adding a micron coordinate system.

    The micron coordinate system ``micron_cs_name(pixel_cs)`` is the image's pixel coordinate
    system scaled so that one unit is one micron. It is added to the image **and to every other
    element with a transformation to** ``pixel_cs`` (shapes, points, labels, other images), so
    everything that was aligned in pixels stays aligned in microns.

    Parameters
    ----------
    sdata
        The SpatialData object; modified in place.
    image_key
        Name of the image whose full-resolution pixel size is ``mpp``.
    mpp
        Microns per pixel of that image's full-resolution level.
    pixel_cs
        The pixel coordinate system to extend. Default: the image's only non-micron coordinate
        system.
    overwrite
        Replace an existing micron coordinate system with a different pixel size.

    Returns
    -------
    The name of the micron coordinate system (e.g. ``"um"`` or ``"C2_um"``).

    """
    mpp = check_mpp_value(mpp)
    element = _get_element(sdata, image_key)
    transformations = get_transformation(element, get_all=True)
    pixel_systems = [cs for cs in transformations if not is_micron_cs(cs)]
    if pixel_cs is None:
        if len(pixel_systems) != 1:
            raise ValueError(
                f"Image {image_key!r} has pixel coordinate systems {pixel_systems}; pass `pixel_cs=` to choose one."
            )
        pixel_cs = pixel_systems[0]
    elif pixel_cs not in transformations:
        raise ValueError(
            f"Image {image_key!r} has no transformation to {pixel_cs!r}; it has {sorted(transformations)}."
        )
    um_cs = micron_cs_name(pixel_cs)
    # one unit of the pixel cs, in microns
    unit_um = float(mpp) / _isotropic_scale(transformations[pixel_cs], f"Image {image_key!r}")
    if um_cs in transformations and not overwrite:
        existing = get_mpp(sdata, image_key, coordinate_system=um_cs)
        if abs(existing - mpp) <= _REL_TOL * mpp:
            return um_cs
        raise ValueError(
            f"Image {image_key!r} already has pixel size {existing:.6g} µm in {um_cs!r}; "
            f"pass `overwrite=True` to replace it with {mpp:.6g}."
        )
    n = add_micron_cs(sdata, pixel_cs, unit_um=unit_um, return_count=True)
    logger.info(f"Pixel size of {image_key!r} set to {mpp:.4g} µm/px: added {um_cs!r} to {n} element(s).")
    return um_cs


def add_micron_cs(sdata: SpatialData, pixel_cs: str, *, unit_um: float, return_count: bool = False):
    """Add ``micron_cs_name(pixel_cs)`` to every element with a transformation to ``pixel_cs``.

    Parameters
    ----------
    sdata
        Modified in place.
    pixel_cs
        The pixel coordinate system to extend.
    unit_um
        Size of one unit of ``pixel_cs`` in µm (the full-resolution pixel size).
    return_count
        Return the number of elements changed instead of the coordinate system name.

    """
    um_cs = micron_cs_name(pixel_cs)
    scale = Scale([unit_um, unit_um], axes=("x", "y"))
    n = 0
    for _, _, el in sdata.gen_spatial_elements():
        ts = get_transformation(el, get_all=True)
        if pixel_cs in ts:
            set_transformation(el, Sequence([ts[pixel_cs], scale]), to_coordinate_system=um_cs)
            n += 1
    return n if return_count else um_cs


def pixel_and_micron_transforms(pixel_cs: str, *, mpp: float, pixel_scale: float = 1.0) -> dict[str, Any]:
    """Transformations of an element to its pixel system and the matching micron system.

    Parameters
    ----------
    pixel_cs
        Name of the full-resolution pixel coordinate system.
    mpp
        Microns per full-resolution pixel.
    pixel_scale
        Size of one of the element's own units in full-resolution pixels (e.g. 4 for an image
        downsampled 4x).

    """
    to_px = Identity() if pixel_scale == 1 else Scale([pixel_scale, pixel_scale], axes=("x", "y"))
    to_um = Scale([mpp * pixel_scale, mpp * pixel_scale], axes=("x", "y"))
    return {pixel_cs: to_px, micron_cs_name(pixel_cs): to_um}
